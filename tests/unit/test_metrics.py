"""The gateway's metrics: what a route holds is per server, and the fast paths expose what
prometheus_client's own calls would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from wardgate.gateway.config import parse_config
from wardgate.gateway.metrics import UPSTREAM_BUCKETS, GatewayMetrics
from wardgate.gateway.proxy import create_upstream_pools
from wardgate.gateway.routes import build_routes


def _config(routes: int, servers: int) -> dict[str, object]:
    return {
        "servers": {f"s{i}": {"url": f"http://127.0.0.1:{9000 + i}"} for i in range(servers)},
        "paths": [
            {
                "method": "GET",
                "path": f"/r{i}",
                "integration": {"type": "http_proxy", "server": f"s{i % servers}"},
            }
            for i in range(routes)
        ],
    }


def test_routes_to_one_server_share_its_latency_observer() -> None:
    metrics = GatewayMetrics()
    orders = metrics.upstream_histogram("orders")
    assert metrics.upstream_histogram("orders") is orders
    assert metrics.upstream_histogram("billing") is not orders


def test_a_route_table_holds_one_latency_observer_per_server() -> None:
    # The memory a config costs grows with its routes only by what each route needs: a
    # per-server object built once per route cost 10,000 routes 15 MiB.
    metrics = GatewayMetrics()
    created: list[object] = []
    original = metrics.upstream_histogram

    def counting(server: str) -> object:
        observer = original(server)
        if all(observer is not seen for seen in created):
            created.append(observer)
        return observer

    metrics.upstream_histogram = counting  # type: ignore[assignment,method-assign]
    config = parse_config(_config(routes=300, servers=3))
    build_routes(config, upstreams=create_upstream_pools(), metrics=metrics)
    assert len(created) == 3


def test_latency_observer_exposes_what_histogram_observe_exposes() -> None:
    metrics = GatewayMetrics()
    reference_registry = CollectorRegistry()
    reference = Histogram(
        "wardgate_upstream_latency_seconds",
        "Time from sending a request upstream to its response headers, by server.",
        ("server",),
        buckets=UPSTREAM_BUCKETS,
        registry=reference_registry,
    )
    # Every bound itself (counted in its own bucket), just above and below, and past the last.
    amounts = [0.0, *UPSTREAM_BUCKETS, *(b * 1.001 for b in UPSTREAM_BUCKETS), 1e6]
    amounts += [b * 0.999 for b in UPSTREAM_BUCKETS]
    for server in ("a", "b"):
        observer = metrics.upstream_histogram(server)
        for amount in amounts:
            observer.observe(amount)
            reference.labels(server).observe(amount)
    ours = [
        line
        for line in generate_latest(metrics.registry).decode().splitlines()
        if line.startswith("wardgate_upstream_latency_seconds")
    ]
    theirs = [
        line
        for line in generate_latest(reference_registry).decode().splitlines()
        if line.startswith("wardgate_upstream_latency_seconds") and "_created" not in line
    ]
    ours = [line for line in ours if "_created" not in line]
    assert ours == theirs
    assert any('le="+Inf",server="a"' in line for line in ours)
