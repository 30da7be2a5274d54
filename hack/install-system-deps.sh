#!/usr/bin/env bash
# Debian packages the tests and benchmarks use (git: its http-backend serves the GitOps
# tests' repository; chromium and chromium-driver: the CORS browser test). Idempotent:
# installs only what is missing.
set -euo pipefail
packages=(openssl curl jq wrk nginx haproxy git chromium chromium-driver)
# The local cluster's real node: container runtime, pod network, kube-proxy's tools.
packages+=(containerd runc containernetworking-plugins iptables conntrack iproute2 util-linux)
# The image: a Debian base (mmdebstrap), the Dockerfile (podman), the pause binary (gcc).
packages+=(mmdebstrap podman gcc libc6-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  # Wait for another install (a parallel checkout, unattended upgrades) instead of failing.
  $SUDO apt-get -o DPkg::Lock::Timeout=900 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -qq "${missing[@]}"
fi
