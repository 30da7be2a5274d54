"""`wardgate gateway` as a real process: the seed example from a file, the embedded demo,
graceful shutdown under load, `--workers 2`, and the log level."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import jwt
import pytest
from aiohttp import web

from tests.support.jwks_server import JwksServer
from tests.support.tokens import jwks, rsa_key

SEED = """{
  "authorizer": {
    "type": "jwt",
    "secret": "$secret.JWT_SECRET",
    "algorithm": "HS256",
    "issuer": "https://issuer.example.com",
    "audience": "api-audience"
  },
  "paths": [
    { "method": "GET", "path": "/health", "response": { "status": "ok" } },
    {
      "method": "GET",
      "path": "/private/orders",
      "auth": true,
      "integration": { "type": "http_proxy", "server": "orders" }
    }
  ]
}
"""
SECRET = "process-test-secret-0123456789-abcdefghij"
WARDGATE = str(Path(sys.executable).with_name("wardgate"))
LISTENING = re.compile(r"listening on (http://\S+).*admin (http://[^)\s]+)")


def token(secret: str = SECRET) -> str:
    import time

    now = int(time.time())
    return jwt.encode(
        {
            "iss": "https://issuer.example.com",
            "aud": "api-audience",
            "sub": "u",
            "iat": now,
            "exp": now + 600,
        },
        secret,
        algorithm="HS256",
    )


@dataclass
class Upstream:
    url: str
    count: int = 0


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    recorder = Upstream("")

    async def handle(request: web.Request) -> web.Response:
        recorder.count += 1
        await asyncio.sleep(0.005)  # some work, so that requests are in flight at SIGTERM
        return web.json_response({"orders": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    recorder.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield recorder
    await runner.cleanup()


@dataclass
class Gateway:
    process: asyncio.subprocess.Process
    url: str
    admin: str
    stderr: list[str]
    banner: asyncio.Event

    async def wait(self) -> int:
        async with asyncio.timeout(60):
            return await self.process.wait()


Launch = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launch]:
    processes: list[asyncio.subprocess.Process] = []
    readers: list[asyncio.Task[None]] = []

    async def _launch(*args: str, env: dict[str, str] | None = None) -> Gateway:
        process = await asyncio.create_subprocess_exec(
            WARDGATE,
            "gateway",
            "--port",
            "0",
            "--admin-port",
            "0",
            "--access-log",
            str(tmp_path / "access.log"),
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        processes.append(process)
        assert process.stderr is not None
        lines: list[str] = []
        banner = asyncio.Event()
        found: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()

        async def read() -> None:
            assert process.stderr is not None
            async for raw in process.stderr:
                line = raw.decode()
                lines.append(line)
                if "200 with a token" in line:
                    banner.set()
                match = LISTENING.search(line)
                if match and not found.done():
                    found.set_result((match.group(1), match.group(2)))
            if not found.done():
                found.set_exception(RuntimeError("gateway exited:\n" + "".join(lines)))

        readers.append(asyncio.ensure_future(read()))
        url, admin = await asyncio.wait_for(found, 60)
        return Gateway(process, url, admin, lines, banner)

    yield _launch
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()
    # A reader ends when every process holding the gateway's stderr has exited (its
    # workers too): bounded, so that a process left behind fails the test, not hangs it.
    async with asyncio.timeout(60):
        for reader in readers:
            await reader


@pytest.fixture
def config_files(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "gateway.json"
    config.write_text(SEED)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "JWT_SECRET").write_text(SECRET + "\n")
    return config, secrets


async def _ready(session: aiohttp.ClientSession, admin: str) -> None:
    async with session.get(admin + "/readyz") as response:
        assert response.status == 200


async def test_seed_example_from_file(
    launch: Launch, upstream: Upstream, config_files: tuple[Path, Path], tmp_path: Path
) -> None:
    config, secrets = config_files
    gateway = await launch(
        "--config", str(config), "--secrets-dir", str(secrets), "--server", f"orders={upstream.url}"
    )
    async with aiohttp.ClientSession() as session:
        await _ready(session, gateway.admin)
        async with session.get(gateway.url + "/health") as health:
            assert health.status == 200
            assert await health.json() == {"status": "ok"}
        async with session.get(gateway.url + "/private/orders") as denied:
            assert denied.status == 401
            assert (await denied.json())["error"]["code"] == "missing_token"
        assert upstream.count == 0
        headers = {"Authorization": f"Bearer {token()}"}
        async with session.get(gateway.url + "/private/orders", headers=headers) as allowed:
            assert allowed.status == 200
        assert upstream.count == 1
        async with session.get(gateway.admin + "/config") as effective:
            document = await effective.json()
        assert document["config"]["authorizer"]["secret"] == "$secret.JWT_SECRET"
        assert document["secrets"] == ["JWT_SECRET"]
        assert SECRET not in json.dumps(document)
    gateway.process.send_signal(signal.SIGTERM)
    assert await gateway.wait() == 0
    log = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
    assert [entry["status"] for entry in log] == [200, 401, 200]
    assert log[1]["code"] == "missing_token"
    assert all(token().split(".")[2] not in line for line in map(json.dumps, log))


async def test_embedded_demo(launch: Launch) -> None:
    gateway = await launch()
    banner = await _banner(gateway)
    demo_token = re.search(r"Bearer ([\w.-]+)", banner)
    assert demo_token is not None
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.url + "/private/orders") as denied:
            assert denied.status == 401
        headers = {"Authorization": f"Bearer {demo_token.group(1)}"}
        async with session.get(gateway.url + "/private/orders", headers=headers) as allowed:
            assert allowed.status == 200
            assert "orders" in await allowed.json()
    gateway.process.send_signal(signal.SIGTERM)
    assert await gateway.wait() == 0


async def _banner(gateway: Gateway) -> str:
    async with asyncio.timeout(30):
        await gateway.banner.wait()
    return "".join(gateway.stderr)


async def test_invalid_config_never_serves(config_files: tuple[Path, Path], tmp_path: Path) -> None:
    config, _ = config_files
    broken = json.loads(config.read_text())
    broken["paths"][1]["auth"] = {"authorizer": "nope"}
    config.write_text(json.dumps(broken))
    process = await asyncio.create_subprocess_exec(
        WARDGATE,
        "gateway",
        "--config",
        str(config),
        "--port",
        "0",
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "JWT_SECRET"},
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    text = stderr.decode()
    assert "paths.1.auth.authorizer: no authorizer named 'nope'" in text
    assert "listening" not in text


async def test_sigterm_under_load_drains_without_failures(
    launch: Launch, upstream: Upstream, config_files: tuple[Path, Path]
) -> None:
    config, secrets = config_files
    gateway = await launch(
        "--config", str(config), "--secrets-dir", str(secrets), "--server", f"orders={upstream.url}"
    )
    headers = {"Authorization": f"Bearer {token()}"}
    ok = 0
    failures: list[str] = []
    started = asyncio.Event()

    async def load(session: aiohttp.ClientSession) -> None:
        nonlocal ok
        while True:
            try:
                async with session.get(gateway.url + "/private/orders", headers=headers) as r:
                    await r.read()
                    if r.status == 200:
                        ok += 1
                    else:
                        failures.append(f"status {r.status}")
            except aiohttp.ClientConnectorError:
                return  # refused: the gateway no longer accepts connections
            except aiohttp.ClientError as exc:
                failures.append(repr(exc))
                return
            if ok >= 100:
                started.set()

    async with aiohttp.ClientSession() as session:
        await _ready(session, gateway.admin)
        loops = [asyncio.ensure_future(load(session)) for _ in range(16)]
        await asyncio.wait_for(started.wait(), 60)
        before = ok
        gateway.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*loops), 60)
    assert await gateway.wait() == 0
    assert failures == []
    assert ok > before


async def test_two_workers(
    launch: Launch, upstream: Upstream, config_files: tuple[Path, Path]
) -> None:
    config, secrets = config_files
    gateway = await launch(
        "--config",
        str(config),
        "--secrets-dir",
        str(secrets),
        "--server",
        f"orders={upstream.url}",
        "--workers",
        "2",
    )
    headers = {"Authorization": f"Bearer {token()}"}
    async with aiohttp.ClientSession() as session:
        await _ready(session, gateway.admin)
        for _ in range(20):
            # A new connection each time, so that the kernel spreads them over the workers.
            async with session.get(
                gateway.url + "/private/orders", headers={**headers, "Connection": "close"}
            ) as response:
                assert response.status == 200
        async with session.get(gateway.admin + "/metrics") as metrics:
            text = await metrics.text()
        async with session.get(gateway.admin + "/config") as effective:
            assert (await effective.json())["workers"] == 2
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("wardgate_requests_total{") and 'route="/private/orders"' in line
    )
    assert total == 20
    gateway.process.send_signal(signal.SIGTERM)
    assert await gateway.wait() == 0


def _exited(pid: int) -> bool:
    """Whether `pid` has exited (gone, or a zombie its new parent has not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def test_workers_stop_when_their_parent_is_killed(
    launch: Launch, upstream: Upstream, config_files: tuple[Path, Path]
) -> None:
    """A parent killed with SIGKILL (no drain, no signal forwarded) leaves no worker behind
    on the traffic port: each sees its pipe to the parent close and drains and exits."""
    config, secrets = config_files
    gateway = await launch(
        "--config",
        str(config),
        "--secrets-dir",
        str(secrets),
        "--server",
        f"orders={upstream.url}",
        "--workers",
        "2",
    )
    async with aiohttp.ClientSession() as session:
        await _ready(session, gateway.admin)
        async with session.get(gateway.admin + "/config") as effective:
            workers = (await effective.json())["workerProcesses"]
        pids = [int(worker["pid"]) for worker in workers]
        assert len(pids) == 2
        async with session.get(gateway.url + "/health") as health:
            assert health.status == 200
        gateway.process.kill()
        assert await gateway.wait() == -signal.SIGKILL
        # Nothing signals a process's end to a non-parent: poll its state.
        async with asyncio.timeout(30):
            while not all(_exited(pid) for pid in pids):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(gateway.url + "/health")


async def test_log_level(launch: Launch, upstream: Upstream, tmp_path: Path) -> None:
    """`WARDGATE_LOG_LEVEL` (what the operator sets) and `--log-level`, which wins: debug
    adds the JWKS fetches; at warning the info lines go; the request log stays."""
    key = rsa_key()
    idp = await JwksServer(jwks(key)).start()
    config = tmp_path / "jwks.json"
    config.write_text(
        json.dumps(
            {
                "authorizer": {"type": "jwt", "jwksUri": idp.url, "algorithm": "RS256"},
                "servers": {"orders": upstream.url},
                "paths": [
                    {
                        "method": "GET",
                        "path": "/private/orders",
                        "auth": True,
                        "integration": {"type": "http_proxy", "server": "orders"},
                    }
                ],
            }
        )
    )
    headers = {"Authorization": f"Bearer {key.sign({'sub': 'u', 'exp': 2**31})}"}
    try:
        outputs: dict[str, str] = {}
        for name, args, env in [
            ("debug", [], {"WARDGATE_LOG_LEVEL": "debug"}),
            ("warning", ["--log-level", "WARNING"], {"WARDGATE_LOG_LEVEL": "debug"}),
        ]:
            gateway = await launch("--config", str(config), *args, env=env)
            async with aiohttp.ClientSession() as session:
                await _ready(session, gateway.admin)
                async with session.get(gateway.url + "/private/orders", headers=headers) as ok:
                    assert ok.status == 200
            gateway.process.send_signal(signal.SIGTERM)
            assert await gateway.wait() == 0
            outputs[name] = "".join(gateway.stderr)
    finally:
        await idp.stop()
    assert f"jwks fetched: authorizer=default url={idp.url} kids=['rsa-1']" in outputs["debug"]
    assert "draining" in outputs["debug"]
    assert "jwks fetch" not in outputs["warning"]
    assert "draining" not in outputs["warning"]
    assert "listening on" in outputs["warning"]
    log = (tmp_path / "access.log").read_text().splitlines()
    assert [json.loads(line)["status"] for line in log] == [200, 200]


async def test_invalid_log_level_from_the_environment_is_refused(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        WARDGATE,
        "gateway",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "WARDGATE_LOG_LEVEL": "verbose"},
    )
    _, stderr = await process.communicate()
    assert process.returncode == 2
    assert "WARDGATE_LOG_LEVEL='verbose': expected one of debug, info, warning, error" in (
        stderr.decode()
    )
