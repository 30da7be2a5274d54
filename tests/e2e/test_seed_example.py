"""The whole product, once: the seed example applied as Kubernetes objects, the operator
renders it, and a real `wardgate gateway` following the rendered ConfigMap through the API
as the Gateway's own ServiceAccount (exactly what its pods run with) answers real requests
in front of a real upstream; then a new Route and a rotated Secret are applied in place,
under load, with no request failing and no pod replaced. The gateway stands in for the
Gateway's one pod: it records the config it serves under that pod's name, and the Gateway
is Ready only once it does.

The kubelet of the local cluster is fake (kwok), so the gateway runs here instead of in the
pod; the `orders` Service's DNS name does not resolve here either, so `--server` points the
rendered `orders` server at the local upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web

from tests.support.operator_fixtures import (
    Objects,
    RunningOperator,
    account_kubeconfig,
    install_crds,
    seed_objects,
)
from tests.support.ports import free_port
from tests.support.tokens import AUDIENCE, ISSUER
from wardgate.devcluster.cluster import KubeCluster

pytestmark = pytest.mark.cluster

SECRET = "e2e-secret-0123456789-abcdefghijklmnopq"


@pytest.fixture(scope="module")
def rendered(cluster: KubeCluster) -> Iterator[tuple[Objects, str, RunningOperator]]:
    """The seed example applied, the Gateway Ready; yields (objects, namespace, operator)."""
    install_crds(cluster)
    objects = Objects(cluster)
    namespace = "e2e-seed"
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl(
        "wait", "--for=create", "serviceaccount/default", "-n", namespace, "--timeout=60s"
    )
    operator = RunningOperator(cluster.kubeconfig, kwok_replicas=False).start()
    try:
        orders_service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "orders"},
            "spec": {"selector": {"app": "orders"}, "ports": [{"port": 8080}]},
        }
        objects.apply(namespace, orders_service, *seed_objects(SECRET))
        # Ready waits for a replica serving the config: the gateway process below.
        objects.wait_condition("Gateway", namespace, "api", "Programmed", "True", timeout=90)
        yield objects, namespace, operator
    finally:
        operator.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")
        objects.close()


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """The `orders` service: answers with a list and records what it received."""
    seen: list[dict[str, str]] = []

    async def orders(request: web.Request) -> web.Response:
        seen.append(
            {"path": request.path, "authorization": request.headers.get("Authorization", "")}
        )
        return web.json_response({"orders": [{"id": 1}]})

    app = web.Application()
    app.router.add_get("/private/orders", orders)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


def _pod(objects: Objects, namespace: str) -> str:
    """The name of the Gateway's one ready pod."""
    objects.wait(
        "the gateway pod",
        lambda: any(p["metadata"]["labels"].get("wardgate.io/gateway") == "api"
                    for p in objects.list("Pod", namespace)),
    )  # fmt: skip
    pods = [
        p["metadata"]["name"]
        for p in objects.list("Pod", namespace)
        if p["metadata"]["labels"].get("wardgate.io/gateway") == "api"
        and not p["metadata"].get("deletionTimestamp")
    ]
    assert len(pods) == 1, pods
    return pods[0]


@pytest.fixture
def gateway_process(
    rendered: tuple[Objects, str, RunningOperator],
    upstream: tuple[str, list[dict[str, str]]],
    tmp_path: Path,
) -> Iterator[tuple[str, str]]:
    """`wardgate gateway` on the rendered config, as the Gateway's pod; yields (traffic URL,
    admin URL)."""
    with _gateway(rendered, upstream, tmp_path) as urls:
        yield urls


@contextlib.contextmanager
def _gateway(
    rendered: tuple[Objects, str, RunningOperator],
    upstream: tuple[str, list[dict[str, str]]],
    tmp_path: Path,
) -> Iterator[tuple[str, str]]:
    objects, namespace, _ = rendered
    kubeconfig = account_kubeconfig(objects.cluster, namespace, "wardgate-api", tmp_path)
    pod = _pod(objects, namespace)
    port, admin_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "wardgate", "gateway",
            "--watch-config", f"{namespace}/wardgate-api-config",
            "--kubeconfig", str(kubeconfig),
            "--port", str(port),
            "--admin-port", str(admin_port),
            "--server", f"orders={upstream[0]}",
            "--access-log", "off",
            "--report-served", "wardgate-api-served",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **{k: v for k, v in os.environ.items() if k != "JWT_SECRET"},
            "WARDGATE_POD_NAME": pod,
        },
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=60)
        assert SECRET not in output


