"""Where the control plane's binaries are, as built by `hack/k8s-binaries.sh`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

# Component → the binaries it provides; its stamp file `.<component>.version` in the
# binary directory names the version it was built from.
COMPONENTS: dict[str, tuple[str, ...]] = {
    "kubernetes": ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"),
    "etcd": ("etcd",),
    "kwok": ("kwok",),
    "helm": ("helm",),
    # The real node's agents, from the same module and version as the control plane.
    "kubernetes-node": ("kubelet", "kube-proxy"),
    "coredns": ("coredns",),
}


class BinariesMissingError(RuntimeError):
    """The pinned binaries are not built; `make k8s` builds them."""


@dataclass(frozen=True)
class Versions:
    """The pinned versions, read from `versions.json` (the only place they are set)."""

    kubernetes: str
    etcd: str
    kwok: str
    helm: str
    coredns: str

    def of(self, component: str) -> str:
        """The version of one component by its name in `COMPONENTS`."""
        if component == "kubernetes-node":
            return self.kubernetes
        version: str = getattr(self, component)
        return version


def load_versions() -> Versions:
    """Read the pinned versions shipped with this package."""
    text = resources.files("wardgate.devcluster").joinpath("versions.json").read_text()
    data = json.loads(text)
    return Versions(
        kubernetes=data["kubernetes"],
        etcd=data["etcd"],
        kwok=data["kwok"],
        helm=data["helm"],
        coredns=data["coredns"],
    )


def cache_root() -> Path:
    """The build cache, `$WARDGATE_K8S_CACHE` or `~/.cache/wardgate/k8s`."""
    configured = os.environ.get("WARDGATE_K8S_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "wardgate" / "k8s"


def default_bin_dir(versions: Versions | None = None) -> Path:
    """The directory the build script fills for the pinned Kubernetes version."""
    versions = versions or load_versions()
    return cache_root() / versions.kubernetes / "bin"


def find_bin_dir(versions: Versions | None = None) -> Path:
    """The binary directory, after checking that every binary is there at its pinned version.

    Raises `BinariesMissingError` naming what is missing.
    """
    versions = versions or load_versions()
    bin_dir = default_bin_dir(versions)
    problems: list[str] = []
    for component, names in COMPONENTS.items():
        stamp = bin_dir / f".{component}.version"
        wanted = versions.of(component)
        built = stamp.read_text().strip() if stamp.is_file() else None
        if built != wanted:
            problems.append(f"{component} {wanted} (found {built or 'nothing'})")
            continue
        problems.extend(
            f"{component}: {name}" for name in names if not os.access(bin_dir / name, os.X_OK)
        )
    if problems:
        raise BinariesMissingError(
            f"control-plane binaries missing in {bin_dir}: {', '.join(problems)}; "
            "build them with `make k8s` (hack/k8s-binaries.sh)"
        )
    return bin_dir
