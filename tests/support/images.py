"""The container image the local cluster's pods run, as `hack/build-image.sh` builds it
(once per content of the build context; a warm call only checks a digest)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class BuiltImage:
    """The project's image and the node's pause image: references and archives."""

    ref: str
    archive: Path
    pause_ref: str
    pause_archive: Path
    containers_conf: Path

    def podman(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run `podman ARGS` with the build's settings (runc, cgroupfs, ulimits)."""
        return subprocess.run(
            ["podman", *args],
            env={**os.environ, "CONTAINERS_CONF": str(self.containers_conf)},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def build_image() -> BuiltImage:
    """Build the images unless up to date; raise with the script's output if it fails."""
    result = subprocess.run(
        ["bash", str(ROOT / "hack" / "build-image.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"hack/build-image.sh failed:\n{result.stdout}\n{result.stderr}")
    values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return BuiltImage(
        ref=values["image"],
        archive=Path(values["image_archive"]),
        pause_ref=values["pause"],
        pause_archive=Path(values["pause_archive"]),
        containers_conf=Path(values["containers_conf"]),
    )
