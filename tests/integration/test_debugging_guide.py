"""`docs/debugging-401.md` runs as shown: every console block's commands are executed and
their output compared with the guide's, up to the volatile values listed in `VOLATILE`.

The guide's HTML comments drive this test (see the comment at the top of the guide):
`guide: file NAME` writes the next code block to NAME in a scratch directory;
`guide: gateway` starts the next block's command as the gateway (on free ports, which are
then substituted for 8080 and 9901 in the commands); `guide: not run: REASON` shows a
command that is not run. Every other ```console block is run, one `$ ` line at a time,
with bash, in the scratch directory, with `JWT_SECRET` and `TOKEN` set.

With WARDGATE_REGENERATE_GUIDE=1 the test writes the actual outputs into the guide
instead of comparing them; review the diff."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import pytest

from tests.support.jwks_server import JwksServer
from tests.support.tokens import jwks, rsa_key
from wardgate.gateway.errors import CATALOGUE

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "debugging-401.md"
ERRORS = REPO / "docs" / "errors.md"
REGENERATE = os.environ.get("WARDGATE_REGENERATE_GUIDE") == "1"
SECRET = "wardgate-demo-secret-change-me-0123456789"
JWKS_ADDRESS = "127.0.0.1:8081"
TRAFFIC, ADMIN = "localhost:8080", "localhost:9901"
LISTENING = re.compile(r"listening on http://\S+?:(\d+) \(admin http://\S+?:(\d+)\)")

# The failing request's token: fixed claims and secret, so the same bytes every run.
TOKEN = jwt.encode(
    {
        "iss": "https://issuer.example.com",
        "aud": "api-audience",
        "sub": "user-1",
        "iat": 1748778300,  # 2025-06-01T11:45:00Z
        "exp": 1748779200,  # 2025-06-01T12:00:00Z
    },
    SECRET,
    algorithm="HS256",
)

# Values that differ from run to run, replaced in the expected and the actual output.
VOLATILE: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r'"requestId":"[^"]*"'), '"requestId":"<id>"'),
    (re.compile(r'"(ts|latencyMs|now|deltaSeconds)":[0-9.e+-]+'), r'"\1":<n>'),
    (re.compile(r'"actual":\d{10}(\.\d+)?'), '"actual":<n>'),
    (re.compile(r'"(lastSuccess|lastAttempt|expiresAt)": [0-9.]+'), r'"\1": <n>'),
]
# Only for commands on the machine's clock (no `--at`).
VOLATILE_CLOCK: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^(clock\s+)\S+ \(system clock\)$", re.M), r"\1<now> (system clock)"),
    (re.compile(r"clock \S+Z \([0-9.]+\)"), "clock <now>"),
    (re.compile(r"(expired|expires in) [0-9dhms.]+"), r"\1 <duration>"),
]

MARKER = re.compile(
    r"<!-- guide: (file (?P<file>\S+)|(?P<gateway>gateway)|not run: (?P<why>.+?)) -->"
)


@dataclass
class Command:
    line: int
    """Index in the guide's lines of the `$ ` line."""
    text: str
    output: list[str]


@dataclass
class Block:
    lang: str
    start: int
    """Index of the first line inside the fence."""
    end: int
    """Index of the closing fence."""
    lines: list[str]
    marker: re.Match[str] | None
    commands: list[Command] = field(default_factory=list)


def parse_guide(text: str) -> list[Block]:
    """The fenced blocks, each with the marker comment on the line before its fence."""
    lines = text.split("\n")
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("```") and line != "```":
            marker = MARKER.fullmatch(lines[index - 1]) if index else None
            end = lines.index("```", index + 1)
            block = Block(line[3:], index + 1, end, lines[index + 1 : end], marker)
            if block.lang == "console":
                for offset, body in enumerate(block.lines):
                    if body.startswith("$ "):
                        block.commands.append(Command(block.start + offset, body[2:], []))
                    else:
                        assert block.commands, f"line {block.start + offset + 1}: output first"
                        block.commands[-1].output.append(body)
            blocks.append(block)
            index = end
        index += 1
    return blocks


def normalise(text: str, *, system_clock: bool) -> str:
    for pattern, replacement in VOLATILE + (VOLATILE_CLOCK if system_clock else []):
        text = pattern.sub(replacement, text)
    return "\n".join(line.rstrip() for line in text.strip("\n").split("\n"))


