"""Unit tests of the operator's pure parts around render: conditions, statuses, inputs,
manifests, the work queue and the command line."""

from __future__ import annotations

import asyncio
import base64

import pytest

from wardgate.cli import build_parser
from wardgate.operator.conditions import (
    Cond,
    false,
    merge_conditions,
    summarise,
    summary,
    transitions,
    true,
)
from wardgate.operator.inputs import key_info, secret_from_body
from wardgate.operator.manifests import child_name
from wardgate.operator.render import Meta, ObjectStatus
from wardgate.operator.status import (
    build_event,
    build_status,
    gateway_status,
    programmed_condition,
    same_status,
)
from wardgate.operator.workqueue import WorkQueue

META = Meta("shop", "api", generation=3, uid="u1")


def test_last_transition_time_moves_only_when_the_status_changes() -> None:
    first = merge_conditions([], [false("Accepted", "Conflict", "a")], 1, "T1")
    assert first[0]["lastTransitionTime"] == "T1"
    # Same status, new reason and message: no transition.
    second = merge_conditions(first, [false("Accepted", "Invalid", "b")], 2, "T2")
    assert second[0]["lastTransitionTime"] == "T1"
    assert second[0]["reason"] == "Invalid"
    assert second[0]["observedGeneration"] == 2
    third = merge_conditions(second, [true("Accepted", "Accepted")], 2, "T3")
    assert third[0]["lastTransitionTime"] == "T3"


def test_transitions_are_status_or_reason_changes() -> None:
    previous = merge_conditions([], [true("Accepted", "Accepted", "1 path")], 1, "T")
    assert transitions(previous, [true("Accepted", "Accepted", "2 paths")]) == []
    changed = transitions(previous, [false("Accepted", "Conflict")])
    assert [c.reason for c in changed] == ["Conflict"]


def test_summary_names_the_first_failing_condition() -> None:
    ready = summary([true("Accepted", "Accepted"), false("ResolvedRefs", "KeyNotFound", "m")])
    assert (ready.type, ready.status, ready.reason, ready.message) == (
        "Ready",
        "False",
        "KeyNotFound",
        "m",
    )
    assert summary([true("Accepted", "Accepted")]).ok


def _deployment(**status: int) -> dict[str, object]:
    return {
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 2, **status},
    }


def test_programmed_only_when_available_replicas_run_the_latest_config() -> None:
    done = _deployment(replicas=2, updatedReplicas=2, availableReplicas=2)
    assert programmed_condition(True, done, "h1", "h1").ok
    assert programmed_condition(True, done, "h2", "h1").reason == "Progressing"  # not applied yet
    rolling = _deployment(replicas=3, updatedReplicas=1, availableReplicas=2)
    assert programmed_condition(True, rolling, "h1", "h1").reason == "Progressing"
    assert programmed_condition(True, None, "h1", None).reason == "Pending"
    stale = {**done, "status": {"observedGeneration": 1}}
    assert not programmed_condition(True, stale, "h1", "h1").ok


def test_a_blocked_gateway_reports_the_running_config() -> None:
    rendered = ObjectStatus(
        "Gateway",
        META,
        (false("Accepted", "InvalidConfig", "x"), true("ResolvedRefs", "ResolvedRefs")),
        {"routes": 1},
    )
    done = _deployment(replicas=2, updatedReplicas=2, availableReplicas=2)
    conditions, fields = gateway_status(rendered, done, None, "h1")
    assert [c.type for c in conditions] == [
        "Accepted",
        "ResolvedRefs",
        "Programmed",
        "Ready",
        "Stalled",
    ]
    assert conditions[3].reason == conditions[4].reason == "InvalidConfig"
    assert conditions[2].ok  # the last good config runs
    assert fields == {"routes": 1, "configHash": "h1", "replicas": 2, "availableReplicas": 2}


def _derived(conditions: tuple[Cond, ...]) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in conditions[-2:] if c.type != "Programmed"}


def test_kstatus_reconciling_during_a_rollout_and_nothing_when_done() -> None:
    accepted = ObjectStatus(
        "Gateway",
        META,
        (true("Accepted", "Accepted"), true("ResolvedRefs", "ResolvedRefs")),
        {"routes": 1},
    )
    rolling = _deployment(replicas=2, updatedReplicas=1, availableReplicas=2)
    conditions, _ = gateway_status(accepted, rolling, "h1", "h1")
    assert _derived(conditions) == {
        "Ready": ("False", "Progressing"),
        "Reconciling": ("True", "Progressing"),
    }
    assert _derived(gateway_status(accepted, None, "h1", None)[0])["Reconciling"] == (
        "True",
        "Pending",
    )
    done = _deployment(replicas=2, updatedReplicas=2, availableReplicas=2)
    conditions, _ = gateway_status(accepted, done, "h1", "h1")
    assert [c.type for c in conditions][-1] == "Ready"  # no Reconciling, no Stalled
    conflict, _ = gateway_status(accepted, None, "h1", None, "ConfigMap x is not ours")
    assert _derived(conflict) == {
        "Ready": ("False", "ObjectConflict"),
        "Stalled": ("True", "ObjectConflict"),
    }


