"""The whole product, once: the seed example applied as Kubernetes objects, the operator
renders it, and a real `wardgate gateway` started from the rendered ConfigMap (with the
Secret's keys laid out as the pod's projected volume would have them) answers real requests
in front of a real upstream.

The kubelet of the local cluster is fake (kwok), so the gateway runs here instead of in the
pod; the `orders` Service's DNS name does not resolve here either, so `--server` points the
rendered `orders` server at the local upstream.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
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
from integration.operator_support import Objects, RunningOperator, install_crds, seed_objects

from wardgate.devcluster.cluster import KubeCluster
from wardgate.operator.manifests import CONFIG_FILE

pytestmark = pytest.mark.cluster

SECRET = "e2e-secret-0123456789-abcdefghijklmnopq"
ISSUER = "https://issuer.example.com"
AUDIENCE = "api-audience"


@pytest.fixture(scope="module")
def rendered(cluster: KubeCluster) -> Iterator[tuple[Objects, str]]:
    """The seed example applied, the Gateway Ready; yields (objects, namespace)."""
    install_crds(cluster)
    objects = Objects(cluster)
    namespace = "e2e-seed"
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl(
        "wait", "--for=create", "serviceaccount/default", "-n", namespace, "--timeout=60s"
    )
    operator = RunningOperator(cluster.kubeconfig).start()
    try:
        orders_service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "orders"},
            "spec": {"selector": {"app": "orders"}, "ports": [{"port": 8080}]},
        }
        objects.apply(namespace, orders_service, *seed_objects(SECRET))
        objects.wait_condition("Gateway", namespace, "api", "Ready", "True", timeout=90)
        yield objects, namespace
    finally:
        operator.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")
        objects.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pod_files(objects: Objects, namespace: str, directory: Path) -> tuple[Path, Path]:
    """Write what the pod would mount: the ConfigMap's config, and each projected Secret key
    under the path the Deployment's projected volume gives it."""
    config_map = objects.get("ConfigMap", namespace, "wardgate-api-config")
    deployment = objects.get("Deployment", namespace, "wardgate-api")
    assert config_map is not None
    assert deployment is not None
    config = directory / CONFIG_FILE
    config.write_bytes(base64.b64decode(config_map["binaryData"][CONFIG_FILE]))
    secrets_dir = directory / "secrets"
    secrets_dir.mkdir()
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    projected = next(v for v in volumes if v["name"] == "secrets")["projected"]
    for source in projected["sources"]:
        secret = objects.get("Secret", namespace, source["secret"]["name"])
        assert secret is not None
        for item in source["secret"]["items"]:
            (secrets_dir / item["path"]).write_bytes(base64.b64decode(secret["data"][item["key"]]))
    return config, secrets_dir


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
    port = _free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


@pytest.fixture
def gateway_process(
    rendered: tuple[Objects, str], upstream: tuple[str, list[dict[str, str]]], tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """`wardgate gateway` on the rendered config; yields (traffic URL, admin URL)."""
    objects, namespace = rendered
    config, secrets_dir = _pod_files(objects, namespace, tmp_path)
    port, admin_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "wardgate", "gateway",
            "--config", str(config),
            "--secrets-dir", str(secrets_dir),
            "--port", str(port),
            "--admin-port", str(admin_port),
            "--server", f"orders={upstream[0]}",
            "--access-log", "off",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "JWT_SECRET"},
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
