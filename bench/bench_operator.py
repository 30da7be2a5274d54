"""Operator figures: render time of one Gateway with 1,000 Routes (of its own namespace, and
spread over 10 tenant namespaces under the multi-team policy), time from `kubectl apply`
of a Route to the updated ConfigMap, and writes of a reconcile with nothing to change.

    .venv/bin/python -m bench.bench_operator [--render-only] [--samples N]

Uses the local control plane (started here, from the binaries `make k8s` builds) unless
WARDGATE_KUBECONFIG names a cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

import yaml

from bench import clusters
from bench.routes import route_paths
from tests.support.operator_fixtures import RunningOperator
from wardgate.devcluster.cluster import KubeCluster
from wardgate.gateway.kubesource import load_client_configuration
from wardgate.operator.crds import CRD_DIR
from wardgate.operator.inputs import resource_from_body, secret_from_body
from wardgate.operator.kube import KubeApi, object_path
from wardgate.operator.manifests import Defaults, build_gateway_objects, config_map_text
from wardgate.operator.render import render

NAMESPACE = "bench"


def _route(index: int, teams: int = 0) -> dict[str, Any]:
    prefix = f"/team-{index % teams}" if teams else ""
    return {
        "metadata": {
            "namespace": f"team-{index % teams}" if teams else NAMESPACE,
            "name": f"route-{index:04d}",
            "creationTimestamp": f"2026-01-01T00:{index // 60 % 60:02d}:{index % 60:02d}Z",
        },
        "spec": {
            "gatewayRef": {"name": "api", "namespace": NAMESPACE},
            "paths": route_paths(prefix, index, {"ok": True}),
        },
    }


def _shared_policy(teams: int) -> dict[str, Any]:
    """A Gateway spec's multi-team policy: each team its prefix, the backend for all, public
    health paths allowed, a scope and a claim required everywhere."""
    names = [f"team-{k}" for k in range(teams)]
    return {
        "allowedRoutes": {"namespaces": {"from": "All"}},
        "servers": {
            "backend": {
                "service": {"name": "backend", "port": 80},
                "allowedRoutes": {"namespaces": {"from": "All"}},
            }
        },
        "delegations": [{"namespace": name, "paths": [f"/{name}/*"]} for name in names],
        "authPolicy": {
            "unauthenticated": [{"paths": [f"/{name}/{{service}}/health" for name in names]}],
            "requiredScopes": ["api"],
            "requiredClaims": {"tier": "prod"},
        },
    }


def bench_render(routes: int = 1000, samples: int = 15, teams: int = 0) -> dict[str, float]:
    """Milliseconds to render one Gateway with `routes` Routes (and build its objects); with
    `teams`, the Routes are spread over that many tenant namespaces under a policy."""
    spec: dict[str, Any] = {
        "defaultAuthorizer": "jwt",
        "servers": {"backend": {"service": {"name": "backend", "port": 80}}},
    }
    if teams:
        spec.update(_shared_policy(teams))
    gateway = resource_from_body(
        {"metadata": {"namespace": NAMESPACE, "name": "api", "uid": "u"}, "spec": spec}
    )
    route_inputs = [resource_from_body(_route(i, teams)) for i in range(routes)]
    authorizer = resource_from_body(
        {
            "metadata": {"namespace": NAMESPACE, "name": "jwt"},
            "spec": {"type": "jwt", "secret": "$secret.KEY", "secretRef": {"name": "keys"}},
        }
    )
    secrets = {(NAMESPACE, "keys"): secret_from_body({"stringData": {"KEY": "k" * 40}})}
    render_ms, total_ms = [], []
    for _ in range(samples):
        started = time.perf_counter()
        result = render(gateway.meta.key, gateway, route_inputs, [authorizer], secrets, {})
        rendered = time.perf_counter()
        assert result.config is not None
        assert result.spec is not None
        build_gateway_objects(gateway.meta, result.spec, result, Defaults())
        done = time.perf_counter()
        render_ms.append((rendered - started) * 1000)
        total_ms.append((done - started) * 1000)
        assert len(result.config.paths) == 2 * routes, result.routes[0]
    return {
        "render_median_ms": statistics.median(render_ms),
        "render_min_ms": min(render_ms),
        "render_and_build_median_ms": statistics.median(total_ms),
    }


def _wait(check: Any, timeout: float = 60.0, interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(interval)


def bench_cluster(cluster: KubeCluster, samples: int) -> dict[str, Any]:
    """Apply → ConfigMap latency (median), and writes of a no-op reconcile."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    cluster.kubectl("wait", "--for=condition=Established", "crd/routes.wardgate.io")
    cluster.kubectl("create", "namespace", NAMESPACE)
    api = KubeApi.from_configuration(load_client_configuration(cluster.kubeconfig))
    seed = [
        {
            "apiVersion": "wardgate.io/v1alpha1",
            "kind": "Gateway",
            "metadata": {"name": "api"},
            "spec": {},
        },
        {
            "apiVersion": "wardgate.io/v1alpha1",
            "kind": "Route",
            "metadata": {"name": "base"},
            "spec": {
                "gatewayRef": {"name": "api"},
                "paths": [{"method": "GET", "path": "/base", "response": 1}],
            },
        },
    ]

    def paths() -> list[str]:
        found = api.get_blocking("ConfigMap", NAMESPACE, "wardgate-api-config")
        if found is None:
            return []
        return [p["path"] for p in json.loads(config_map_text(found) or "{}")["paths"]]

    with RunningOperator(
        cluster.kubeconfig, image="wardgate:bench", resync_seconds=60.0
    ) as operator:
        cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump_all(seed))
        _wait(lambda: paths() == ["/base"])
        kubectl_ms, api_ms = [], []
        for index in range(samples):
            route: dict[str, Any] = {
                "apiVersion": "wardgate.io/v1alpha1",
                "kind": "Route",
                "metadata": {"name": f"r{index}"},
                "spec": {
                    "gatewayRef": {"name": "api"},
                    "paths": [{"method": "GET", "path": f"/k{index}", "response": index}],
                },
            }
            started = time.monotonic()
            cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(route))
            _wait(lambda i=index: f"/k{i}" in paths())
            kubectl_ms.append((time.monotonic() - started) * 1000)
            route["metadata"] = {"name": f"a{index}", "namespace": NAMESPACE}
            route["spec"]["paths"][0]["path"] = f"/a{index}"
            started = time.monotonic()
            api.request_blocking("POST", object_path("Route", NAMESPACE), body=route)
            _wait(lambda i=index: f"/a{i}" in paths())
            api_ms.append((time.monotonic() - started) * 1000)

        controller = operator.controller
        _wait(lambda: controller.queue.idle, interval=0.05)
        kube = operator.memo.kube
        assert kube is not None
        writes = sum(kube.writes.values())
        before = controller.queue.processed
        keys = [("Gateway", NAMESPACE, "api")] + [
            ("Authorizer", NAMESPACE, a.resource.meta.name)
            for a in controller.state.authorizers_in(NAMESPACE)
        ]

        async def enqueue() -> None:
            for key in keys:
                controller.queue.add(key)

        future = asyncio.run_coroutine_threadsafe(enqueue(), operator.loop)
        future.result(10)
        _wait(lambda: controller.queue.processed >= before + len(keys) and controller.queue.idle)
        noop_writes = sum(kube.writes.values()) - writes
    api.close()
    return {
        "apply_to_configmap_kubectl_median_ms": statistics.median(kubectl_ms),
        "apply_to_configmap_kubectl_samples_ms": [round(v) for v in kubectl_ms],
        "create_to_configmap_api_median_ms": statistics.median(api_ms),
        "noop_reconcile_writes": noop_writes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--samples", type=int, default=9)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "render_1000_routes": bench_render(),
        "render_1000_routes_10_teams": bench_render(teams=10),
    }
    if not args.render_only:
        with clusters.bench_cluster() as cluster:
            results["cluster"] = bench_cluster(cluster, args.samples)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
