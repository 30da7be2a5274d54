#!/usr/bin/env bash
# Builds the local control plane's binaries from Go modules, once, into
#   ${WARDGATE_K8S_CACHE:-$HOME/.cache/wardgate/k8s}/<kubernetes version>/bin
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl (k8s.io/kubernetes),
# etcd (go.etcd.io/etcd/server/v3), kwok (sigs.k8s.io/kwok) and helm (helm.sh/helm/v4);
# for the local node: kubelet and kube-proxy (k8s.io/kubernetes, a component of their own)
# and CoreDNS (github.com/coredns/coredns).
# The versions are pinned in wardgate/devcluster/versions.json, which the Python side
# reads too. Each component leaves a stamp with its version next to its binaries, so a
# second run does nothing and a version bump rebuilds only that component.
#
# `go install module/cmd@version` refuses k8s.io/kubernetes and etcd's server module
# because their go.mod files carry `replace` directives pointing into their own source
# trees. So each component is built inside a small generated wrapper module that
# requires the upstream module and replaces each of those local paths by the published
# module of the matching version.
#
# Usage: hack/k8s-binaries.sh [--print-bin-dir]
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
versions_file="${repo_root}/wardgate/devcluster/versions.json"

script_name=k8s-binaries
# shellcheck source=hack/build-common.sh
source "${repo_root}/hack/build-common.sh"

KUBERNETES_VERSION="$(read_version kubernetes)"
ETCD_VERSION="$(read_version etcd)"
KWOK_VERSION="$(read_version kwok)"
HELM_VERSION="$(read_version helm)"
COREDNS_VERSION="$(read_version coredns)"

cache_root="${WARDGATE_K8S_CACHE:-${HOME}/.cache/wardgate/k8s}"
version_dir="${cache_root}/${KUBERNETES_VERSION}"
bin_dir="${version_dir}/bin"
src_dir="${version_dir}/src"

if [[ "${1:-}" == "--print-bin-dir" ]]; then
  echo "${bin_dir}"
  exit 0
fi

take_build_lock "${cache_root}"

# A component is done when its stamp names the pinned version and its binaries exist.
is_built() { # component version binaries...
  local component="$1" version="$2"
  shift 2
  stamp_matches "${component}" "${version}" || return 1
  local b
  for b in "$@"; do [[ -x "${bin_dir}/${b}" ]] || return 1; done
}

