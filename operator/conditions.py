"""Status conditions in kstatus form: desired conditions as values, merged into the previous
ones so that `lastTransitionTime` moves only when a condition's status changes. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]


@dataclass(frozen=True, slots=True)
class Cond:
    """A desired condition (without its timestamps)."""

    type: str
    status: Status
    reason: str
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "True"


def true(type_: str, reason: str, message: str = "") -> Cond:
    return Cond(type_, "True", reason, message)


def false(type_: str, reason: str, message: str = "") -> Cond:
    return Cond(type_, "False", reason, message)


def summary(conditions: Sequence[Cond], ready_message: str = "") -> Cond:
    """`Ready`: true when every other condition is; else the first failing one's reason."""
    for condition in conditions:
        if not condition.ok:
            return Cond("Ready", condition.status, condition.reason, condition.message)
    return true("Ready", "Ready", ready_message)


def merge_conditions(
    previous: Sequence[Mapping[str, Any]],
    desired: Sequence[Cond],
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """The conditions to store: `lastTransitionTime` kept unless the status changed."""
    before = {c.get("type"): c for c in previous}
    merged: list[dict[str, Any]] = []
    for condition in desired:
        old = before.get(condition.type)
        changed = old is None or old.get("status") != condition.status
        stamp = now if changed or old is None else str(old.get("lastTransitionTime") or now)
        entry: dict[str, Any] = {
            "type": condition.type,
            "status": condition.status,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": stamp,
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        merged.append(entry)
    return merged


def transitions(previous: Sequence[Mapping[str, Any]], desired: Sequence[Cond]) -> list[Cond]:
    """Conditions whose status or reason changed (each one gets a Kubernetes Event)."""
    before = {c.get("type"): c for c in previous}
    out = []
    for condition in desired:
        old = before.get(condition.type)
        if (
            old is None
            or old.get("status") != condition.status
            or old.get("reason") != condition.reason
        ):
            out.append(condition)
    return out
