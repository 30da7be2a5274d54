"""Conditions, statuses and Events of the operator's objects (kstatus): transitions, the
Ready summary, Programmed from the Deployment, and which Events are written."""

from __future__ import annotations

from typing import Any

from wardgate.operator.conditions import (
    Cond,
    eventful,
    false,
    merge_conditions,
    summarise,
    summary,
    transitions,
    true,
)
from wardgate.operator.inputs import resource_from_body
from wardgate.operator.manifests import (
    CONFIG_MAP_LIMIT,
)
from wardgate.operator.render import Meta, ObjectStatus, render
from wardgate.operator.status import (
    Replicas,
    build_event,
    build_status,
    config_too_large,
    gateway_status,
    programmed_condition,
    routes_not_delivered,
    same_status,
    served_condition,
)

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
    conditions, fields = gateway_status(rendered, done, None, "h1", replicas=SERVING_H1)
    assert [c.type for c in conditions] == [
        "Accepted",
        "ResolvedRefs",
        "Programmed",
        "ConfigServed",
        "Ready",
        "Stalled",
    ]
    assert conditions[4].reason == conditions[5].reason == "InvalidConfig"
    assert conditions[2].ok  # the last good config runs
    assert conditions[3].ok  # and is served
    assert fields == {
        "routes": 1,
        "configHash": "h1",
        "replicas": 2,
        "availableReplicas": 2,
        "servingReplicas": 2,
    }


SERVING_H1 = Replicas(frozenset({"a", "b"}), frozenset({"a", "b"}), {"a": "h1", "b": "h1"})


def test_ready_means_served_by_every_ready_replica() -> None:
    accepted = ObjectStatus(
        "Gateway",
        META,
        (true("Accepted", "Accepted"), true("ResolvedRefs", "ResolvedRefs")),
        {"routes": 1},
    )
    done = _deployment(replicas=2, updatedReplicas=2, availableReplicas=2)
    # Written and rolled out, but one replica still serves the previous config.
    halfway = Replicas(frozenset({"a", "b"}), frozenset({"a", "b"}), {"a": "h1", "b": "h0"})
    conditions, fields = gateway_status(accepted, done, "h1", "h1", replicas=halfway)
    ready = next(c for c in conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "Progressing")
    assert ready.message == "1/2 ready replicas serve config h1 (others: 1 h0)"
    assert fields["servingReplicas"] == 1
    assert _derived(conditions)["Reconciling"] == ("True", "Progressing")
    # A replica that is not ready does not count either way; one with no record holds it.
    unready = Replicas(frozenset({"a", "b", "c"}), frozenset({"a"}), {"a": "h1", "b": "h0"})
    assert served_condition(unready, "h1").ok
    silent = Replicas(frozenset({"a", "c"}), frozenset({"a", "c"}), {"a": "h1"})
    assert served_condition(silent, "h1").message.endswith("(others: 1 nothing recorded)")
    assert served_condition(Replicas(), "h1").reason == "Pending"
    assert served_condition(SERVING_H1, None).reason == "Pending"
    conditions, fields = gateway_status(accepted, done, "h1", "h1", replicas=SERVING_H1)
    ready = next(c for c in conditions if c.type == "Ready")
    assert ready.ok
    assert ready.message == "2/2 ready replicas serve config h1"
    assert fields["servingReplicas"] == 2
    # Records of pods gone are stale (the operator removes them).
    assert Replicas(frozenset({"a"}), frozenset({"a"}), {"a": "h1", "old": "h0"}).stale() == ["old"]


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
    conditions, _ = gateway_status(accepted, done, "h1", "h1", replicas=SERVING_H1)
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


# --- Events, and statuses when a config is too large to deliver ----------------------


def _stored(*conditions: Any) -> list[dict[str, Any]]:
    return merge_conditions([], conditions, 1, "T")


