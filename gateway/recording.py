"""What a decision did, step by step: a recorder the decision path calls once per check.

`Gateway.admit` and `Authorizers.authorize` take a `Recorder` and call `recorder.step(...)`
when a check passes and `recorder.refusal(...)` when one decides a refusal, whatever the
caller. Serving requests, the recorder is `NO_RECORDER`, whose methods do nothing; `wardgate
explain` passes a `Trace`, which keeps every step as a `Check` (as aiohttp's client calls
its `traces` at each stage and does nothing when there are none).

A step whose description costs something to build (copies of claims, sorted key IDs,
formatted notes) is given as `recorder.step_from(describe, *facts)`: `describe(*facts)`
builds the `Check`, and only a recorder that keeps steps calls it, so the requests the
gateway serves pay one call that returns at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, ParamSpec

__all__ = ["NO_RECORDER", "Check", "Recorder", "Trace"]

P = ParamSpec("P")


@dataclass(slots=True)
class Check:
    """One step of a decision, for `wardgate explain` and for logs."""

    name: str
    passed: bool
    expected: Any = None
    actual: Any = None
    note: str | None = None


class Recorder:
    """Receives the steps of one decision; this base records nothing (the gateway's
    default, `NO_RECORDER`)."""

    __slots__ = ()

    def step(
        self,
        name: str,
        passed: bool,
        expected: Any = None,
        actual: Any = None,
        note: str | None = None,
    ) -> None:
        """One check and its outcome."""

    def step_from(self, describe: Callable[P, Check], *facts: P.args, **named: P.kwargs) -> None:
        """One check described by `describe(*facts)`, called only when steps are kept."""

    def refusal(self, detail: Mapping[str, Any], expected: Any = None) -> None:
        """The check that decided a refusal, from the refusal's own `detail` (`check`,
        `expected`, `actual`, `note`: the facts the log line and the debug body show);
        `expected` replaces the detail's when given."""


NO_RECORDER: Final = Recorder()
"""The recorder of the requests the gateway serves: every call returns at once."""


class Trace(Recorder):
    """Keeps every step, in order, in `checks` (a list given or a new one)."""

    __slots__ = ("checks",)

    def __init__(self, checks: list[Check] | None = None) -> None:
        self.checks: list[Check] = checks if checks is not None else []

    def step(
        self,
        name: str,
        passed: bool,
        expected: Any = None,
        actual: Any = None,
        note: str | None = None,
    ) -> None:
        self.checks.append(Check(name, passed, expected, actual, note))

    def step_from(self, describe: Callable[P, Check], *facts: P.args, **named: P.kwargs) -> None:
        self.checks.append(describe(*facts, **named))

    def refusal(self, detail: Mapping[str, Any], expected: Any = None) -> None:
        self.checks.append(
            Check(
                str(detail.get("check", "")),
                False,
                detail.get("expected") if expected is None else expected,
                detail.get("actual"),
                detail.get("note"),
            )
        )
