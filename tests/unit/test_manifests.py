"""The objects the operator writes for a Gateway: names, and the config's ConfigMap size."""

from __future__ import annotations

import json
from typing import Any

from wardgate.operator.inputs import resource_from_body, secret_from_body
from wardgate.operator.manifests import (
    CONFIG_FILE,
    CONFIG_MAP_LIMIT,
    Defaults,
    build_gateway_objects,
    child_name,
    config_map_size,
    config_map_text,
)
from wardgate.operator.render import render


def test_child_names_are_dns_labels() -> None:
    assert child_name("api") == "wardgate-api"
    long = child_name("x" * 63, "-config")
    assert len(long) <= 63
    assert long != child_name("x" * 62 + "y", "-config")


def _route(index: int) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "team", "name": f"route-{index:05d}"},
        "spec": {
            "gatewayRef": {"name": "api"},
            "paths": [
                {
                    "method": ["GET", "POST"],
                    "path": f"/service-{index}/items/{{id}}",
                    "auth": True,
                    "integration": {"type": "http_proxy", "server": "backend"},
                },
                {"method": "GET", "path": f"/service-{index}/health", "response": {"ok": True}},
            ],
        },
    }


def test_twenty_thousand_paths_fit_in_one_config_map() -> None:
    gateway = resource_from_body(
        {
            "metadata": {"namespace": "team", "name": "api", "uid": "u"},
            "spec": {
                "defaultAuthorizer": "jwt",
                "servers": {"backend": {"service": {"name": "backend", "port": 80}}},
            },
        }
    )
    authorizer = resource_from_body(
        {
            "metadata": {"namespace": "team", "name": "jwt"},
            "spec": {"type": "jwt", "secret": "$secret.KEY", "secretRef": {"name": "keys"}},
        }
    )
    secrets = {("team", "keys"): secret_from_body({"stringData": {"KEY": "k" * 40}})}
    routes = [resource_from_body(_route(i)) for i in range(10_000)]
    result = render(gateway.meta.key, gateway, routes, [authorizer], secrets, {})
    assert result.config is not None
    assert result.spec is not None
    assert result.config_json is not None
    assert len(result.config.paths) == 20_000
    config_map = build_gateway_objects(gateway.meta, result.spec, result, Defaults()).apply[0]
    assert list(config_map["binaryData"]) == [CONFIG_FILE]
    assert json.loads(config_map["data"]["secrets.json"]) == [
        {"key": "KEY", "path": "keys.KEY", "secret": "keys"}
    ]
    size = config_map_size(config_map)
    assert len(result.config_json) > CONFIG_MAP_LIMIT  # would not fit uncompressed
    assert size < CONFIG_MAP_LIMIT / 2
    text = config_map_text(config_map)
    assert text == result.config_json
    assert len(json.loads(text)["paths"]) == 20_000
