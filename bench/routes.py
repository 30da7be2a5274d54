"""The Routes the operator benchmarks create: two paths each, as the figures in
docs/performance.md were measured with."""

from __future__ import annotations

from typing import Any


def route_paths(prefix: str, index: int, health: dict[str, Any]) -> list[dict[str, Any]]:
    """A protected proxied path with a parameter and a public static `health` path, under
    `prefix/service-INDEX`."""
    return [
        {
            "method": ["GET", "POST"],
            "path": f"{prefix}/service-{index}/items/{{id}}",
            "auth": True,
            "integration": {"type": "http_proxy", "server": "backend"},
        },
        {"method": "GET", "path": f"{prefix}/service-{index}/health", "response": health},
    ]
