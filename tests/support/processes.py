"""`wardgate gateway` as a real process for the reliability suites: launched with a config
file and a secrets directory, its stdout (request log) and stderr captured in full."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

WARDGATE = str(Path(sys.executable).with_name("wardgate"))
LISTENING = re.compile(r"listening on http://[^:\s]+:(\d+).*admin (http://[^)\s]+)")


@dataclass
class GatewayProcess:
    process: asyncio.subprocess.Process
    port: int
    admin: str
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self, session: aiohttp.ClientSession) -> None:
        async with asyncio.timeout(30):
            while True:
                async with session.get(self.admin + "/readyz") as response:
                    if response.status == 200:
                        return
                await asyncio.sleep(0.02)

    async def wait(self) -> int:
        async with asyncio.timeout(60):
            code = await self.process.wait()
            await asyncio.gather(*self.readers)
        return code

    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)


def write_files(
    config: dict[str, Any], secrets: dict[str, str], directory: Path
) -> tuple[Path, Path]:
    """The config file and the secrets directory (one file per secret) under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / "gateway.json"
    config_file.write_text(json.dumps(config))
    secrets_dir = directory / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    for name, value in secrets.items():
        (secrets_dir / name).write_text(value)
    return config_file, secrets_dir


async def launch_gateway(
    config: dict[str, Any],
    secrets: dict[str, str],
    directory: Path,
    *args: str,
    port: int = 0,
    listen_socket: socket.socket | None = None,
) -> GatewayProcess:
    """Write the config and secrets under `directory` and start a gateway on them (on
    `listen_socket`, inherited, when given)."""
    config_file, secrets_dir = write_files(config, secrets, directory)
    inherited: tuple[int, ...] = ()
    if listen_socket is not None:
        inherited = (listen_socket.fileno(),)
        args = (*args, "--listen-fd", str(listen_socket.fileno()))
    process = await asyncio.create_subprocess_exec(
        WARDGATE,
        "gateway",
        "--config",
        str(config_file),
        "--secrets-dir",
        str(secrets_dir),
        "--port",
        str(port),
        "--admin-port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("WARDGATE_")},
        pass_fds=inherited,
    )
    found: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
    stdout: list[str] = []
    stderr: list[str] = []

    async def read(stream: asyncio.StreamReader | None, lines: list[str]) -> None:
        assert stream is not None
        async for raw in stream:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            match = LISTENING.search(line)
            if match and not found.done():
                found.set_result((int(match.group(1)), match.group(2)))
        if lines is stderr and not found.done():
            found.set_exception(RuntimeError("gateway exited:\n" + "".join(stderr)))

    readers = [
        asyncio.ensure_future(read(process.stdout, stdout)),
        asyncio.ensure_future(read(process.stderr, stderr)),
    ]
    try:
        bound_port, admin = await asyncio.wait_for(found, 60)
    except BaseException:
        if process.returncode is None:
            process.kill()
        await process.wait()
        raise
    return GatewayProcess(process, bound_port, admin, stdout, stderr, readers)


async def kill_all(processes: list[GatewayProcess]) -> None:
    for gateway in processes:
        if gateway.process.returncode is None:
            gateway.process.kill()
            await gateway.process.wait()
        await asyncio.gather(*gateway.readers, return_exceptions=True)