def test_guide_markers_are_understood() -> None:
    """Every marker is attached to a block; the runnable blocks are plentiful; every code
    of the catalogue is linked to its anchor in docs/errors.md."""
    text = GUIDE.read_text()
    blocks = parse_guide(text)
    assert len(MARKER.findall(text)) == sum(1 for b in blocks if b.marker is not None)
    assert "<!-- guide:" not in MARKER.sub("", text)
    run = [b for b in blocks if b.lang == "console" and b.marker is None]
    assert sum(len(b.commands) for b in run) >= 8
    anchors = set(re.findall(r"^## `([a-z_]+)`$", ERRORS.read_text(), re.M))
    for entry in CATALOGUE:
        assert entry.code in anchors
        assert f"(errors.md#{entry.code})" in text, entry.code


@pytest.fixture
async def partners_jwks() -> AsyncIterator[JwksServer]:
    server = await JwksServer(jwks(rsa_key("partners-2025-06"))).start()
    yield server
    await server.stop()


async def run(command: str, cwd: Path, env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-o",
        "pipefail",
        "-c",
        command,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    stdout, _ = await process.communicate()
    return stdout.decode()


async def start_gateway(
    command: str, cwd: Path, env: dict[str, str]
) -> tuple[asyncio.subprocess.Process, str, str]:
    """Start the guide's gateway command on free ports; its traffic and admin ports once it
    says it is listening."""
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        f"exec {command} --port 0 --admin-port 0",
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    seen: list[str] = []
    async with asyncio.timeout(60):
        while True:
            line = (await process.stderr.readline()).decode()
            assert line, f"the gateway exited: {''.join(seen)}"
            seen.append(line)
            found = LISTENING.search(line)
            if found is not None:
                return process, found.group(1), found.group(2)


async def test_guide_commands_run_as_shown(tmp_path: Path, partners_jwks: JwksServer) -> None:
    text = GUIDE.read_text()
    blocks = parse_guide(text)
    lines = text.split("\n")
    jwks_address = f"127.0.0.1:{partners_jwks.port}"
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "JWT_SECRET": SECRET,
        "TOKEN": TOKEN,
    }
    env.pop("WARDGATE_REGENERATE_GUIDE", None)
    # Guide text -> this run, in files and commands; reversed in outputs.
    substitutions = {JWKS_ADDRESS: jwks_address}
    gateway: asyncio.subprocess.Process | None = None
    replaced: list[tuple[Command, list[str]]] = []
    mismatches: list[str] = []
    try:
        for block in blocks:
            marker = block.marker
            if marker is not None and marker.group("file"):
                content = "\n".join(block.lines) + "\n"
                for guide_value, real in substitutions.items():
                    content = content.replace(guide_value, real)
                (tmp_path / marker.group("file")).write_text(content)
                continue
            if block.lang != "console" or (marker is not None and marker.group("why")):
                continue
            if marker is not None and marker.group("gateway"):
                assert gateway is None, "one gateway per guide"
                (command,) = block.commands
                gateway, port, admin = await start_gateway(command.text, tmp_path, env)
                substitutions[TRAFFIC] = f"localhost:{port}"
                substitutions[ADMIN] = f"localhost:{admin}"
                continue
            for command in block.commands:
                shell = command.text
                for guide_value, real in substitutions.items():
                    shell = shell.replace(guide_value, real)
                output = await run(shell, tmp_path, env)
                for guide_value, real in substitutions.items():
                    output = output.replace(real, guide_value)
                actual = output.rstrip("\n").split("\n") if output.strip() else []
                replaced.append((command, actual))
                system_clock = "--at" not in command.text
                expected_text = normalise("\n".join(command.output), system_clock=system_clock)
                actual_text = normalise(output, system_clock=system_clock)
                if expected_text != actual_text:
                    mismatches.append(
                        f"$ {command.text}\n--- guide\n{expected_text}\n--- actual\n{actual_text}"
                    )
    finally:
        if gateway is not None and gateway.returncode is None:
            gateway.terminate()
            await gateway.wait()

    if REGENERATE:
        for command, actual in sorted(replaced, key=lambda item: -item[0].line):
            start = command.line + 1
            lines[start : start + len(command.output)] = actual
        GUIDE.write_text("\n".join(lines))
        return
    assert not mismatches, "\n\n".join(mismatches)
