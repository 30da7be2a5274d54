"""Shared pytest setup: makes `tests/support` importable as `support` (tests/ is not a
package, and pytest runs with --import-mode=importlib)."""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
