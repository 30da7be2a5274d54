"""Figures of the security and reliability suites (attacks tried and blocked, faults
injected and survived, requests sent and lost), collected during a pytest run and written
to `tests/.results/reliability.json` at its end; `python tests/support/results.py` renders
`docs/reliability.md` from that file.

Counts are added where they are asserted, so that a figure is only recorded by a passing
check: `record("token attacks", "blocked")` after the assertion that it was blocked.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

RESULTS_FILE = Path(__file__).resolve().parents[1] / ".results" / "reliability.json"
DOC_FILE = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"

_COUNTS: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
_FACTS: dict[str, dict[str, Any]] = {}


def record(suite: str, figure: str, n: int = 1) -> None:
    """Add `n` to one figure of a suite."""
    _COUNTS[suite][figure] += n


def note(suite: str, **facts: Any) -> None:
    """Set descriptive facts of a suite (durations, rates): the last value wins."""
    _FACTS.setdefault(suite, {}).update(facts)


def write(long: bool, passed: bool) -> Path | None:
    """Write the summary of this run (nothing when no suite recorded anything)."""
    if not _COUNTS and not _FACTS:
        return None
    summary = {
        "generatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": "long" if long else "default",
        "passed": passed,
        "python": sys.version.split()[0],
        "platform": platform.platform(terse=True),
        "suites": {
            suite: {"counts": dict(_COUNTS.get(suite, {})), "facts": _FACTS.get(suite, {})}
            for suite in sorted(set(_COUNTS) | set(_FACTS))
        },
    }
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return RESULTS_FILE


def render_markdown(summary: dict[str, Any], intro: str) -> str:
    """The generated part of `docs/reliability.md`: one table per suite."""
    lines = [
        intro.rstrip(),
        "",
        f"Figures of a `{summary['mode']}` run on {summary['generatedAt']} "
        f"(Python {summary['python']}, {summary['platform']}); "
        f"all tests {'passed' if summary['passed'] else 'did NOT pass'}.",
        "",
    ]
    for suite, data in summary["suites"].items():
        lines += [f"### {suite}", "", "| figure | value |", "| --- | ---: |"]
        for figure, value in sorted(data["counts"].items()):
            lines.append(f"| {figure} | {value} |")
        for fact, value in sorted(data["facts"].items()):
            lines.append(f"| {fact} | {value} |")
        lines.append("")
    return "\n".join(lines)


_MARKER = "<!-- generated below by tests/support/results.py; edit above this line -->"


def main() -> int:
    """Replace the generated part of `docs/reliability.md` with the last run's figures."""
    summary = json.loads(RESULTS_FILE.read_text())
    text = DOC_FILE.read_text() if DOC_FILE.exists() else ""
    head = text.split(_MARKER, 1)[0].rstrip() + "\n\n" if _MARKER in text else text
    DOC_FILE.write_text(head + _MARKER + "\n\n" + render_markdown(summary, "## Figures") + "\n")
    print(f"wrote {DOC_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
