"""`wardgate gateway --watch-config NS/NAME --workers 2` against the real API server: the
parent follows the ConfigMap and every worker swaps each new config in place (same
processes, new routes on every worker); a config that fails validation is refused once
and changes nothing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from wardgate.devcluster.cluster import KubeCluster
from wardgate.gateway.delivery import CONFIG_HASH_ANNOTATION, CONFIG_KEY, SECRET_ITEMS_KEY

pytestmark = pytest.mark.cluster

WARDGATE = str(Path(sys.executable).with_name("wardgate"))
SECRET = "workers-watch-secret-0123456789-abcdefg"
CONFIG_MAP = "gw-config"
LISTENING = re.compile(r"listening on (http://\S+).*admin (http://[^)\s]+)")
FRESH_CONNECTIONS = 40


def document(version: str, *, broken: bool = False) -> dict[str, Any]:
    """A config with a path of its own (`/vVERSION`) and a protected path."""
    private: dict[str, Any] = {
        "method": "GET",
        "path": "/private",
        "auth": {"authorizer": "nobody"} if broken else True,
        "response": {"private": True},
    }
    return {
        "authorizer": {
            "type": "jwt",
            "secret": "$secret.keys.JWT_SECRET",
            "algorithm": "HS256",
            "issuer": "https://issuer.example.com",
            "audience": "api-audience",
        },
        "paths": [
            {"method": "GET", "path": f"/v{version}", "response": {"version": version}},
            private,
        ],
    }


def config_map(version: str, **options: bool) -> dict[str, Any]:
    """The ConfigMap as the operator writes it (`wardgate.gateway.delivery`)."""
    text = json.dumps(document(version, **options))
    items = [{"secret": "keys", "key": "JWT_SECRET", "path": "keys.JWT_SECRET"}]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CONFIG_MAP,
            "annotations": {CONFIG_HASH_ANNOTATION: f"hash-{version}"},
        },
        "binaryData": {
            CONFIG_KEY: base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode()
        },
        "data": {SECRET_ITEMS_KEY: json.dumps(items)},
    }


def token() -> str:
    now = int(time.time())
    claims = {
        "iss": "https://issuer.example.com",
        "aud": "api-audience",
        "sub": "u",
        "iat": now,
        "exp": now + 600,
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


@dataclass
class Gateway:
    process: asyncio.subprocess.Process
    url: str
    admin: str
    stderr: list[str] = field(default_factory=list)

    async def admin_json(self, session: aiohttp.ClientSession, path: str) -> Any:
        async with session.get(self.admin + path) as response:
            assert response.status == 200
            return await response.json()

    async def fresh_get(
        self, session: aiohttp.ClientSession, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        # A new connection each time, so that the kernel spreads them over the workers.
        async with session.get(
            self.url + path, headers={**(headers or {}), "Connection": "close"}
        ) as response:
            return response.status, await response.json()


async def apply(cluster: KubeCluster, namespace: str, manifest: dict[str, Any]) -> None:
    await asyncio.to_thread(
        cluster.kubectl, "apply", "-n", namespace, "-f", "-", input=json.dumps(manifest)
    )


async def wait_for(what: str, condition: Any) -> None:
    """Await `condition()` (a coroutine function returning a bool; 60 s at most)."""
    for _ in range(600):
        if await condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not reached within 60 s")


@pytest.fixture
async def gateway(cluster: KubeCluster, namespace: str, tmp_path: Path) -> AsyncIterator[Gateway]:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "keys"},
        "stringData": {"JWT_SECRET": SECRET},
    }
    await apply(cluster, namespace, secret)
    await apply(cluster, namespace, config_map("1"))
    process = await asyncio.create_subprocess_exec(
        WARDGATE,
        "gateway",
        "--watch-config",
        f"{namespace}/{CONFIG_MAP}",
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--workers",
        "2",
        "--port",
        "0",
        "--admin-port",
        "0",
        "--access-log",
        "off",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
    )
    lines: list[str] = []
    found: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()

    async def read() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            lines.append(raw.decode())
            match = LISTENING.search(lines[-1])
            if match and not found.done():
                found.set_result((match.group(1), match.group(2)))
        if not found.done():
            found.set_exception(RuntimeError("gateway exited:\n" + "".join(lines)))

    reader = asyncio.ensure_future(read())
    try:
        url, admin = await asyncio.wait_for(found, 90)
        yield Gateway(process, url, admin, lines)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        with contextlib.suppress(Exception):
            await reader


async def test_every_worker_swaps_each_config_in_place(
    gateway: Gateway, cluster: KubeCluster, namespace: str
) -> None:
    authorized = {"Authorization": f"Bearer {token()}"}
    async with aiohttp.ClientSession() as session:
        first = await gateway.admin_json(session, "/config")
        assert first["hash"] == "hash-1"
        workers = first["workerProcesses"]
        assert [w["configHash"] for w in workers] == ["hash-1", "hash-1"]
        pids = [w["pid"] for w in workers]
        assert (await gateway.fresh_get(session, "/v1"))[0] == 200

        await apply(cluster, namespace, config_map("2"))

        async def all_serve_2() -> bool:
            hash_now = (await gateway.admin_json(session, "/config/hash"))["hash"]
            return bool(hash_now == "hash-2")

        await wait_for("every worker on hash-2", all_serve_2)
        second = await gateway.admin_json(session, "/config")
        # The same processes, each on the new config: swapped in place, not restarted.
        assert [(w["pid"], w["configHash"]) for w in second["workerProcesses"]] == [
            (pid, "hash-2") for pid in pids
        ]
        assert [p["path"] for p in second["config"]["paths"]] == ["/v2", "/private"]
        # Every connection, whichever worker took it, is served by the new config: the
        # old path is gone, the new one and the protected one (its secret read from the
        # Secret) answer; the request IDs of the 404s show both workers answered.
        prefixes: set[str] = set()
        for _ in range(FRESH_CONNECTIONS):
            status, body = await gateway.fresh_get(session, "/v1")
            assert status == 404
            prefixes.add(body["error"]["requestId"].split("-")[0])
            assert await gateway.fresh_get(session, "/v2") == (200, {"version": "2"})
            assert (await gateway.fresh_get(session, "/private", authorized))[0] == 200
        assert len(prefixes) == 2, prefixes

        # A config that fails validation is refused once, by the parent; every worker
        # serves on with the last good one.
        await apply(cluster, namespace, config_map("3", broken=True))

        async def refused() -> bool:
            return any("config hash-3 refused" in line for line in gateway.stderr)

        await wait_for("the refusal of hash-3", refused)
        assert sum("hash-3 refused" in line for line in gateway.stderr) == 1
        third = await gateway.admin_json(session, "/config")
        assert third["hash"] == "hash-2"
        assert [(w["pid"], w["configHash"]) for w in third["workerProcesses"]] == [
            (pid, "hash-2") for pid in pids
        ]
        for _ in range(10):
            assert (await gateway.fresh_get(session, "/v2"))[0] == 200
            assert (await gateway.fresh_get(session, "/v3"))[0] == 404
    gateway.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(60):
        assert await gateway.process.wait() == 0
