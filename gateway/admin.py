"""The admin server, on its own port, never on the traffic port.

- `/healthz`: 200 while the process runs.
- `/readyz`: 200 once the config is loaded and the gateway serves; 503 before, and from
  the moment a SIGTERM starts the drain.
- `/metrics`: Prometheus text format (see `wardgate.gateway.metrics`).
- `/config/hash`: `{"hash": ...}`, the hash of the config served now (the Gateway's
  `status.configHash` once the operator's latest config is served; also the metric
  `wardgate_config_info`).
- `/config`: the effective config as JSON, with every default filled in, and its hash.
  Secrets appear only as their `$secret.NAME` references (a config never holds values);
  the names of the resolved secrets are listed, never their values. Also the authorizers'
  key sources and JWKS health (last fetch, last error, key IDs) and their configuration warnings.

With `--workers N` (N > 1) the supervising parent serves this port for all workers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from wardgate.gateway.app import GatewayHolder
from wardgate.gateway.authorizers import Authorizers
from wardgate.gateway.loading import LoadedConfig
from wardgate.gateway.metrics import GatewayMetrics, render_metrics

_JSON: Final = "application/json"


@dataclass(slots=True)
class AdminSource:
    """What the admin endpoints report on."""

    loaded: LoadedConfig
    ready: Callable[[], bool]
    metrics: GatewayMetrics | None = None
    authorizers: Authorizers | None = None
    extra: Callable[[], dict[str, Any]] = field(default=lambda: {})
    holder: GatewayHolder | None = None
    """The serving config, when it is swapped in place (then `loaded` and `authorizers`
    are read from it)."""

    def serving(self) -> tuple[LoadedConfig, Authorizers | None, str]:
        if self.holder is not None:
            current = self.holder.current
            return current.loaded, current.authorizers, self.holder.config_hash
        return self.loaded, self.authorizers, self.loaded.config_hash


def render_effective_config(source: AdminSource) -> dict[str, Any]:
    """The `/config` document."""
    loaded, authorizers, config_hash = source.serving()
    document: dict[str, Any] = {
        "source": loaded.source,
        "hash": config_hash,
        "config": loaded.config.model_dump(mode="json", by_alias=True),
        "secrets": sorted(loaded.secrets),
    }
    if authorizers is not None:
        document["authorizers"] = authorizers.health()
        document["warnings"] = authorizers.warnings()
    document.update(source.extra())
    return document


def _json(data: Any, status: int = 200) -> web.Response:
    body = json.dumps(data, indent=2, sort_keys=False, default=str).encode() + b"\n"
    return web.Response(body=body, status=status, content_type=_JSON)


def build_admin_app(source: AdminSource) -> web.Application:
    """The admin application."""

    async def healthz(request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if source.ready():
            return _json({"ready": True})
        return _json({"ready": False}, status=503)

    async def metrics(request: web.Request) -> web.Response:
        body, content_type = render_metrics(source.metrics)
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def config(request: web.Request) -> web.Response:
        return _json(render_effective_config(source))

    async def config_hash(request: web.Request) -> web.Response:
        return _json({"hash": source.serving()[2]})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/config", config)
    app.router.add_get("/config/hash", config_hash)
    return app
