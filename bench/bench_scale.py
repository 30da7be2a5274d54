"""The operator and the gateways at scale, on the local control plane, in one command:

    .venv/bin/python -m bench.bench_scale                 # 1,000, 5,000, 10,000 Routes
    .venv/bin/python -m bench.bench_scale --routes 1000 --samples 5 --churn-seconds 10

First 200 Gateways of 10 Routes each (one namespace), then for each count N of two-path
Routes on one Gateway (a namespace each, removed afterwards):

- ramp: N Routes created (16 at a time), the operator running: seconds until every Route
  status is current, API writes and Events per Route, Gateway renders;
- config: the JSON size and the ConfigMap's size (compressed), against its 1 MiB limit;
- served: two gateway processes follow the ConfigMap (`--watch-config`, as the pods do);
  `kubectl apply` of a new Route until both answer it, while one Route is edited every
  200 ms (churn); ReplicaSets created meanwhile (rollouts);
- bulk: 5,000 Routes edited at once (when N ≥ 5,000): renders, and seconds until served;
- restart: the operator started again as its own process (with N + 2,000 Routes and 201
  Gateways in the cluster): seconds to the end of the listing, seconds until everything
  listed is reconciled, objects written (0 expected), CPU seconds and peak RSS.

Figures go to stdout and to bench/results/scale-TIME.json. Uses the local control plane
(started here from the binaries `make k8s` builds) unless WARDGATE_KUBECONFIG names one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from bench.clusters import bench_cluster
from bench.routes import route_paths
from tests.support.operator_fixtures import RunningOperator
from tests.support.tokens import HS_SECRET
from wardgate.devcluster.cluster import KubeCluster
from wardgate.gateway.kubesource import load_client_configuration
from wardgate.operator.crds import CRD_DIR
from wardgate.operator.kube import KubeApi, object_path
from wardgate.operator.manifests import CONFIG_MAP_LIMIT, config_map_size

API = "wardgate.io/v1alpha1"
RESULTS = Path(__file__).resolve().parent / "results"
CREATE_THREADS = 16
IMAGE = "wardgate:bench"


def route_body(index: int, gateway: str = "api", tag: str = "") -> dict[str, Any]:
    """A Route of two paths, as the issue's figures were measured with."""
    return {
        "apiVersion": API,
        "kind": "Route",
        "metadata": {"name": f"route-{index:05d}"},
        "spec": {
            "gatewayRef": {"name": gateway},
            "paths": route_paths(f"/{gateway}", index, {"ok": True, "tag": tag}),
        },
    }


def base_objects(gateways: list[str]) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "keys"},
            "stringData": {"KEY": HS_SECRET},
        },
        {
            "apiVersion": API,
            "kind": "Authorizer",
            "metadata": {"name": "jwt"},
            "spec": {"type": "jwt", "secret": "$secret.KEY", "secretRef": {"name": "keys"}},
        },
    ]
    for name in gateways:
        objects.append(
            {
                "apiVersion": API,
                "kind": "Gateway",
                "metadata": {"name": name},
                "spec": {
                    "defaultAuthorizer": "jwt",
                    "servers": {"backend": {"url": "http://127.0.0.1:9"}},
                },
            }
        )
    return objects


