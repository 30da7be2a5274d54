"""The wheel holds every package the `wardgate` command imports.

The image installs the project from its wheel, so a package missing from the wheel is a
command that fails in every container (as `wardgate.demo` once did). The wheel is built
from a copy of the whole build context, installed without the source tree on the path,
and every subcommand's `--help` is run from it: each subcommand imports its module.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What the image's .dockerignore leaves out of the build context as well.
NOT_CONTEXT = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", "tests", ".pytest_cache"
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the wheel's content installed (no dependencies, no scripts)."""
    work = tmp_path_factory.mktemp("wheel")
    context = work / "context"
    shutil.copytree(ROOT, context, symlinks=True, ignore=NOT_CONTEXT)
    wheels = work / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), "."],
        cwd=context,
        check=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("wardgate-*.whl")
    target = work / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def _run_installed(target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # -S: no site processing, so the editable install of the source tree (a .pth finder
    # in the development venv) is not on the path; the dependencies' site-packages is.
    dependencies = sysconfig.get_paths()["purelib"]
    return subprocess.run(
        [sys.executable, "-S", "-m", "wardgate", *args],
        env={"PYTHONPATH": f"{target}:{dependencies}", "PATH": "/usr/bin:/bin"},
        cwd=target.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _subcommands(help_text: str) -> list[str]:
    if "positional arguments:" not in help_text:
        return []
    listing = help_text.split("positional arguments:", 1)[1].split("options:", 1)[0]
    return re.findall(r"^ {4}([a-z][a-z-]*)", listing, re.M)


def test_the_wheel_is_what_runs(installed: Path) -> None:
    probe = subprocess.run(
        [sys.executable, "-S", "-c", "import wardgate.cli; print(wardgate.cli.__file__)"],
        env={"PYTHONPATH": str(installed)},
        cwd=installed.parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert probe.stdout.strip().startswith(str(installed)), probe.stdout


def test_every_subcommand_runs_from_the_wheel(installed: Path) -> None:
    top = _run_installed(installed, "--help")
    assert top.returncode == 0, top.stderr
    pending = [[command] for command in _subcommands(top.stdout)]
    assert {"gateway", "operator", "dev-cluster", "demo", "validate", "explain"} <= {
        c[0] for c in pending
    }
    seen = []
    while pending:
        command = pending.pop()
        result = _run_installed(installed, *command, "--help")
        assert result.returncode == 0, f"wardgate {' '.join(command)} --help: {result.stderr}"
        assert f"usage: wardgate {' '.join(command)}" in " ".join(result.stdout.split())
        seen.append(command)
        pending.extend([*command, sub] for sub in _subcommands(result.stdout))
    assert ["dev-cluster", "up"] in seen
