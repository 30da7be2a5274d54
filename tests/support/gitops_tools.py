"""Where `hack/gitops-binaries.sh` puts what it builds: Flux's controllers (with their
CRDs) and argocd-health, each checked against the version stamp the script leaves."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
VERSIONS: Final = ROOT / "wardgate" / "devcluster" / "versions.json"
ARGOCD_HEALTH_SOURCE: Final = ROOT / "tools" / "argocd-health" / "main.go"


class GitOpsBinariesMissingError(RuntimeError):
    """A pinned GitOps binary is not built; `make gitops` builds them."""


def cache_root() -> Path:
    """`$WARDGATE_GITOPS_CACHE` or `~/.cache/wardgate/gitops`, as the build script uses."""
    configured = os.environ.get("WARDGATE_GITOPS_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "wardgate" / "gitops"


def pinned_versions() -> dict[str, str]:
    versions: dict[str, str] = json.loads(VERSIONS.read_text())
    return versions


def _stamp(component: str) -> str:
    versions = pinned_versions()
    if component == "argocd-health":
        # The script stamps the tool with gopher-lua's version and its source's digest.
        digest = hashlib.sha256(ARGOCD_HEALTH_SOURCE.read_bytes()).hexdigest()[:12]
        return f"gopher-lua {versions['gopher-lua']} source {digest}"
    return versions[component]


def find_binary(component: str) -> Path:
    """The built binary of `component`, checked against its version stamp."""
    bin_dir = cache_root() / "bin"
    wanted = _stamp(component)
    stamp_file = bin_dir / f".{component}.version"
    built = stamp_file.read_text().strip() if stamp_file.is_file() else None
    binary = bin_dir / component
    if built != wanted or not os.access(binary, os.X_OK):
        raise GitOpsBinariesMissingError(
            f"{component} ({wanted}) is not built in {bin_dir} (found {built or 'nothing'}); "
            "build it with `make gitops` (hack/gitops-binaries.sh)"
        )
    return binary