async def _wait_ready(session: aiohttp.ClientSession, admin: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            async with session.get(f"{admin}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        assert time.monotonic() < deadline, "the gateway did not get ready"
        await _next_attempt()


async def _next_attempt() -> None:
    await asyncio.sleep(0.05)  # polling interval of a readiness probe, not synchronisation


async def test_ready_once_the_replica_serves_the_config(
    rendered: tuple[Objects, str, RunningOperator],
    upstream: tuple[str, list[dict[str, str]]],
    tmp_path: Path,
) -> None:
    """Written is not served: the Gateway is Ready, with one serving replica, only once the
    gateway (as its pod, with the pod's account) records that it serves the config."""
    objects, namespace, _ = rendered
    waiting = objects.wait_condition(
        "Gateway", namespace, "api", "ConfigServed", "False", "Progressing"
    )
    assert "0/1 ready replicas serve config" in waiting["message"]
    assert "1 nothing recorded" in waiting["message"]
    assert objects.condition("Gateway", namespace, "api", "Ready")["status"] == "False"
    with _gateway(rendered, upstream, tmp_path) as (_url, admin):
        served = objects.wait_condition("Gateway", namespace, "api", "Ready", "True")
        status = (objects.get("Gateway", namespace, "api") or {})["status"]
        assert status["servingReplicas"] == 1
        async with aiohttp.ClientSession() as session:
            assert await _served_hash(session, admin) == status["configHash"]
        assert f"1/1 ready replicas serve config {status['configHash']}" in served["message"]
        record = objects.get("ConfigMap", namespace, "wardgate-api-served") or {}
        assert record["data"] == {_pod(objects, namespace): status["configHash"]}


async def test_seed_example_end_to_end(
    gateway_process: tuple[str, str], upstream: tuple[str, list[dict[str, str]]]
) -> None:
    url, admin = gateway_process
    _, seen = upstream
    token = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "exp": int(time.time()) + 300},
        SECRET,
        algorithm="HS256",
    )
    async with aiohttp.ClientSession() as session:
        await _wait_ready(session, admin)
        async with session.get(f"{url}/health") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}
        async with session.get(f"{url}/private/orders") as response:
            assert response.status == 401
            body: dict[str, Any] = await response.json()
            assert body["error"]["code"] == "missing_token"
        assert seen == []
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(f"{url}/private/orders", headers=headers) as response:
            assert response.status == 200
            assert await response.json() == {"orders": [{"id": 1}]}
        assert [s["path"] for s in seen] == ["/private/orders"]


async def test_changes_are_applied_in_place_under_load(
    rendered: tuple[Objects, str, RunningOperator],
    gateway_process: tuple[str, str],
    upstream: tuple[str, list[dict[str, str]]],
) -> None:
    """A new Route, then a rotated Secret: each served by the running gateway within
    seconds, no request failing meanwhile, no pod replaced."""
    objects, namespace, _ = rendered
    url, admin = gateway_process
    replica_sets = {rs["metadata"]["uid"] for rs in objects.list("ReplicaSet", namespace)}
    statuses: list[int] = []
    stop = asyncio.Event()

    async def load(session: aiohttp.ClientSession, headers: dict[str, str]) -> None:
        while not stop.is_set():
            try:
                async with session.get(f"{url}/private/orders", headers=headers) as response:
                    statuses.append(response.status)
            except aiohttp.ClientError:
                statuses.append(0)

    async with aiohttp.ClientSession() as session:
        await _wait_ready(session, admin)
        first = await _served_hash(session, admin)
        assert first == (objects.get("Gateway", namespace, "api") or {})["status"]["configHash"]
        clients = [
            asyncio.create_task(load(session, {"Authorization": f"Bearer {_token(SECRET)}"}))
            for _ in range(4)
        ]
        try:
            route = {
                "apiVersion": "wardgate.io/v1alpha1",
                "kind": "Route",
                "metadata": {"name": "hello"},
                "spec": {
                    "gatewayRef": {"name": "api"},
                    "paths": [{"method": "GET", "path": "/hello", "response": {"hi": 1}}],
                },
            }
            started = time.monotonic()
            objects.apply(namespace, route)
            await _until(lambda: _status(session, f"{url}/hello"), 200)
            route_seconds = time.monotonic() - started
            assert route_seconds < 10
            second = await _served_hash(session, admin)
            assert second != first
            # The Gateway's status follows what the replica serves.
            objects.wait(
                "the Gateway to report the new config served",
                lambda: (
                    (objects.get("Gateway", namespace, "api") or {})["status"].get("configHash")
                    == second
                ),
            )
            objects.wait_condition("Gateway", namespace, "api", "Ready", "True")
        finally:
            stop.set()
            await asyncio.gather(*clients)
        assert statuses
        assert set(statuses) == {200}, sorted(set(statuses))

        # The Secret rotated: the new key signs valid tokens within seconds.
        objects.apply(namespace, seed_objects(ROTATED)[0])
        rotated = {"Authorization": f"Bearer {_token(ROTATED)}"}
        await _until(lambda: _status(session, f"{url}/private/orders", rotated), 200)
        assert await _status(session, f"{url}/private/orders", rotated) == 200
        assert await _served_hash(session, admin) not in (first, second)
    assert {rs["metadata"]["uid"] for rs in objects.list("ReplicaSet", namespace)} == replica_sets


ROTATED = "e2e-rotated-0123456789-abcdefghijklmnop"


def _token(secret: str) -> str:
    return jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "exp": int(time.time()) + 300},
        secret,
        algorithm="HS256",
    )


async def _status(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> int:
    async with session.get(url, headers=headers) as response:
        return response.status


async def _served_hash(session: aiohttp.ClientSession, admin: str) -> str:
    async with session.get(f"{admin}/config/hash") as response:
        body: dict[str, str] = await response.json()
        return body["hash"]


async def _until(probe: Any, expected: int) -> None:
    async with asyncio.timeout(30):
        while await probe() != expected:
            await _next_attempt()
