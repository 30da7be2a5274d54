"""Status conditions in kstatus form: desired conditions as values, merged into the previous
ones so that `lastTransitionTime` moves only when a condition's status changes. Pure.

Each kind's own conditions are followed by derived ones (`summarise`): `Ready`, always
present, and kstatus' abnormal-true `Reconciling` and `Stalled`, present only while true
(kstatus reads an absent one as false), for tools that read nothing else (Helm's `--wait`,
Flux, kpt).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

Status = Literal["True", "False", "Unknown"]

DERIVED: Final = frozenset({"Ready", "Reconciling", "Stalled"})
"""Condition types computed from the others by `summarise`."""
IN_PROGRESS: Final = frozenset({"Pending", "Progressing"})
"""Reasons of a false condition that the operator's own work will turn true."""
LINT_CONDITION: Final = "ConfigWarnings"
"""Present (status True) while a valid spec has smells worth acting on (an Auth0 issuer
without its trailing slash): the object works and stays Ready, its Event is a Warning."""
TRANSIENT: Final = frozenset({"IdentityProviderReachable"})
"""Condition types that may turn true again with no change to any object (an identity
provider coming back): they make an object not Ready, but neither Stalled nor Reconciling."""

NOT_DELIVERED: Final = "GatewayConfigTooLarge"
"""A Route's reason while its Gateway's config is too large to deliver: the Gateway's own
Event says it once; one Event per Route (thousands) would bury it, so none is written."""


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


def summarise(conditions: Sequence[Cond], ready_message: str = "") -> tuple[Cond, ...]:
    """`conditions` followed by `Ready`, then `Reconciling=True` while work toward the spec is
    under way (a rollout) or `Stalled=True` when it cannot go on without a change to some
    object (an invalid spec, a reference that does not resolve, a conflict). Never both:
    a stalled object is not making progress."""
    own = [c for c in conditions if c.type not in DERIVED]
    derived = [summary(own, ready_message)]
    failing = [c for c in own if not c.ok and c.type not in TRANSIENT]
    stalled = next((c for c in failing if c.reason not in IN_PROGRESS), None)
    reconciling = next((c for c in failing if c.reason in IN_PROGRESS), None)
    if stalled is not None:
        derived.append(Cond("Stalled", "True", stalled.reason, stalled.message))
    elif reconciling is not None:
        derived.append(Cond("Reconciling", "True", reconciling.reason, reconciling.message))
    return (*own, *derived)


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
    """Conditions whose status or reason changed."""
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


def needs_attention(type_: object, status: object, reason: object) -> bool:
    """A condition someone must act on: a failure that the operator's own work will not
    turn true, or configuration warnings (`LINT_CONDITION` while true)."""
    if type_ == LINT_CONDITION:
        return status == "True"
    return status in ("False", "Unknown") and reason not in IN_PROGRESS


def eventful(previous: Sequence[Mapping[str, Any]], desired: Sequence[Cond]) -> list[Cond]:
    """The transitions worth a Kubernetes Event: into a failure that needs someone (not a
    rollout's `Pending`/`Progressing`), or out of one. An object that is fine from the
    start, or goes through a rollout, writes none: with thousands of Routes, an Event per
    accepted Route is noise that hides the one that matters."""
    before = {c.get("type"): c for c in previous}
    out = []
    for condition in transitions(previous, desired):
        old = before.get(condition.type) or {}
        if condition.reason == NOT_DELIVERED or (
            old.get("reason") == NOT_DELIVERED and condition.ok
        ):
            continue
        if needs_attention(condition.type, condition.status, condition.reason) or (
            needs_attention(old.get("type"), old.get("status"), old.get("reason"))
        ):
            out.append(condition)
    return out
