"""The Argo CD health check (deploy/argocd/health.lua) on Lua 5.1, as Argo CD runs it, against
status objects the operator wrote (tests/fixtures/status, captured by
tests/integration/test_examples.py): Healthy, Progressing and Degraded for every kind."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.argocd import HEALTH_LUA, HEALTH_STATES, KINDS, STATUS_FIXTURES, assess

ARGOCD = HEALTH_LUA.parent


def fixture_files() -> list[Path]:
    return sorted(STATUS_FIXTURES.glob("*.json"))


def load(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((STATUS_FIXTURES / f"{name}.json").read_text())
    return body


def expected_state(path: Path) -> str:
    """`gateway-progressing-rollout.json` → `Progressing`."""
    return path.stem.split("-")[1].capitalize()


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: p.stem)
def test_captured_status_health(path: Path) -> None:
    body = json.loads(path.read_text())
    health = assess(body)
    assert health.status == expected_state(path)
    assert health.message


def test_every_kind_reaches_every_state() -> None:
    reached = {(json.loads(p.read_text())["kind"], expected_state(p)) for p in fixture_files()}
    assert reached == {(kind, state) for kind in KINDS for state in HEALTH_STATES}


def test_degraded_message_names_the_reason() -> None:
    assert assess(load("route-degraded")).message.startswith("GatewayNotFound: no Gateway ")
    assert assess(load("authorizer-degraded")).message.startswith("SecretNotFound: ")
    assert assess(load("gateway-degraded")).message.startswith("AuthorizerNotFound: ")


def test_rollout_in_progress_is_progressing() -> None:
    health = assess(load("gateway-progressing-rollout"))
    assert health.status == "Progressing"
    assert "rolling out config" in health.message


@pytest.mark.parametrize("kind", [k.lower() for k in KINDS])
def test_a_new_generation_is_progressing_until_observed(kind: str) -> None:
    body = load(f"{kind}-healthy")
    body["metadata"]["generation"] += 1
    health = assess(body)
    assert health.status == "Progressing"
    assert str(body["metadata"]["generation"]) in health.message


def _with_ready(body: dict[str, Any], **changes: str) -> dict[str, Any]:
    body = copy.deepcopy(body)
    for condition in body["status"]["conditions"]:
        if condition["type"] == "Ready":
            condition.update(changes)
    return body


def test_ready_unknown_is_progressing() -> None:
    body = _with_ready(load("gateway-healthy"), status="Unknown", reason="Unknown")
    assert assess(body).status == "Progressing"


def test_pending_reason_is_progressing() -> None:
    body = _with_ready(load("gateway-healthy"), status="False", reason="Pending", message="")
    assert assess(body).status == "Progressing"
    assert assess(body).message == "Pending"


def test_kstatus_stalled_and_reconciling() -> None:
    body = load("route-healthy")
    stalled = copy.deepcopy(body)
    stalled["status"]["conditions"].append(
        {"type": "Stalled", "status": "True", "reason": "Stuck", "message": "gave up"}
    )
    assert assess(stalled).status == "Degraded"
    reconciling = copy.deepcopy(body)
    reconciling["status"]["conditions"].append(
        {"type": "Reconciling", "status": "True", "reason": "Working"}
    )
    assert assess(reconciling).status == "Progressing"


def test_status_without_ready_is_progressing() -> None:
    body = load("authorizer-healthy")
    body["status"]["conditions"] = [c for c in body["status"]["conditions"] if c["type"] != "Ready"]
    assert assess(body).status == "Progressing"


def test_argocd_cm_snippet_embeds_the_script_for_each_kind() -> None:
    config_map = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert config_map["metadata"] == {
        "name": "argocd-cm",
        "namespace": "argocd",
        "labels": {
            "app.kubernetes.io/name": "argocd-cm",
            "app.kubernetes.io/part-of": "argocd",
        },
    }
    script = HEALTH_LUA.read_text()
    assert config_map["data"] == {
        f"resource.customizations.health.wardgate.io_{kind}": script for kind in KINDS
    }


def test_application_example_points_at_this_repository() -> None:
    root = ARGOCD.parents[1]
    applications = list(yaml.safe_load_all((ARGOCD / "application.yaml").read_text()))
    assert [a["kind"] for a in applications] == ["Application", "Application"]
    paths = {a["metadata"]["name"]: a["spec"]["source"]["path"] for a in applications}
    assert paths == {"wardgate": "deploy/helm/wardgate", "wardgate-examples": "examples"}
    for path in paths.values():
        assert (root / path).is_dir()
