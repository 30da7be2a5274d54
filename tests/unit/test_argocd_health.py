"""The Argo CD health check (deploy/argocd/health.lua) in gopher-lua, Argo CD's interpreter,
with the libraries Argo CD opens for it, against status objects the operator wrote
(tests/fixtures/status, captured by tests/integration/test_examples.py): Healthy,
Progressing and Degraded for every kind. tests/e2e/test_flux.py runs it on the statuses of
a Flux sync too."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.argocd import (
    HEALTH_LUA,
    HEALTH_STATES,
    KINDS,
    STATUS_FIXTURES,
    Health,
    HealthScriptError,
    assess,
    assess_all,
)

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


# --- the interpreter is set up as Argo CD sets it up ----------------------------------------


def _run(tmp_path: Path, script: str, obj: dict[str, Any] | None = None) -> Health:
    path = tmp_path / "health.lua"
    path.write_text(script)
    return assess_all([obj or load("route-healthy")], path)[0]


def test_obj_is_a_global_table_with_numbers(tmp_path: Path) -> None:
    script = 'return {status = "Healthy", message = obj.kind .. " " .. obj.metadata.generation}'
    body = load("route-healthy")
    assert _run(tmp_path, script, body) == Health(
        "Healthy", f"Route {body['metadata']['generation']}"
    )


@pytest.mark.parametrize(
    "expression",
    ['string.format("%s", "x")', '("x"):upper()', "math.floor(1.5)", "os.getenv('HOME')"],
)
def test_only_argo_cds_libraries_are_open(tmp_path: Path, expression: str) -> None:
    """Argo CD opens no string or math library for a configured health script, and its os
    library is reachable only through require: a script using them fails there."""
    with pytest.raises(HealthScriptError):
        _run(tmp_path, f'local x = {expression}\nreturn {{status = "Healthy"}}')


def test_require_os_has_time_and_date_only(tmp_path: Path) -> None:
    script = (
        'local os = require("os")\n'
        'return {status = "Healthy", message = tostring(os.time() > 0) .. " "'
        ' .. tostring(os.exit == nil) .. " " .. tostring(os.execute == nil)}'
    )
    assert _run(tmp_path, script).message == "true true true"


def test_a_status_argo_cd_does_not_know_is_unknown(tmp_path: Path) -> None:
    health = _run(tmp_path, 'return {status = "Fine", message = "all good"}')
    assert health == Health("Unknown", "Lua returned an invalid health status")


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