def test_kstatus_stalled_wins_over_reconciling_and_ignores_transient_failures() -> None:
    conditions = summarise(
        [false("Accepted", "Invalid", "bad"), false("Programmed", "Pending", "no config")]
    )
    assert [(c.type, c.status, c.reason) for c in conditions[2:]] == [
        ("Ready", "False", "Invalid"),
        ("Stalled", "True", "Invalid"),
    ]
    unreachable = summarise(
        [true("Accepted", "Accepted"), false("IdentityProviderReachable", "JwksUnreachable")]
    )
    assert [c.type for c in unreachable] == ["Accepted", "IdentityProviderReachable", "Ready"]
    assert not unreachable[-1].ok
    # Derived conditions passed in are recomputed, not kept.
    again = summarise(summarise([true("Accepted", "Accepted")]))
    assert [c.type for c in again] == ["Accepted", "Ready"]


def test_status_comparison_ignores_nulls() -> None:
    status = build_status("Route", META, {}, (true("Accepted", "Accepted"),), {"paths": 1}, "T")
    assert status["auth"] is None
    stored = {k: v for k, v in status.items() if v is not None}
    assert same_status(stored, status)
    assert not same_status({**stored, "paths": 2}, status)


def test_events_are_warnings_when_false_and_never_long() -> None:
    event = build_event(
        "Route", "wardgate.io/v1alpha1", META, false("Accepted", "Conflict", "x" * 5000), "T", "i"
    )
    assert event["type"] == "Warning"
    assert event["reason"] == "Conflict"
    assert len(event["message"]) == 1024
    assert event["involvedObject"]["uid"] == "u1"


def test_secret_metadata_never_holds_the_value() -> None:
    info = secret_from_body(
        {"data": {"A": base64.b64encode(b"value\n").decode()}, "stringData": {"B": ""}}
    )
    assert info.keys["A"].size == 5  # the gateway strips the trailing line break
    assert info.keys["B"].size == 0
    assert "value" not in repr(info)
    assert not key_info(b"\xff\xfe").utf8


def test_child_names_are_dns_labels() -> None:
    assert child_name("api") == "wardgate-api"
    long = child_name("x" * 63, "-config")
    assert len(long) <= 63
    assert long != child_name("x" * 62 + "y", "-config")


async def test_work_queue_coalesces_and_retries() -> None:
    seen: list[str] = []
    gate, started, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()
    failures = {"b": 1}

    async def process(key: str) -> None:
        seen.append(key)
        if seen == ["a"] or seen[:2] == ["b", "a"]:
            started.set()
            await gate.wait()
        if failures.get(key):
            failures[key] -= 1
            raise RuntimeError("transient")
        if seen.count("a") == 2 and seen.count("b") == 2:
            finished.set()

    queue: WorkQueue[str] = WorkQueue(process, lambda exc: 0.01, workers=2)
    queue.start()
    try:
        queue.add("a")
        queue.add("b")
        await asyncio.wait_for(started.wait(), 5)
        queue.add("a")  # while "a" runs: once more afterwards, never concurrently
        queue.add("a")
        gate.set()
        await asyncio.wait_for(finished.wait(), 5)
        assert seen.count("a") == 2  # the two requests made while it ran coalesced
        assert seen.count("b") == 2  # failed once, retried
    finally:
        await queue.stop()


def test_operator_command_line() -> None:
    args = build_parser().parse_args(
        ["operator", "-n", "a", "-n", "b", "--gateway-image", "img:1", "--peering", "p"]
    )
    assert args.namespaces == ["a", "b"]
    assert args.gateway_image == "img:1"
    assert args.peering == "p"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["operator", "-n", "a", "--all-namespaces"])


def test_a_lint_is_a_warning_event_and_keeps_the_object_ready() -> None:
    from wardgate.operator.conditions import LINT_CONDITION

    lint = true(LINT_CONDITION, "Lint", "spec.issuer: no trailing slash")
    conditions = summarise([true("Accepted", "Accepted"), lint])
    assert conditions[-1] == true("Ready", "Ready")
    event = build_event("Authorizer", "wardgate.io/v1alpha1", META, lint, "now", "op")
    assert event["type"] == "Warning"
    assert event["reason"] == "Lint"
    assert "no trailing slash" in event["message"]
    assert (
        build_event("Authorizer", "v", META, true("Ready", "Ready"), "n", "o")["type"] == "Normal"
    )
