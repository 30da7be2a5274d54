"""The top-level `operator/` folder must never shadow the standard library's `operator`."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()

PROBE = (
    "import operator, wardgate.operator.render as render; "
    "print(operator.__file__); print(render.__file__); print(operator.itemgetter(0)([1]))"
)


def _probe(*flags: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, *flags, "-c", PROBE],
        cwd=ROOT,  # the repository root is sys.path[0] for `python -c`
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def test_operator_folder_is_not_a_regular_package() -> None:
    assert (ROOT / "operator").is_dir()
    assert not (ROOT / "operator" / "__init__.py").exists()


def test_stdlib_operator_wins_from_the_repository_root() -> None:
    stdlib_file, render_file, item = _probe()
    assert Path(stdlib_file).resolve().parent == STDLIB
    assert Path(render_file).resolve() == ROOT / "operator" / "render.py"
    assert item == "1"
