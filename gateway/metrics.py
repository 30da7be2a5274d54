"""Prometheus metrics of the gateway.

With one process (the default) the metrics live in memory and the admin server of the same
process exposes them. With `--workers N` (N > 1) the supervising parent sets
`PROMETHEUS_MULTIPROC_DIR` before any worker starts: each worker writes its values to files
there (prometheus-client's multiprocess mode) and the parent, which alone serves the admin
port, adds them up on each scrape. Counters of a worker that exits are kept.

Label values are taken from the config (route patterns, server and authorizer names) and
from the error catalogue, so their number is bounded. The labelled children are cached, so a
request costs a dictionary lookup and an increment per metric.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable
from typing import Final, cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
UPSTREAM_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
NO_ROUTE_LABEL: Final = "(none)"
WEBSOCKET_BUCKETS: Final = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)

# `*_created` series double the exposition and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]
OK_CODE: Final = "ok"


class GatewayMetrics:
    """The gateway's metrics; also the authorizers' `AuthMetrics`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._requests = Counter(
            "wardgate_requests",
            "Requests answered, by route pattern, status and code (`ok` or an error code).",
            ("route", "status", "code"),
            registry=self.registry,
        )
        self._denials = Counter(
            "wardgate_denials",
            "Requests refused by an authorizer, by error code.",
            ("code", "authorizer"),
            registry=self.registry,
        )
        self._upstream = Histogram(
            "wardgate_upstream_latency_seconds",
            "Time from sending a request upstream to its response headers, by server.",
            ("server",),
            buckets=UPSTREAM_BUCKETS,
            registry=self.registry,
        )
        self._jwks = Counter(
            "wardgate_jwks_fetches",
            "Fetches of JSON Web Key Sets, by authorizer and result (`ok` or `error`).",
            ("authorizer", "result"),
            registry=self.registry,
        )
        self._config = Gauge(
            "wardgate_config_info",
            "1 for the hash of the config this process serves (the Gateway's status.configHash "
            "once the operator's latest config is served).",
            ("hash",),
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self._reloads = Counter(
            "wardgate_config_reloads",
            "Configs applied in place (`ok`) or refused, the previous one serving on (`error`).",
            ("result",),
            registry=self.registry,
        )
        self._websockets_open = Gauge(
            "wardgate_websocket_connections",
            "WebSocket sessions open now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._websockets = Counter(
            "wardgate_websocket_sessions",
            "WebSocket sessions ended, by route pattern and close code (the first close frame's; "
            "`none` when a connection ended without one, `3xxx`/`4xxx` for private codes).",
            ("route", "close_code"),
            registry=self.registry,
        )
        self._websocket_seconds = Histogram(
            "wardgate_websocket_duration_seconds",
            "How long WebSocket sessions lasted, by route pattern.",
            ("route",),
            buckets=WEBSOCKET_BUCKETS,
            registry=self.registry,
        )
        self._websocket_bytes = Counter(
            "wardgate_websocket_bytes",
            "Bytes relayed by WebSocket sessions (frames as sent), by route pattern and "
            "direction (`client`: from the client, `upstream`: from the upstream).",
            ("route", "direction"),
            registry=self.registry,
        )
        self._served_hash: str | None = None
        self._request_children: dict[tuple[str, int, str], Callable[[float], None]] = {}
        self._denial_children: dict[tuple[str, str], Callable[[float], None]] = {}
        self._latency_observers: dict[str, LatencyObserver] = {}

    def serving(self, config_hash: str) -> None:
        """The config this process serves from now on."""
        if self._served_hash is not None and self._served_hash != config_hash:
            self._config.remove(self._served_hash)
        self._served_hash = config_hash
        self._config.labels(config_hash).set(1)

    def reload(self, ok: bool) -> None:
        self._reloads.labels("ok" if ok else "error").inc()

    def request(self, route: str | None, status: int, code: str | None) -> None:
        key = (route or NO_ROUTE_LABEL, status, code or OK_CODE)
        increment = self._request_children.get(key)
        if increment is None:
            child = self._requests.labels(key[0], str(status), key[2])
            increment = self._request_children[key] = _increment_of(child)
        increment(1)

    def denial(self, code: str, authorizer: str) -> None:
        # The labelled child looked up once per pair: `labels` validates and locks each call.
        key = (code, authorizer)
        increment = self._denial_children.get(key)
        if increment is None:
            child = self._denials.labels(code, authorizer)
            increment = self._denial_children[key] = _increment_of(child)
        increment(1)

    def upstream_histogram(self, server: str) -> LatencyObserver:
        """The latency histogram of one server (its labelled child, looked up once). One
        observer per server, shared by every route proxying to it: an observer holds a
        list per bucket, so one per route would cost a config of 10,000 routes 15 MiB."""
        observer = self._latency_observers.get(server)
        if observer is None:
            observer = LatencyObserver(self._upstream.labels(server))
            self._latency_observers[server] = observer
        return observer

    def websocket_opened(self) -> None:
        self._websockets_open.inc()

    def websocket_closed(
        self, route: str, close_code: str, seconds: float, from_client: int, from_upstream: int
    ) -> None:
        self._websockets_open.dec()
        self._websockets.labels(route, close_code).inc()
        self._websocket_seconds.labels(route).observe(seconds)
        self._websocket_bytes.labels(route, "client").inc(from_client)
        self._websocket_bytes.labels(route, "upstream").inc(from_upstream)

    def jwks_fetch(self, authorizer: str, ok: bool) -> None:
        self._jwks.labels(authorizer, "ok" if ok else "error").inc()


class LatencyObserver:
    """Observes into a labelled histogram: the sum and the one bucket an observation
    counts in (found by bisection), as `Histogram.observe` does after checks that hold for
    a labelled child and a loop over the buckets up to it."""

    __slots__ = ("_bounds", "_buckets", "_sum", "observe")

    def __init__(self, child: Histogram) -> None:
        bounds = getattr(child, "_upper_bounds", None)
        buckets = getattr(child, "_buckets", None)
        total = getattr(child, "_sum", None)
        if bounds is None or buckets is None or total is None:
            self.observe: Callable[[float], None] = child.observe
            return
        self._bounds = list(bounds)
        self._buckets = [_increment_of_value(bucket) for bucket in buckets]
        self._sum = _increment_of_value(total)
        self.observe = self._observe

    def _observe(self, amount: float) -> None:
        self._sum(amount)
        index = bisect_left(self._bounds, amount)
        if index < len(self._buckets):
            self._buckets[index](1)


def _increment_of_value(value: object) -> Callable[[float], None]:
    increment = getattr(value, "inc", None)
    assert callable(increment)
    return cast(Callable[[float], None], increment)


def _increment_of(child: Counter) -> Callable[[float], None]:
    """How to add to a labelled counter: its value's own `inc` when it has one (what
    `Counter.inc` calls after checking that the counter is labelled and the amount not
    negative, both true here), else `Counter.inc`."""
    value = getattr(child, "_value", None)
    increment = getattr(value, "inc", None)
    return increment if callable(increment) else child.inc


def multiprocess_mode() -> bool:
    """Whether metric values are shared through files between worker processes."""
    return bool(os.environ.get(MULTIPROC_ENV))


def render_metrics(metrics: GatewayMetrics | None) -> tuple[bytes, str]:
    """The text exposition (and its content type) of this process or, in multiprocess mode,
    of every worker."""
    if multiprocess_mode():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    registry = metrics.registry if metrics is not None else CollectorRegistry()
    return generate_latest(registry), CONTENT_TYPE_LATEST
