#!/usr/bin/env bash
# Builds the project's container image without Docker and without a registry, once per
# content of its inputs, into ${WARDGATE_IMAGE_CACHE:-$HOME/.cache/wardgate/image}:
#
#   python-base-<hash>.tar  a Debian bookworm root file system with python3 (mmdebstrap)
#   wardgate-<hash>.tar     the project's Dockerfile built on that base (podman), saved as
#                           an image archive that containerd imports (`ctr images import`),
#                           named localhost/wardgate:<hash> and the chart's default image
#   pause-<version>.tar     Kubernetes' pause container (build/pause from the Kubernetes
#                           source, compiled statically), the local node's sandbox image
#
# The wardgate image is tagged localhost/wardgate:<hash>, <hash> being a digest of the
# build context (what .dockerignore lets through) and the base, so a warm run only checks
# the digest. Podman runs with runc (crun refuses hybrid cgroup layouts), the host's
# network for pip (no bridge, no firewall rule on the host) and the host's CA bundle
# mounted read-only.
#
# Usage: hack/build-image.sh            build what is missing; print the archives' paths
#        hack/build-image.sh --print     print the paths without building (may not exist)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${WARDGATE_IMAGE_CACHE:-${HOME}/.cache/wardgate/image}"
mkdir -p "${cache}"
log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build-image: ERROR: %s\n' "$*" >&2; exit 1; }

# The base's recipe: changing a line here changes its digest and rebuilds it.
base_recipe=(mmdebstrap --variant=essential --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --include=python3,python3-venv,passwd,ca-certificates
  "--dpkgopt=path-exclude=/usr/share/doc/*" "--dpkgopt=path-exclude=/usr/share/man/*"
  "--dpkgopt=path-exclude=/usr/share/info/*" "--dpkgopt=path-exclude=/usr/share/locale/*"
  bookworm)
base_hash="$(printf '%s\n' "${base_recipe[@]}" | sha256sum | cut -c1-16)"
base_tar="${cache}/python-base-${base_hash}.tar"
base_ref="localhost/wardgate-python-base:${base_hash}"

# The digest of the build context: every file under the repository that .dockerignore
# does not exclude (its patterns are top-level names and a few globs), plus the base.
context_hash="$(cd "${repo_root}" && python3 - "${base_hash}" <<'PY'
import fnmatch, hashlib, os, sys
patterns = [l.strip() for l in open(".dockerignore") if l.strip() and not l.startswith("#")]
def ignored(rel):
    parts = rel.split("/")
    for p in patterns:
        if p.startswith("**/"):
            if any(fnmatch.fnmatch(part, p[3:]) for part in parts):
                return True
        elif fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(parts[0], p):
            return True
    return False
digest = hashlib.sha256(sys.argv[1].encode())
for top, dirs, files in os.walk("."):
    dirs[:] = sorted(d for d in dirs if not ignored(os.path.relpath(os.path.join(top, d))))
    for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(top, d))]):
        rel = os.path.relpath(os.path.join(top, name))
        if ignored(rel):
            continue
        path = os.path.join(top, name)
        digest.update(rel.encode() + b"\0")
        if os.path.islink(path):
            digest.update(b"link:" + os.readlink(path).encode())
        else:
            with open(path, "rb") as f:
                digest.update(f.read())
        digest.update(b"\0")
print(digest.hexdigest()[:16])
PY
)"
image_ref="localhost/wardgate:${context_hash}"
# The name the chart (and examples/seed) use by default, so that the README's commands
# run this image on the local cluster: values.yaml's repository, Chart.yaml's appVersion.
chart_dir="${repo_root}/deploy/helm/wardgate"
chart_ref="$(awk '/^image:/ { i = 1 } i && /^  repository:/ { print $2; exit }' "${chart_dir}/values.yaml"):$(
  awk -F'"' '/^appVersion:/ { print $2 }' "${chart_dir}/Chart.yaml")"
[[ "${chart_ref}" =~ ^[^:]+:[^:]+$ ]] || die "cannot read the chart's default image (got '${chart_ref}')"
image_tar="${cache}/wardgate-${context_hash}.tar"

pause_version="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pause"])' \
  "${repo_root}/wardgate/devcluster/versions.json")"
kubernetes_version="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["kubernetes"])' \
  "${repo_root}/wardgate/devcluster/versions.json")"
pause_ref="localhost/wardgate-pause:${pause_version}"
pause_tar="${cache}/pause-${pause_version}.tar"

print_paths() {
  printf 'image=%s\nchart_image=%s\nimage_archive=%s\npause=%s\npause_archive=%s\ncontainers_conf=%s\n' \
    "${image_ref}" "${chart_ref}" "${image_tar}" "${pause_ref}" "${pause_tar}" "${cache}/containers.conf"
}
if [[ "${1:-}" == "--print" ]]; then
  print_paths
  exit 0
