# Shared by the scripts that build tools from Go modules into a cache (k8s-binaries.sh,
# gitops-binaries.sh). Sourced after setting `script_name` and `versions_file`.

log() { printf '==> %s\n' "$*" >&2; }
reported=""
die() { printf '%s: ERROR: %s\n' "${script_name}" "$*" >&2; reported=1; exit 1; }
# Any other failure (set -e) still ends with a line that says so.
trap 'rc=$?; [[ ${rc} -eq 0 || -n "${reported}" ]] ||
  printf "%s: ERROR: build failed (exit %s); see the output above\n" "${script_name}" "${rc}" >&2' EXIT

read_version() {
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
    "${versions_file}" "$1" || die "cannot read '$1' from ${versions_file}"
}

# One build at a time per cache: two checkouts building together would race on the
# temporary folders; the second waits and then finds everything built.
take_build_lock() { # cache_root
  mkdir -p "$1"
  exec {lock_fd}>"$1/.build.lock"
  flock "${lock_fd}"
}

# Whether a component's stamp in `bin_dir` names `version`.
stamp_matches() { # component version
  [[ -f "${bin_dir}/.$1.version" && "$(cat "${bin_dir}/.$1.version")" == "$2" ]]
}