def test_an_object_fine_from_the_start_writes_no_event() -> None:
    accepted = true("Accepted", "Accepted", "2 paths")
    assert eventful([], [accepted, true("Ready", "Ready")]) == []
    # A rollout (Pending, then Progressing, then Programmed) writes none either.
    pending = false("Programmed", "Pending", "the Deployment does not exist yet")
    progressing = false("Programmed", "Progressing", "rolling out")
    assert eventful([], [pending]) == []
    assert eventful(_stored(pending), [progressing]) == []
    assert eventful(_stored(progressing), [true("Programmed", "Programmed")]) == []


def test_a_failure_and_its_recovery_write_one_event_each() -> None:
    accepted = true("Accepted", "Accepted")
    invalid = false("Accepted", "Invalid", "paths.0.path: bad")
    assert eventful(_stored(accepted), [invalid]) == [invalid]
    assert eventful([], [invalid]) == [invalid]  # created invalid
    assert eventful(_stored(invalid), [invalid]) == []  # still invalid: nothing new
    conflict = false("Accepted", "Conflict", "taken")
    assert eventful(_stored(invalid), [conflict]) == [conflict]  # another reason
    assert eventful(_stored(conflict), [accepted]) == [accepted]  # fixed
    too_large = config_too_large(2_000_000, CONFIG_MAP_LIMIT, 30_000)
    assert eventful(_stored(true("Programmed", "Programmed")), [too_large]) == [too_large]


def test_the_too_large_condition_says_the_size_and_the_limit() -> None:
    condition = config_too_large(2_000_123, CONFIG_MAP_LIMIT, 30_000)
    assert (condition.type, condition.status, condition.reason) == (
        "Programmed",
        "False",
        "ConfigTooLarge",
    )
    assert "2000123 bytes" in condition.message
    assert str(CONFIG_MAP_LIMIT) in condition.message
    assert "30000 paths" in condition.message


def test_routes_of_an_undelivered_config_are_not_ready_and_write_no_event() -> None:
    gateway = resource_from_body(
        {"metadata": {"namespace": "team", "name": "api", "uid": "g"}, "spec": {}}
    )
    routes = [
        resource_from_body(
            {
                "metadata": {"namespace": "team", "name": f"route-{i:05d}"},
                "spec": {
                    "gatewayRef": {"name": "api"},
                    "paths": [{"method": "GET", "path": f"/r/{i}", "response": {"ok": True}}],
                },
            }
        )
        for i in range(3)
    ]
    assert all(s.ready for s in render(("team", "api"), gateway, routes, [], {}, {}, set()).routes)
    broken = resource_from_body(
        {
            "metadata": {"namespace": "team", "name": "broken"},
            "spec": {"gatewayRef": {"name": "api"}, "paths": [{"path": "no-slash"}]},
        }
    )
    result = render(("team", "api"), gateway, [*routes, broken], [], {}, {}, set())
    statuses = routes_not_delivered(result.routes, ("team", "api"), 2_000_123, CONFIG_MAP_LIMIT)
    by_name = {s.meta.name: s for s in statuses}
    for index in range(3):
        status = by_name[f"route-{index:05d}"]
        assert not status.ready
        ready = next(c for c in status.conditions if c.type == "Ready")
        assert (ready.status, ready.reason) == ("False", "GatewayConfigTooLarge")
        assert "Gateway team/api" in ready.message
        assert "2000123 bytes" in ready.message
        assert str(CONFIG_MAP_LIMIT) in ready.message
        assert [c.type for c in status.conditions if c.type == "Stalled"] == ["Stalled"]
        assert status.fields == next(r.fields for r in result.routes if r.meta == status.meta)
        # Thousands of Routes: the Gateway's Event says it once, the Routes write none,
        # neither on the way in nor on the way back.
        before = next(r for r in result.routes if r.meta == status.meta)
        assert eventful(_stored(*before.conditions), status.conditions) == []
        assert eventful(_stored(*status.conditions), before.conditions) == []
    # A Route that is invalid on its own keeps its own reason.
    assert by_name["broken"] == next(r for r in result.routes if r.meta.name == "broken")
    assert not by_name["broken"].ready