fi
if [[ -f "${image_tar}" && -f "${pause_tar}" && -f "${cache}/containers.conf" ]]; then
  # A build from another checkout removes older wardgate images from podman's storage
  # (see below): the archive still has this one, so load it back for `podman run`.
  if ! CONTAINERS_CONF="${cache}/containers.conf" podman image exists "${image_ref}"; then
    CONTAINERS_CONF="${cache}/containers.conf" podman load --quiet --input "${image_tar}" > /dev/null
  fi
  log "image up to date: ${image_ref} (${image_tar})"
  print_paths
  exit 0
fi

# One build at a time on this machine (parallel checkouts share the cache and podman's
# storage); the second waits, then finds the archives there.
exec 9> "${cache}/.lock"
flock 9

# Podman's settings for these builds only: runc, cgroupfs, file events, and ulimits
# below the hard limits (raising them is not permitted in every sandbox, and runc fails
# to set some at the hard limit itself).
limit() { local hard; hard="$(ulimit -H "$1")"; [[ "${hard}" == unlimited || "${hard}" -gt 16384 ]] && hard=16384; echo "${hard}"; }
conf="${cache}/containers.conf"
cat > "${conf}.tmp" <<CONF
[containers]
default_ulimits = ["nofile=$(limit -n):$(limit -n)", "nproc=$(limit -u):$(limit -u)"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
mv -f "${conf}.tmp" "${conf}"
export CONTAINERS_CONF="${conf}"
podman() { command podman --runtime=runc --cgroup-manager=cgroupfs "$@"; }

if ! podman image exists "${base_ref}"; then
  if [[ ! -f "${base_tar}" ]]; then
    log "building the Python base (Debian bookworm) with mmdebstrap"
    started=${SECONDS}
    # mmdebstrap picks its output format from the name's ending: keep `.tar` last.
    "${base_recipe[@]}" "${base_tar%.tar}.tmp.tar" 2> "${cache}/mmdebstrap.log" ||
      die "mmdebstrap failed; see ${cache}/mmdebstrap.log"
    mv -f "${base_tar%.tar}.tmp.tar" "${base_tar}"
    log "base built in $((SECONDS - started)) s"
  fi
  podman import --quiet "${base_tar}" "${base_ref}" > /dev/null
fi

if [[ ! -f "${image_tar}" ]]; then
  log "building ${image_ref} from ${repo_root}"
  started=${SECONDS}
  ca_bundle=/etc/ssl/certs/ca-certificates.crt
  ca_mount=()
  [[ -f "${ca_bundle}" ]] && ca_mount=(--volume "${ca_bundle}:${ca_bundle}:ro")
  podman build --quiet --network=host --layers "${ca_mount[@]}" \
    --build-arg "PYTHON_IMAGE=${base_ref}" --tag "${image_ref}" "${repo_root}" > /dev/null
  podman tag "${image_ref}" "${chart_ref}"
  # One archive, both names: containerd imports each of them.
  podman save --quiet --multi-image-archive --format docker-archive \
    --output "${image_tar}.tmp" "${image_ref}" "${chart_ref}"
  mv -f "${image_tar}.tmp" "${image_tar}"
  size="$(podman image inspect --format '{{.Size}}' "${image_ref}")"
  log "image built in $((SECONDS - started)) s: ${image_ref}, $((size / 1048576)) MiB"
  # Older wardgate images and their archives are of no further use.
  for old in $(podman images --format '{{.Repository}}:{{.Tag}}' localhost/wardgate); do
    [[ "${old}" == "${image_ref}" ]] || podman rmi --force "${old}" > /dev/null 2>&1 || true
  done
  find "${cache}" -maxdepth 1 -name 'wardgate-*.tar' ! -path "${image_tar}" -mmin +60 -delete
fi

if [[ ! -f "${pause_tar}" ]]; then
  GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
  log "building the pause image ${pause_ref} from k8s.io/kubernetes ${kubernetes_version}"
  source_dir="$(GOFLAGS=-modcacherw "${GO}" mod download -json "k8s.io/kubernetes@${kubernetes_version}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  work="$(mktemp -d)"
  trap 'rm -rf "${work}"' EXIT
  gcc -Os -static -Wall -Werror -DVERSION="v${pause_version}-wardgate" \
    -o "${work}/pause" "${source_dir}/build/pause/linux/pause.c"
  strip "${work}/pause"
  cat > "${work}/Containerfile" <<'CF'
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
CF
  podman build --quiet --network=none --tag "${pause_ref}" "${work}" > /dev/null
  podman save --quiet --format docker-archive --output "${pause_tar}.tmp" "${pause_ref}"
  mv -f "${pause_tar}.tmp" "${pause_tar}"
fi
print_paths