class Bench:
    def __init__(self, cluster: KubeCluster, args: argparse.Namespace) -> None:
        self.cluster = cluster
        self.args = args
        self.api = KubeApi.from_configuration(load_client_configuration(cluster.kubeconfig))
        self.workdir = RESULTS / f"scale-{time.strftime('%Y%m%d-%H%M%S')}"
        self.workdir.mkdir(parents=True, exist_ok=True)

    # -- API helpers ------------------------------------------------------------------

    def create(self, namespace: str, bodies: list[dict[str, Any]]) -> None:
        def one(body: dict[str, Any]) -> None:
            body = {**body, "metadata": {**body["metadata"], "namespace": namespace}}
            if body["kind"] == "Secret":
                body = {**body, "apiVersion": "v1"}
            self.api.request_blocking("POST", object_path(body["kind"], namespace), body=body)

        with ThreadPoolExecutor(CREATE_THREADS) as pool:
            list(pool.map(one, bodies))

    def patch_many(self, namespace: str, names: list[str], tag: str) -> None:
        def one(name: str) -> None:
            index = int(name.rsplit("-", 1)[1])
            self.api.request_blocking(
                "PATCH",
                object_path("Route", namespace, name),
                body={"spec": route_body(index, tag=tag)["spec"]},
                content_type="application/merge-patch+json",
            )

        with ThreadPoolExecutor(CREATE_THREADS) as pool:
            list(pool.map(one, names))

    def items(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        found = self.api.request_blocking("GET", object_path(kind, namespace)) or {}
        items: list[dict[str, Any]] = found.get("items") or []
        return items

    def statuses_current(self, namespace: str, kinds: tuple[str, ...] = ("Route",)) -> bool:
        for kind in kinds:
            for item in self.items(kind, namespace):
                observed = (item.get("status") or {}).get("observedGeneration")
                if observed != item["metadata"].get("generation"):
                    return False
        return True

    def gateway_hash(self, namespace: str, name: str = "api") -> str | None:
        body = self.api.get_blocking("Gateway", namespace, name) or {}
        value = (body.get("status") or {}).get("configHash")
        return str(value) if value else None

    def versions(self, namespaces: list[str]) -> dict[str, str]:
        found = {}
        for namespace in namespaces:
            for kind in ("Gateway", "Route", "Authorizer", "ConfigMap", "Deployment", "Service"):
                for item in self.items(kind, namespace):
                    meta = item["metadata"]
                    found[f"{namespace}/{kind}/{meta['name']}"] = meta["resourceVersion"]
        return found

    def namespace(self, name: str) -> None:
        self.cluster.kubectl("create", "namespace", name)
        self.cluster.kubectl(
            "wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=60s"
        )

    def delete_namespace(self, name: str) -> None:
        self.cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)

    # -- phases -----------------------------------------------------------------------

    def many_gateways(self, operator: InProcessOperator) -> dict[str, Any]:
        namespace = "bench-gateways"
        names = [f"gw-{i:03d}" for i in range(self.args.gateways)]
        self.namespace(namespace)
        started = time.monotonic()
        writes = operator.writes()
        self.create(namespace, base_objects(names))
        routes = [route_body(i, gateway=g) for g in names for i in range(10)]
        for index, body in enumerate(routes):
            body["metadata"]["name"] = f"route-{index:05d}"
        self.create(namespace, routes)
        created = time.monotonic() - started
        wait(
            lambda: (
                all(self.gateway_hash(namespace, n) for n in names)
                and self.statuses_current(namespace, ("Gateway", "Route"))
            ),
            timeout=900,
            interval=1.0,
        )
        return {
            "gateways": len(names),
            "routes": len(routes),
            "create_seconds": round(created, 1),
            "all_configured_seconds_after_last_create": round(
                time.monotonic() - started - created, 1
            ),
            "writes_per_gateway": round((operator.writes() - writes) / len(names), 1),
        }

    def scale_point(self, routes: int, operator: InProcessOperator) -> dict[str, Any]:
        namespace = f"bench-{routes}"
        result: dict[str, Any] = {"routes": routes}
        self.namespace(namespace)
        self.create(namespace, base_objects(["api"]))
        renders, writes = operator.renders(), operator.writes()
        started = time.monotonic()
        self.create(namespace, [route_body(i) for i in range(routes)])
        created = time.monotonic() - started
        wait(
            lambda: (
                self.statuses_current(namespace, ("Route", "Gateway"))
                and len(self.items("Route", namespace)) == routes
            ),
            timeout=1200,
            interval=1.0,
        )
        current = time.monotonic() - started
        events = [
            e for e in self.items("Event", namespace) if e["involvedObject"]["kind"] == "Route"
        ]
        result["ramp"] = {
            "create_seconds": round(created, 1),
            "statuses_current_seconds": round(current, 1),
            "statuses_current_after_last_create_seconds": round(current - created, 1),
            "writes_per_route": round((operator.writes() - writes) / routes, 3),
            "events_per_route": round(len(events) / routes, 3),
            "renders": operator.renders() - renders,
        }
        config_map = self.api.get_blocking("ConfigMap", namespace, "wardgate-api-config") or {}
        from wardgate.operator.manifests import config_map_text

        text = config_map_text(config_map) or ""
        result["config"] = {
            "paths": len(json.loads(text or "{}").get("paths") or []),
            "json_bytes": len(text.encode()),
            "configmap_bytes": config_map_size(config_map),
            "configmap_limit_bytes": CONFIG_MAP_LIMIT,
        }
        with self.replicas(namespace) as replicas:
            result["served"] = self.served(namespace, replicas)
            if routes >= 5000:
                result["bulk"] = self.bulk(namespace, operator, replicas)
        return result

    @contextlib.contextmanager
    def replicas(self, namespace: str) -> Iterator[list[Replica]]:
        started = [
            Replica.start(self.cluster.kubeconfig, namespace, i, self.workdir) for i in (0, 1)
        ]
        try:
            target = self.gateway_hash(namespace)
            wait(lambda: all(r.hash() == target for r in started), timeout=180, interval=0.2)
            yield started
        finally:
            for replica in started:
                replica.stop()

    def served(self, namespace: str, replicas: list[Replica]) -> dict[str, Any]:
        sets_before = {rs["metadata"]["uid"] for rs in self.items("ReplicaSet", namespace)}
        stop = threading.Event()
        edits = [0]

        def churn() -> None:
            while not stop.is_set():
                self.patch_many(namespace, ["route-00000"], tag=str(edits[0]))
                edits[0] += 1
                stop.wait(0.2)

        churner = threading.Thread(target=churn, daemon=True)
        churner.start()
        latencies = []
        try:
            end = time.monotonic() + self.args.churn_seconds
            index = 0
            while index < self.args.samples or time.monotonic() < end:
                route = {
                    "apiVersion": API,
                    "kind": "Route",
                    "metadata": {"name": f"probe-{index}"},
                    "spec": {
                        "gatewayRef": {"name": "api"},
                        "paths": [{"method": "GET", "path": f"/probe/{index}", "response": 1}],
                    },
                }
                started = time.monotonic()
                self.cluster.kubectl(
                    "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(route)
                )
                probe = f"/probe/{index}"
                wait(partial(served_by_all, replicas, probe), timeout=120, interval=0.01)
                latencies.append(time.monotonic() - started)
                index += 1
        finally:
            stop.set()
            churner.join()
        sets_after = {rs["metadata"]["uid"] for rs in self.items("ReplicaSet", namespace)}
        ordered = sorted(latencies)
        return {
            "samples": len(latencies),
            "apply_to_served_by_both_p50_s": round(statistics.median(ordered), 3),
            "apply_to_served_by_both_p99_s": round(
                ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3
            ),
            "apply_to_served_by_both_max_s": round(ordered[-1], 3),
            "churn_edits": edits[0],
            "rollouts": len(sets_after - sets_before),
        }

    def bulk(
        self, namespace: str, operator: InProcessOperator, replicas: list[Replica]
    ) -> dict[str, Any]:
        names = [f"route-{i:05d}" for i in range(5000)]
        renders = operator.renders()
        started = time.monotonic()
        self.patch_many(namespace, names, tag="bulk")
        edited = time.monotonic() - started
        last = names[-1]

        def served() -> bool:
            body = replicas[0].config_path_response(
                f"/api/service-{int(last.split('-')[1])}/health"
            )
            return body is not None and '"bulk"' in body

        wait(
            lambda: served() and all(r.hash() == replicas[0].hash() for r in replicas),
            timeout=600,
            interval=0.1,
        )
        return {
            "routes_edited": len(names),
            "edit_seconds": round(edited, 1),
            "served_by_both_after_last_edit_s": round(time.monotonic() - started - edited, 2),
            "renders": operator.renders() - renders,
        }

    def restart(self, namespaces: list[str]) -> dict[str, Any]:
        before = self.versions(namespaces)
        log_path = self.workdir / f"operator-restart-{len(before)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "wardgate", "operator",
                    "--kubeconfig", str(self.cluster.kubeconfig), "--all-namespaces",
                    "--standalone", "--jwks-probe-seconds", "0", "--gateway-image", IMAGE,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        started = time.monotonic()
        peak = [0]
        try:

            def line(pattern: str) -> re.Match[str] | None:
                peak[0] = max(peak[0], rss_kib(process.pid))
                return re.search(pattern, log_path.read_text(errors="replace"))

            wait(
                lambda: line(r"listed (\d+) objects in ([\d.]+) s") is not None,
                timeout=900,
                interval=0.1,
            )
            listed = time.monotonic() - started
            wait(
                lambda: line(r"everything listed reconciled ([\d.]+) s") is not None,
                timeout=900,
                interval=0.1,
            )
            reconciled = time.monotonic() - started
            cpu = cpu_seconds(process.pid)
            peak[0] = max(peak[0], hwm_kib(process.pid))
            listed_match = line(r"listed (\d+) objects")
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        after = self.versions(namespaces)
        written = sorted(k for k in before if after.get(k) != before[k])
        if written:
            print(f"restart wrote: {written[:10]}", file=sys.stderr)
        return {
            "objects_listed": int(listed_match.group(1)) if listed_match else None,
            "listed_seconds": round(listed, 1),
            "everything_reconciled_seconds": round(reconciled, 1),
            "objects_written": len(written),
            "cpu_seconds": round(cpu, 1),
            "peak_rss_mib": round(peak[0] / 1024, 1),
        }


