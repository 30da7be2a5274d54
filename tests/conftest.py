"""Shared pytest setup. `tests` is a package (its helpers in `tests.support`), importable
from the repository root, which pytest's `pythonpath` setting puts on the path."""

import pytest

# The cluster fixtures (`cluster`, `namespace`) and the summary hook serve every suite
# (integration and end to end), so that one session starts one cluster.
from tests.support.cluster_fixtures import (
    cluster,
    namespace,
    node_cluster,
    pytest_terminal_summary,
    wardgate_image,
)

__all__ = ["cluster", "namespace", "node_cluster", "pytest_terminal_summary", "wardgate_image"]

# --- long-running variants and the reliability figures ---------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run the long variants of the security and reliability suites (more "
        "iterations, longer load)",
    )


@pytest.fixture(scope="session")
def long_run(request: pytest.FixtureRequest) -> bool:
    """True under `--long`: suites scale their iterations and load durations with it."""
    return bool(request.config.getoption("--long"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests.support import results

    results.write(long=bool(session.config.getoption("--long")), passed=exitstatus == 0)
