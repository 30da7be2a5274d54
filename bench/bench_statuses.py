"""Route status patches against the API server: how long the operator takes to make N Route
statuses current, with the reconciler's status writer and its API layer, and what a second
pass with nothing changed costs.

    .venv/bin/python -m bench.bench_statuses                  # 10,000 Routes
    .venv/bin/python -m bench.bench_statuses --routes 2000 --rounds 2

N two-path Routes of one Gateway are created in a namespace (no operator runs), rendered,
and their statuses written by `Reconciler.write_statuses` (`STATUS_CONCURRENCY` patches in
flight, through `KubeApi`). Each round moves every Route's generation on (as an edit of
each would), so every status differs. Printed per round: seconds, patches per second, this
process's CPU milliseconds per patch (the client's share) and, on the local control plane,
each component's (the API server's, etcd's), and the seconds and writes of a second pass
with nothing to change. Rounds alternate between the status writer (`write_statuses`: the
statuses that differ, `STATUS_CONCURRENCY` tasks) and what it replaced (`write_status` for
every Route, a task each behind a semaphore of the same size). Uses the local control plane
(started here) unless WARDGATE_KUBECONFIG names one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from bench.clusters import bench_cluster
from bench.routes import route_paths
from wardgate.devcluster.cluster import KubeCluster, LocalCluster
from wardgate.gateway.kubesource import load_client_configuration
from wardgate.operator.conditions import Cond
from wardgate.operator.crds import CRD_DIR
from wardgate.operator.inputs import resource_from_body, secret_from_body
from wardgate.operator.kube import KubeApi, object_path
from wardgate.operator.manifests import Defaults
from wardgate.operator.reconciler import STATUS_CONCURRENCY, Observed, Reconciler
from wardgate.operator.render import render

NAMESPACE = "bench-statuses"
API = "wardgate.io/v1alpha1"
CREATE_THREADS = 16


def _route(index: int) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Route",
        "metadata": {"name": f"route-{index:05d}", "namespace": NAMESPACE},
        "spec": {
            "gatewayRef": {"name": "api"},
            "paths": route_paths("/api", index, {"ok": True}),
        },
    }


def _create(api: KubeApi, count: int) -> list[dict[str, Any]]:
    path = object_path("Route", NAMESPACE)

    def one(index: int) -> dict[str, Any]:
        created = api.request_blocking("POST", path, body=_route(index))
        assert created is not None
        return created

    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        return list(pool.map(one, range(count)))


class NoState:
    """The reconciler's state is not read here: statuses are written directly."""


async def _one_task_per_route(
    reconciler: Reconciler, wanted: list[tuple[Observed, tuple[Cond, ...], Mapping[str, Any]]]
) -> None:
    """The status writer before `write_statuses`: a task per Route behind a semaphore."""
    limit = asyncio.Semaphore(STATUS_CONCURRENCY)

    async def write(observed: Observed, conditions: tuple[Cond, ...], fields: Any) -> None:
        async with limit:
            await reconciler.write_status("Route", observed, conditions, fields)

    await asyncio.gather(*(write(*item) for item in wanted))


def _components_cpu(cluster: KubeCluster) -> dict[str, float]:
    return cluster.cpu_seconds() if isinstance(cluster, LocalCluster) else {}


async def _rounds(
    cluster: KubeCluster, api: KubeApi, bodies: list[dict[str, Any]], rounds: int
) -> list[dict[str, Any]]:
    gateway = resource_from_body(
        {
            "metadata": {"namespace": NAMESPACE, "name": "api", "uid": "g"},
            "spec": {
                "defaultAuthorizer": "jwt",
                "servers": {"backend": {"url": "http://127.0.0.1:9"}},
            },
        }
    )
    authorizer = resource_from_body(
        {
            "metadata": {"namespace": NAMESPACE, "name": "jwt"},
            "spec": {"type": "jwt", "secret": "$secret.KEY", "secretRef": {"name": "keys"}},
        }
    )
    secrets = {(NAMESPACE, "keys"): secret_from_body({"stringData": {"KEY": "k" * 40}})}
    routes = [Observed(resource_from_body(b)) for b in bodies]
    reconciler = Reconciler(api, NoState(), Defaults())  # type: ignore[arg-type]
    figures = []
    for round_index in range(rounds):
        # Each round a new generation of every Route, as after an edit of each.
        routes = [
            Observed(
                replace(
                    o.resource,
                    meta=replace(o.resource.meta, generation=o.resource.meta.generation + 1),
                )
            )
            for o in routes
        ]
        resources = [o.resource for o in routes]
        result = render(gateway.meta.key, gateway, resources, [authorizer], secrets, {})
        assert all(s.ready for s in result.routes)
        by_key = {o.resource.meta.key: o for o in routes}
        wanted = [(by_key[s.meta.key], s.conditions, s.fields) for s in result.routes]
        writes = sum(api.writes.values())
        components = _components_cpu(cluster)
        writer = "tasks per Route" if round_index % 2 else "write_statuses"
        wall, cpu = time.perf_counter(), time.process_time()
        if writer == "write_statuses":
            await reconciler.write_statuses("Route", wanted)
        else:
            await _one_task_per_route(reconciler, wanted)
        seconds, cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
        components = {
            name: round((used - components.get(name, 0.0)) * 1000 / max(len(wanted), 1), 2)
            for name, used in _components_cpu(cluster).items()
        }
        patches = sum(api.writes.values()) - writes
        writes = sum(api.writes.values())
        wall = time.perf_counter()
        if writer == "write_statuses":
            await reconciler.write_statuses("Route", wanted)
        else:
            await _one_task_per_route(reconciler, wanted)
        unchanged_seconds = time.perf_counter() - wall
        figures.append(
            {
                "round": round_index + 1,
                "writer": writer,
                "patches": patches,
                "seconds": round(seconds, 2),
                "patches_per_second": round(patches / seconds),
                "client_cpu_ms_per_patch": round(cpu_seconds * 1000 / max(patches, 1), 2),
                "components_cpu_ms_per_patch": components,
                "unchanged_pass_seconds": round(unchanged_seconds, 3),
                "unchanged_pass_writes": sum(api.writes.values()) - writes,
                "load_average": os.getloadavg(),
            }
        )
        print(json.dumps(figures[-1]), flush=True)
    return figures


def run(cluster: KubeCluster, count: int, rounds: int) -> dict[str, Any]:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    cluster.kubectl("wait", "--for=condition=Established", "crd/routes.wardgate.io")
    cluster.kubectl("create", "namespace", NAMESPACE)
    api = KubeApi.from_configuration(load_client_configuration(cluster.kubeconfig))
    try:
        started = time.perf_counter()
        bodies = _create(api, count)
        print(f"created {count} Routes in {time.perf_counter() - started:.1f} s", flush=True)
        figures = asyncio.run(_rounds(cluster, api, bodies, rounds))
    finally:
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
        api.close()
    return {"routes": count, "rounds": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with bench_cluster() as cluster:
        print(json.dumps(run(cluster, args.routes, args.rounds)))


if __name__ == "__main__":
    main()
