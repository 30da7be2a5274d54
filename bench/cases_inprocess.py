"""Cases 6 and 7: the route table (`bench.bench_matching`) and the operator
(`bench.bench_operator`)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

from bench import bench_matching, bench_operator
from bench.clusters import bench_cluster
from bench.contenders import Setup, start_wardgate, wardgate_config
from bench.harness import Case, rss_mib


def case_routes(setup: Setup, smoke: bool) -> Case:
    """Route matching in-process (bench/bench_matching.py), and a gateway process's RSS."""
    from functools import partial

    from wardgate.gateway.matching import Router

    number = 20_000 if smoke else 200_000
    small = Router.build(bench_matching.route_entries(10))
    big = Router.build(bench_matching.route_entries(10_000))
    shapes = []
    for name, method, path in bench_matching.CASES:
        t_small = bench_matching.best_ns(partial(small.match, method, path), number, 5)
        t_big = bench_matching.best_ns(partial(big.match, method, path), number, 5)
        shapes.append(
            {"shape": name, "ns_10": t_small, "ns_10000": t_big, "ratio": t_big / t_small}
        )
    rss: dict[str, float] = {}
    for routes in (10, 10_000):
        config = wardgate_config(
            setup.upstream_port,
            {"secret": "$secret.JWT_SECRET", "algorithm": "HS256"},
            routes=routes - 2,
        )
        started = time.monotonic()
        gateway = start_wardgate(setup, f"routes-{routes}", config, None)
        startup = time.monotonic() - started
        try:
            # Serve a little first, so that lazily built parts count.
            for _ in range(20):
                with urllib.request.urlopen(gateway.base + "/health", timeout=5):
                    pass
            rss[f"rss_mib_{routes}"] = rss_mib(gateway.process.pid)
            rss[f"startup_s_{routes}"] = startup
        finally:
            setup.procs.stop(gateway.process)
    return Case(
        "6",
        "route table: 10 vs 10,000 routes",
        None,
        [],
        extra={
            "match": shapes,
            "worst_ratio": max(s["ratio"] for s in shapes),
            **rss,
        },
    )


def case_operator(smoke: bool, cluster: bool) -> Case:
    """The operator's own benchmark (`bench/bench_operator.py`): render of 1,000 Routes, and
    with `cluster`, apply-to-ConfigMap latency and no-op reconcile writes on the local
    control plane (or the one WARDGATE_KUBECONFIG names)."""
    extra: dict[str, Any] = {
        "render_1000_routes": bench_operator.bench_render(routes=1000, samples=3 if smoke else 15)
    }
    note = ""
    if cluster:
        with bench_cluster() as started:
            extra["cluster"] = bench_operator.bench_cluster(started, 20)
    else:
        note = "render only (--no-cluster or --smoke): the cluster figures need the control plane"
    return Case("7", "operator (bench/bench_operator.py)", None, [], note=note, extra=extra)
