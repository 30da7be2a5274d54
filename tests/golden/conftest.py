"""Golden files: `*.in.yaml` inputs, `*.out.yaml` expected outputs.

Regenerate with `pytest tests/golden --update-golden` (or `WARDGATE_UPDATE_GOLDEN=1`), then
review the diff like any other change.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite the *.out.yaml golden files from the current output",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden")) or (
        os.environ.get("WARDGATE_UPDATE_GOLDEN", "") not in ("", "0")
    )