k8s_bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
todo=()
# Smallest first, so that a broken toolchain or proxy shows up within a minute.
is_built etcd "${ETCD_VERSION}" etcd || todo+=(etcd)
is_built kwok "${KWOK_VERSION}" kwok || todo+=(kwok)
is_built kubernetes "${KUBERNETES_VERSION}" "${k8s_bins[@]}" || todo+=(kubernetes)
is_built helm "${HELM_VERSION}" helm || todo+=(helm)
is_built kubernetes-node "${KUBERNETES_VERSION}" kubelet kube-proxy || todo+=(kubernetes-node)
is_built coredns "${COREDNS_VERSION}" coredns || todo+=(coredns)
if [[ ${#todo[@]} -eq 0 ]]; then
  echo "Kubernetes binaries up to date in ${bin_dir}" >&2
  exit 0
fi

GO="${GO:-$(command -v go || true)}"
[[ -n "${GO}" ]] || GO=/usr/local/go/bin/go
[[ -x "${GO}" ]] || die "no Go toolchain at '${GO}' (looked for \$GO, 'go' on PATH, /usr/local/go/bin/go); install Go >= 1.26"
export CGO_ENABLED=0
# A fresh module cache is read-only by default; keep it deletable with `rm -rf`.
export GOFLAGS="${GOFLAGS:-} -modcacherw"

log "building ${todo[*]} into ${bin_dir} with $("${GO}" version)"
log "a cold build compiles a few thousand packages and takes a long while on few cores"
mkdir -p "${bin_dir}" "${src_dir}"
build_started=${SECONDS}

# Prints the go.mod path of module@version after downloading it.
module_gomod() {
  "${GO}" mod download -json "$1" | python3 -c '
import json, sys
info = json.load(sys.stdin)
if info.get("Error"):
    sys.exit("go mod download: " + info["Error"])
print(info["GoMod"])'
}

# Prints the release time of module@version, used as a reproducible build date.
module_time() {
  "${GO}" list -m -json "$1" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Time"])'
}

# Prints `replace` lines for the wrapper: each upstream replace whose target is a local
# path becomes a replace by the published module at the given version.
wrapper_replaces() { # upstream-go.mod version
  python3 - "$1" "$2" <<'PY'
import re, sys
path, version = sys.argv[1], sys.argv[2]
text = open(path).read()
lines = []
for block in re.findall(r"^replace\s*\((.*?)^\)", text, re.S | re.M):
    lines.extend(block.splitlines())
lines.extend(m.group(1) for m in re.finditer(r"^replace\s+([^(\n].*)$", text, re.M))
for line in lines:
    m = re.match(r"\s*(\S+)(?:\s+\S+)?\s*=>\s*(\S+)\s*$", line.split("//")[0])
    if not m:
        continue
    module, target = m.groups()
    # Local path targets only; etcd's guards against forbidden imports are dropped.
    if target.startswith(".") and "FORBIDDEN" not in target:
        print(f"replace {module} => {module} {version}")
PY
}

# Writes a wrapper module and builds the given packages into a temporary directory.
# Binaries are moved into bin/ only after the whole build succeeded, then stamped.
build_component() { # component version upstream-module replace-version ldflags out-name|- packages...
  local component="$1" version="$2" upstream="$3" replace_version="$4" ldflags="$5" out_name="$6"
  shift 6
  local started=${SECONDS}
  local mod_dir="${src_dir}/${component}"
  log "[${component} ${version}] resolving modules"
  local gomod
  gomod="$(module_gomod "${upstream}@${version}")"
  local go_directive
  go_directive="$(awk '$1 == "go" { print $2; exit }' "${gomod}")"
  rm -rf "${mod_dir}"
  mkdir -p "${mod_dir}"
  {
    echo "// Generated by hack/k8s-binaries.sh: builds ${upstream} ${version}."
    echo "module wardgate.invalid/build/${component}"
    echo
    echo "go ${go_directive}"
    echo
    echo "require ${upstream} ${version}"
    echo
    wrapper_replaces "${gomod}" "${replace_version}"
    echo
    local p
    for p in "$@"; do echo "tool ${p}"; done
  } > "${mod_dir}/go.mod"
  (cd "${mod_dir}" && "${GO}" mod tidy) || die "[${component}] go mod tidy failed in ${mod_dir}"

  local tmp_out="${bin_dir}/.tmp-${component}"
  rm -rf "${tmp_out}"
  mkdir -p "${tmp_out}"
  local out="${tmp_out}/"
  [[ "${out_name}" == "-" ]] || out="${tmp_out}/${out_name}"
  log "[${component} ${version}] compiling $* (progress: packages compiled)"
  # `go build -v` names each package as it compiles it; count those and pass every
  # other line (compiler errors) through untouched.
  if ! (cd "${mod_dir}" && "${GO}" build -v -trimpath -ldflags "-s -w ${ldflags}" -o "${out}" "$@" 2>&1) |
    awk '/^[^ #]+$/ { n++; if (n % 200 == 0) { printf "    %d packages compiled\n", n; fflush() } next }
         { print; fflush() }
         END { if (n) printf "    %d packages compiled\n", n }' >&2; then
    die "[${component} ${version}] go build failed; see the compiler output above"
  fi
  local b
  for b in "${tmp_out}"/*; do mv -f "${b}" "${bin_dir}/"; done
  rmdir "${tmp_out}"
  echo "${version}" > "${bin_dir}/.${component}.version"
  log "[${component} ${version}] done in $((SECONDS - started)) s"
}

# The node's agents report their release like the control plane's (see `kubernetes`).
kubernetes_ldflags() {
  local minor="${KUBERNETES_VERSION#v*.}" major="${KUBERNETES_VERSION#v}" build_date flags="" pkg
  minor="${minor%%.*}"
  major="${major%%.*}"
  build_date="$(module_time "k8s.io/kubernetes@${KUBERNETES_VERSION}")"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X ${pkg}.gitVersion=${KUBERNETES_VERSION}"
    flags+=" -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
    flags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
  done
  echo "${flags}"
}

for component in "${todo[@]}"; do
  case "${component}" in
    kubernetes)
      # The same version variables that Kubernetes' own hack/lib/version.sh sets, so
      # that /version reports the release (Helm's kubeVersion checks read it).
      minor="${KUBERNETES_VERSION#v*.}"
      minor="${minor%%.*}"
      major="${KUBERNETES_VERSION#v}"
      major="${major%%.*}"
      build_date="$(module_time "k8s.io/kubernetes@${KUBERNETES_VERSION}")"
      k8s_ldflags=""
      for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        k8s_ldflags+=" -X ${pkg}.gitVersion=${KUBERNETES_VERSION}"
        k8s_ldflags+=" -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
        k8s_ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
      done
      # Staging modules are published as v0.<minor>.<patch> for release v1.<minor>.<patch>.
      build_component kubernetes "${KUBERNETES_VERSION}" k8s.io/kubernetes \
        "v0.${KUBERNETES_VERSION#v*.}" "${k8s_ldflags}" - \
        k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler \
        k8s.io/kubernetes/cmd/kubectl
      ;;
    kubernetes-node)
      # The local node's agents: the same module and flags as the control plane's, a
      # stamp of their own so that adding them does not rebuild the others.
      build_component kubernetes-node "${KUBERNETES_VERSION}" k8s.io/kubernetes \
        "v0.${KUBERNETES_VERSION#v*.}" "$(kubernetes_ldflags)" - \
        k8s.io/kubernetes/cmd/kubelet \
        k8s.io/kubernetes/cmd/kube-proxy
      ;;
    coredns)
      build_component coredns "${COREDNS_VERSION}" github.com/coredns/coredns \
        "${COREDNS_VERSION}" "" coredns github.com/coredns/coredns
      ;;
    etcd)
      # etcd's version is a constant in its api module; nothing to inject.
      build_component etcd "${ETCD_VERSION}" go.etcd.io/etcd/server/v3 \
        "${ETCD_VERSION}" "" etcd go.etcd.io/etcd/server/v3
      ;;
    kwok)
      build_component kwok "${KWOK_VERSION}" sigs.k8s.io/kwok "${KWOK_VERSION}" \
        "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}" - sigs.k8s.io/kwok/cmd/kwok
      ;;
    helm)
      build_component helm "${HELM_VERSION}" helm.sh/helm/v4 "${HELM_VERSION}" \
        "-X helm.sh/helm/v4/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
        - helm.sh/helm/v4/cmd/helm
      ;;
  esac
done

log "all binaries built in $((SECONDS - build_started)) s into ${bin_dir}"