class Replica:
    """A `wardgate gateway --watch-config` process, as a gateway pod runs."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, admin: int) -> None:
        self.process = process
        self.port = port
        self.admin = admin

    @classmethod
    def start(cls, kubeconfig: Path, namespace: str, index: int, workdir: Path) -> Replica:
        from wardgate.demo.local_gateway import free_port

        port, admin = free_port(), free_port()
        log = (workdir / f"gateway-{namespace}-{index}.log").open("wb")
        process = subprocess.Popen(
            [
                sys.executable, "-m", "wardgate", "gateway",
                "--watch-config", f"{namespace}/wardgate-api-config",
                "--kubeconfig", str(kubeconfig),
                "--port", str(port), "--admin-port", str(admin), "--access-log", "off",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        return cls(process, port, admin)

    def _get(self, url: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except OSError:
            return 0, ""

    def hash(self) -> str | None:
        status, body = self._get(f"http://127.0.0.1:{self.admin}/config/hash")
        return json.loads(body)["hash"] if status == 200 else None

    def status(self, path: str) -> int:
        return self._get(f"http://127.0.0.1:{self.port}{path}")[0]

    def config_path_response(self, path: str) -> str | None:
        status, body = self._get(f"http://127.0.0.1:{self.port}{path}")
        return body if status == 200 else None

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class InProcessOperator(RunningOperator):
    """The operator in a thread of this process (its write counters readable)."""

    def __init__(self, kubeconfig: Path) -> None:
        super().__init__(kubeconfig, image=IMAGE, resync_seconds=60.0)

    def settle(self, bench: Bench, namespaces: list[str]) -> None:
        """Until every Gateway is Ready (its kwok pods available) and nothing is queued."""

        def ready() -> bool:
            for namespace in namespaces:
                for item in bench.items("Gateway", namespace):
                    conditions = (item.get("status") or {}).get("conditions") or []
                    if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                        return False
            return self.controller.queue.idle

        try:
            wait(ready, timeout=180, interval=0.5)
        except TimeoutError:
            # Measured anyway; the restart's writes then include the catch-up.
            print("not settled after 180 s", file=sys.stderr)

    def renders(self) -> int:
        return self.controller.reconciler.renders


def wait(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached in {timeout} s")
        time.sleep(interval)


def served_by_all(replicas: list[Replica], path: str) -> bool:
    return all(r.status(path) == 200 for r in replicas)


def percentile(ordered: list[float], fraction: float) -> float:
    """The value below which `fraction` of the samples lie (nearest rank)."""
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def rss_kib(pid: int) -> int:
    return _status_field(pid, "VmRSS")


def hwm_kib(pid: int) -> int:
    return _status_field(pid, "VmHWM")


def _status_field(pid: int, name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(cluster: KubeCluster, args: argparse.Namespace) -> dict[str, Any]:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    cluster.kubectl("wait", "--for=condition=Established", "crd/routes.wardgate.io")
    bench = Bench(cluster, args)
    results: dict[str, Any] = {"points": []}
    with InProcessOperator(cluster.kubeconfig) as operator:
        results["gateways"] = bench.many_gateways(operator)
        operator.settle(bench, ["bench-gateways"])
        print(json.dumps(results["gateways"]), file=sys.stderr, flush=True)
    results["restart_gateways_only"] = bench.restart(["bench-gateways"])
    for routes in args.routes:
        with InProcessOperator(cluster.kubeconfig) as operator:
            point = bench.scale_point(routes, operator)
            operator.settle(bench, ["bench-gateways", f"bench-{routes}"])
        point["restart"] = bench.restart(["bench-gateways", f"bench-{routes}"])
        print(json.dumps(point), file=sys.stderr, flush=True)
        results["points"].append(point)
        bench.delete_namespace(f"bench-{routes}")
    (bench.workdir / "results.json").write_text(json.dumps(results, indent=2))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--routes",
        type=lambda text: [int(v) for v in text.split(",")],
        default=[1000, 5000, 10000],
        help="Route counts, comma-separated (1000,5000,10000)",
    )
    parser.add_argument("--gateways", type=int, default=200)
    parser.add_argument("--samples", type=int, default=20, help="apply → served samples (20)")
    parser.add_argument("--churn-seconds", type=float, default=20.0)
    args = parser.parse_args()
    with bench_cluster() as cluster:
        results = run(cluster, args)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
