"""How many gateway processes a pod runs: `spec.workers`, else whole cores of the CPU limit,
else of the CPU request, at least 1 (`operator.manifests.gateway_workers`)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from wardgate.operator.manifests import MAX_DEFAULT_WORKERS, gateway_workers
from wardgate.operator.models import GatewaySpec


def spec(**fields: Any) -> GatewaySpec:
    return GatewaySpec.model_validate(fields)


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        (None, 1),
        ({}, 1),
        ({"requests": {"memory": "128Mi"}}, 1),
        ({"requests": {"cpu": "100m"}}, 1),
        ({"requests": {"cpu": "1500m"}}, 1),  # rounded down: 2 would share one core
        ({"requests": {"cpu": "2"}}, 2),
        ({"requests": {"cpu": 3}}, 3),
        ({"requests": {"cpu": "2000m"}}, 2),
        ({"requests": {"cpu": "500m"}, "limits": {"cpu": "2"}}, 2),  # the limit first
        ({"requests": {"cpu": "4"}, "limits": {"cpu": "1"}}, 1),
        ({"requests": {"cpu": "200"}}, MAX_DEFAULT_WORKERS),
        ({"requests": {"cpu": "0.5"}, "limits": {"cpu": "3.9"}}, 3),
        ({"requests": {"cpu": "a lot"}}, 1),  # the API server refuses it, saying why
        ({"requests": {"cpu": "2k"}}, 1),  # no gateway pod asks for that many
    ],
)
def test_default_from_cpu(resources: dict[str, Any] | None, expected: int) -> None:
    fields = {} if resources is None else {"resources": resources}
    assert gateway_workers(spec(**fields)) == expected


def test_workers_win_over_cpu() -> None:
    assert gateway_workers(spec(workers=3, resources={"limits": {"cpu": "8"}})) == 3
    assert gateway_workers(spec(workers=1, resources={"limits": {"cpu": "8"}})) == 1


@pytest.mark.parametrize("workers", [0, -1, 65, "two"])
def test_bad_workers_name_the_field(workers: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        spec(workers=workers)
    assert caught.value.errors()[0]["loc"] == ("workers",)
