"""Render golden tests: every `render/*.in.yaml` → `render/*.out.yaml`.

An input holds `gateway` (or `gatewayRef` when the Gateway does not exist), `routes`,
`authorizers`, `secrets` (with values: only their digests reach render), `configMaps`
(whose CA bundles reach render), `namespaces`
(labels) and `services` (`namespace/name` of the Services that exist). The output holds the
rendered config, its hash, the projected secret items, every status, and the objects the
operator would apply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from wardgate.operator.conditions import Cond
from wardgate.operator.inputs import (
    config_map_from_body,
    meta_from_body,
    resource_from_body,
    secret_from_body,
)
from wardgate.operator.manifests import (
    CONFIG_FILE,
    Defaults,
    build_gateway_objects,
    config_map_text,
)
from wardgate.operator.render import ObjectStatus, RenderCache, RenderResult, render

CASES = Path(__file__).parent / "render"
DEFAULTS = Defaults(image="ghcr.io/example/wardgate:test", image_pull_policy="IfNotPresent")


def _status(status: ObjectStatus) -> dict[str, Any]:
    return {
        "kind": status.kind,
        "name": f"{status.meta.namespace}/{status.meta.name}",
        "conditions": [_condition(c) for c in status.conditions],
        **dict(status.fields),
    }


def _condition(c: Cond) -> str:
    line = f"{c.type}={c.status} {c.reason}"
    return f"{line}: {c.message}" if c.message else line


def run_case(case: dict[str, Any], cache: RenderCache | None = None) -> dict[str, Any]:
    gateway_body = case.get("gateway")
    gateway = resource_from_body(gateway_body) if gateway_body else None
    if gateway is not None:
        key = gateway.meta.key
    else:
        ref = case["gatewayRef"]
        key = (ref["namespace"], ref["name"])
    result: RenderResult = render(
        key,
        gateway,
        [resource_from_body(b) for b in case.get("routes", [])],
        [resource_from_body(b) for b in case.get("authorizers", [])],
        {meta_from_body(b).key: secret_from_body(b) for b in case.get("secrets", [])},
        {name: labels or {} for name, labels in (case.get("namespaces") or {}).items()},
        {tuple(s.split("/", 1)) for s in case.get("services") or []},
        {meta_from_body(b).key: config_map_from_body(b) for b in case.get("configMaps", [])},
        cache=cache,
    )
    out: dict[str, Any] = {
        "configHash": result.config_hash,
        "config": result.document,
        "secretItems": [f"{i.secret}/{i.key} -> {i.path}" for i in result.secret_items],
        "statuses": [
            _status(s)
            for s in [
                *([result.gateway] if result.gateway else []),
                *result.routes,
                *result.authorizers,
            ]
        ],
    }
    if result.config is not None and gateway is not None and result.spec is not None:
        objects = build_gateway_objects(gateway.meta, result.spec, result, DEFAULTS)
        applied = [dict(o) for o in objects.apply]
        for manifest in applied:
            if manifest["kind"] == "ConfigMap" and "binaryData" in manifest:  # `config` above
                assert config_map_text(manifest) == result.config_json
                manifest["binaryData"] = {CONFIG_FILE: "(the config above, gzip, base64)"}
        out["apply"] = applied
        out["absent"] = [f"{kind}/{name}" for kind, name in objects.absent]
    return out


@pytest.mark.parametrize(
    "case_path", sorted(CASES.glob("*.in.yaml")), ids=lambda p: p.name.removesuffix(".in.yaml")
)
def test_render_golden(case_path: Path, update_golden: bool) -> None:
    case = yaml.safe_load(case_path.read_text(encoding="utf-8"))
    actual = yaml.safe_dump(run_case(case), sort_keys=False, width=100)
    expected_path = case_path.with_name(case_path.name.replace(".in.yaml", ".out.yaml"))
    if update_golden:
        expected_path.write_text(actual, encoding="utf-8")
    assert expected_path.exists(), f"no {expected_path.name}: run with --update-golden"
    assert actual == expected_path.read_text(encoding="utf-8")


def test_render_is_deterministic() -> None:
    """The same inputs in another order render the same config and statuses."""
    for case_path in sorted(CASES.glob("*.in.yaml")):
        case = yaml.safe_load(case_path.read_text(encoding="utf-8"))
        shuffled = dict(case)
        for field in ("routes", "authorizers", "secrets", "configMaps"):
            shuffled[field] = list(reversed(case.get(field, [])))
        assert run_case(shuffled) == run_case(case), case_path.name
