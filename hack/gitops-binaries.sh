#!/usr/bin/env bash
# Builds the GitOps side of the test bed from Go modules, once, into
#   ${WARDGATE_GITOPS_CACHE:-$HOME/.cache/wardgate/gitops}/bin
# - Flux's source-controller and kustomize-controller (github.com/fluxcd/...), with their
#   CRDs copied from each module's config/crd/bases into ../crds/<component>/;
# - argocd-health (tools/argocd-health in this repository): Argo CD's Lua interpreter,
#   gopher-lua, running deploy/argocd/health.lua the way Argo CD loads health scripts.
# The versions are pinned in wardgate/devcluster/versions.json, with the control plane's.
# Each component leaves a stamp with its version next to its binary, so a second run does
# nothing and a version bump rebuilds only that component. hack/k8s-binaries.sh is the
# model; this script is separate so that each can change without touching the other.
#
# Flux v1.9.6 is the newest release line that builds with Go 1.26 (the toolchain the project
# requires, see hack/k8s-binaries.sh); the v1.10 line declares go 1.27.
#
# The controllers' go.mod files replace their own `api` module by a local path and pin a
# few dependencies with `replace`; `go install module@version` refuses such modules, and a
# dependency's replace directives are ignored. So each is built inside a generated wrapper
# module holding the upstream go.mod and go.sum (the same requirements and replaces) under
# another module name, without the local-path replaces (the required published `api`
# module is the same code), and requiring the upstream module. A dependency version the
# module proxy does not serve is replaced by the nearest one it serves, named per
# component below, and the build log says so.
#
# Usage: hack/gitops-binaries.sh [--print-dir]
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
versions_file="${repo_root}/wardgate/devcluster/versions.json"

script_name=gitops-binaries
# shellcheck source=hack/build-common.sh
source "${repo_root}/hack/build-common.sh"

SOURCE_CONTROLLER_VERSION="$(read_version source-controller)"
KUSTOMIZE_CONTROLLER_VERSION="$(read_version kustomize-controller)"
GOPHER_LUA_VERSION="$(read_version gopher-lua)"

cache_root="${WARDGATE_GITOPS_CACHE:-${HOME}/.cache/wardgate/gitops}"
bin_dir="${cache_root}/bin"
crd_dir="${cache_root}/crds"
src_dir="${cache_root}/src"

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "${cache_root}"
  exit 0
fi

take_build_lock "${cache_root}"

# The argocd-health stamp also covers its source, so that an edit rebuilds it.
tool_dir="${repo_root}/tools/argocd-health"
tool_digest="$(sha256sum < "${tool_dir}/main.go" | cut -c1-12)"
ARGOCD_HEALTH_STAMP="gopher-lua ${GOPHER_LUA_VERSION} source ${tool_digest}"

is_built() { # component version paths...
  local component="$1" version="$2"
  shift 2
  stamp_matches "${component}" "${version}" || return 1
  local p
  for p in "$@"; do [[ -e "${p}" ]] || return 1; done
}

todo=()
is_built argocd-health "${ARGOCD_HEALTH_STAMP}" "${bin_dir}/argocd-health" || todo+=(argocd-health)
is_built source-controller "${SOURCE_CONTROLLER_VERSION}" \
  "${bin_dir}/source-controller" "${crd_dir}/source-controller" || todo+=(source-controller)
is_built kustomize-controller "${KUSTOMIZE_CONTROLLER_VERSION}" \
  "${bin_dir}/kustomize-controller" "${crd_dir}/kustomize-controller" || todo+=(kustomize-controller)
if [[ ${#todo[@]} -eq 0 ]]; then
  echo "GitOps binaries up to date in ${bin_dir}" >&2
  exit 0
fi

GO="${GO:-$(command -v go || true)}"
[[ -n "${GO}" ]] || GO=/usr/local/go/bin/go
[[ -x "${GO}" ]] || die "no Go toolchain at '${GO}' (looked for \$GO, 'go' on PATH, /usr/local/go/bin/go); install Go >= 1.26"
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -modcacherw"

log "building ${todo[*]} into ${bin_dir} with $("${GO}" version)"
mkdir -p "${bin_dir}" "${src_dir}" "${crd_dir}"
build_started=${SECONDS}

# Prints the JSON field `field` of `go mod download -json module@version`.
module_field() { # module@version field
  "${GO}" mod download -json "$1" | python3 -c '
import json, sys
info = json.load(sys.stdin)
if info.get("Error"):
    sys.exit("go mod download: " + info["Error"])
print(info[sys.argv[1]])' "$2"
}

# Writes the wrapper's go.mod: the upstream's own (same requirements, same replaces),
# renamed, without the replaces by a local path, and requiring the upstream module.
wrapper_gomod() { # upstream-go.mod component upstream version
  python3 - "$@" <<'PY'
import re, sys
path, component, upstream, version = sys.argv[1:]
text = open(path).read()

def local(entry: str) -> bool:
    return "=>" in entry and entry.split("=>")[1].strip().startswith(".")

def drop_block(match: re.Match[str]) -> str:
    kept = [line for line in match.group(1).splitlines() if not local(line.split("//")[0])]
    return "replace (\n" + "\n".join(l for l in kept if l.strip()) + "\n)"

text = re.sub(r"^replace\s*\((.*?)^\)", drop_block, text, flags=re.S | re.M)
text = re.sub(r"^replace\s+([^(\n].*)\n", lambda m: "" if local(m.group(1)) else m.group(0),
              text, flags=re.M)
text = re.sub(r"^module\s+\S+", f"module wardgate.invalid/build/{component}", text, flags=re.M)
print(f"// Generated by hack/gitops-binaries.sh from {upstream} {version}'s go.mod.")
print(text)
print(f"require {upstream} {version}")
PY
}

# Whether the module proxy serves module@version's source.
module_served() { "${GO}" mod download "$1" >/dev/null 2>&1; }

# Runs `go build` in `dir` into a temporary directory, counting compiled packages, then
# moves the binaries into bin/.
compile() { # component dir ldflags packages...
  local component="$1" dir="$2" ldflags="$3"
  shift 3
  local tmp_out="${bin_dir}/.tmp-${component}"
  rm -rf "${tmp_out}"
  mkdir -p "${tmp_out}"
  log "[${component}] compiling $* (progress: packages compiled)"
  if ! (cd "${dir}" && "${GO}" build -mod=mod -v -trimpath -ldflags "-s -w ${ldflags}" -o "${tmp_out}/" "$@" 2>&1) |
    awk '/^[^ #]+$/ { n++; if (n % 200 == 0) { printf "    %d packages compiled\n", n; fflush() } next }
         { print; fflush() }
         END { if (n) printf "    %d packages compiled\n", n }' >&2; then
    die "[${component}] go build failed; see the compiler output above"
  fi
  local b
  for b in "${tmp_out}"/*; do mv -f "${b}" "${bin_dir}/"; done
  rmdir "${tmp_out}"
}

build_controller() { # component version module [module fallback-version]...
  local component="$1" version="$2" upstream="$3"
  shift 3
  local started=${SECONDS}
  local mod_dir="${src_dir}/${component}"
  log "[${component} ${version}] resolving modules"
  local gomod module_dir
  gomod="$(module_field "${upstream}@${version}" GoMod)"
  module_dir="$(module_field "${upstream}@${version}" Dir)"
  rm -rf "${mod_dir}"
  mkdir -p "${mod_dir}"
  wrapper_gomod "${gomod}" "${component}" "${upstream}" "${version}" > "${mod_dir}/go.mod"
  cp "${module_dir}/go.sum" "${mod_dir}/go.sum"
  chmod u+w "${mod_dir}/go.sum"
  # A dependency version the module proxy does not serve is replaced by the fallback
  # given here (the nearest release it serves), and the log says so.
  while [[ $# -ge 2 ]]; do
    local dependency="$1" fallback="$2"
    shift 2
    local required
    required="$(cd "${mod_dir}" && "${GO}" list -mod=mod -m -f '{{.Version}}' "${dependency}")"
    if ! module_served "${dependency}@${required}"; then
      log "[${component}] ${dependency}@${required} is not served; using ${fallback}"
      echo "replace ${dependency} => ${dependency} ${fallback}" >> "${mod_dir}/go.mod"
    fi
  done
  compile "${component}" "${mod_dir}" "" "${upstream}"
  # The CRDs of the same release, as its config/crd/bases holds them.
  rm -rf "${crd_dir}/${component}"
  mkdir -p "${crd_dir}/${component}"
  cp "${module_dir}"/config/crd/bases/*.yaml "${crd_dir}/${component}/"
  chmod -R u+w "${crd_dir}/${component}"
  echo "${version}" > "${bin_dir}/.${component}.version"
  log "[${component} ${version}] done in $((SECONDS - started)) s"
}

build_argocd_health() {
  local started=${SECONDS}
  local mod_dir="${src_dir}/argocd-health"
  rm -rf "${mod_dir}"
  mkdir -p "${mod_dir}"
  cp "${tool_dir}/main.go" "${mod_dir}/"
  {
    echo "// Generated by hack/gitops-binaries.sh from tools/argocd-health."
    echo "module wardgate.invalid/tools/argocd-health"
    echo
    echo "go 1.22"
    echo
    echo "require github.com/yuin/gopher-lua ${GOPHER_LUA_VERSION}"
  } > "${mod_dir}/go.mod"
  (cd "${mod_dir}" && "${GO}" mod tidy) || die "[argocd-health] go mod tidy failed in ${mod_dir}"
  compile argocd-health "${mod_dir}" "" .
  echo "${ARGOCD_HEALTH_STAMP}" > "${bin_dir}/.argocd-health.version"
  log "[argocd-health] done in $((SECONDS - started)) s"
}

for component in "${todo[@]}"; do
  case "${component}" in
    argocd-health) build_argocd_health ;;
    source-controller)
      build_controller source-controller "${SOURCE_CONTROLLER_VERSION}" \
        github.com/fluxcd/source-controller github.com/fluxcd/pkg/artifact v0.18.0
      ;;
    kustomize-controller)
      build_controller kustomize-controller "${KUSTOMIZE_CONTROLLER_VERSION}" \
        github.com/fluxcd/kustomize-controller
      ;;
  esac
done

log "GitOps binaries built in $((SECONDS - build_started)) s into ${bin_dir}"
