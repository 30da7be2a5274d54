"""The HTTP/1.1 framing differential: raw requests sent to Wardgate, nginx and HAProxy, each
in front of its own recording upstream on loopback, and the outcomes compared.

Per case and server, an `Outcome`: the statuses the client received (interim `100`s
included), whether the connection stayed open after them, and the requests the upstream
saw (parsed from the raw bytes it received, by llhttp). Requests are told apart by their
path: every request of a case, smuggled ones included, targets `/public/<case>/<label>`,
so that cases run concurrently and each forwarded request is attributed to its case and
to the request of the case that it is.

Comparison (`compare`) of Wardgate with one peer:
- `agree`: the same requests forwarded (method, label, body);
- `looser`: Wardgate forwarded a request the peer did not, or answered a success (or a
  `100 Continue`) where the peer answered an error;
- `stricter`: the peer forwarded a request Wardgate did not.
A case is looser (a failure) when Wardgate is looser than both peers. Independently, a
boundary mismatch (a failure) is a forwarded request that the client did not send as one
(its label is not among the case's `requests`), a body that differs from what the client
sent, or bytes the upstream could not parse as requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from tests.support.ports import free_port
from wardgate.gateway.errors import code_of_body

# Every request of the corpus targets /public/<case>/<label>.
_ATTRIBUTION: Final = re.compile(rb"/(?:public|secure)/(c\d+)/([a-z0-9]+)")
UPSTREAM_BODY: Final = b"ok"


@dataclass(frozen=True, slots=True)
class Case:
    """One raw exchange of the corpus."""

    name: str
    family: str
    data: bytes
    """The raw bytes sent, with `{c}` standing for the case's path segment."""
    requests: tuple[str, ...] = ()
    """The labels of the requests the client sent as requests (RFC 9112's reading):
    nothing else may reach the upstream."""
    bodies: tuple[tuple[str, bytes], ...] = ()
    """The bodies the client sent (label, body), for the requests whose body is checked."""


@dataclass(frozen=True, slots=True)
class Forwarded:
    """One request as an upstream saw it."""

    method: str
    label: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def key(self) -> tuple[str, str, bytes]:
        return (self.method, self.label, self.body)


@dataclass(slots=True)
class Outcome:
    statuses: list[int] = field(default_factory=list)
    open: bool = False
    forwarded: list[Forwarded] = field(default_factory=list)
    codes: list[str | None] = field(default_factory=list)
    """The catalogue code of each response (Wardgate's JSON error bodies)."""

    def describe(self) -> str:
        sent = [f"{f.method} {f.label} {f.body!r}" for f in self.forwarded]
        state = "open" if self.open else "closed"
        return f"statuses {self.statuses}, {state}, upstream saw {sent}"


class _Recorder(asyncio.Protocol):
    """One upstream connection: parse requests, record them, answer each `200 ok`.

    The parser is deliberately plain (what the proxies send is normalised HTTP/1.1): a
    request line of three parts, `name: value` fields, and a body framed by chunked
    coding or `Content-Length`; anything else is recorded as a parse error."""

    def __init__(self, upstream: RecordingUpstream) -> None:
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None and not self.transport.is_closing():
            try:
                parsed = parse_request(self.buffer)
            except ValueError as exc:
                self.upstream.parse_errors.append(f"{exc}: {self.buffer[:200]!r}")
                self.transport.close()
                return
            if parsed is None:
                return
            method, target, headers, body, used, close = parsed
            self.buffer = self.buffer[used:]
            self.upstream.seen(method, target, headers, body)
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%b"
                % (len(UPSTREAM_BODY), b"" if method == "HEAD" else UPSTREAM_BODY)
            )
            if close:
                self.transport.close()


def parse_request(
    data: bytes,
) -> tuple[str, bytes, tuple[tuple[str, str], ...], bytes, int, bool] | None:
    """One request from the start of `data`: (method, target, headers, body, bytes used,
    whether it asks to close); None when it is not all there yet."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise ValueError("bad request line")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise ValueError("bad header line")
        headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
    fields = {name.lower(): value for name, value in headers}
    position = end + 4
    body = b""
    if "transfer-encoding" in fields:
        if fields["transfer-encoding"].lower() != "chunked" or "content-length" in fields:
            raise ValueError("bad framing")
        while True:
            line_end = data.find(b"\r\n", position)
            if line_end < 0:
                return None
            size = int(data[position:line_end].split(b";")[0], 16)
            position = line_end + 2
            if size == 0:
                trailer_end = data.find(b"\r\n\r\n", position - 2)
                if trailer_end < 0:
                    return None
                position = trailer_end + 4
                break
            if len(data) < position + size + 2:
                return None
            body += data[position : position + size]
            position += size + 2
    elif "content-length" in fields:
        length = int(fields["content-length"])
        if len(data) < position + length:
            return None
        body = data[position : position + length]
        position += length
    close = fields.get("connection", "").lower() == "close"
    return parts[0].decode("latin-1"), parts[1], tuple(headers), body, position, close


class RecordingUpstream:
    """An upstream on 127.0.0.1 that records the requests it parses from raw bytes."""

    def __init__(self) -> None:
        self.by_case: dict[str, list[Forwarded]] = {}
        self.unattributed: list[str] = []
        self.parse_errors: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> RecordingUpstream:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Recorder(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def seen(
        self, method: str, url: bytes, headers: tuple[tuple[str, str], ...], body: bytes
    ) -> None:
        found = _ATTRIBUTION.search(url)
        if found is None:
            self.unattributed.append(f"{method} {url!r}")
            return
        case, label = found.group(1).decode(), found.group(2).decode()
        self.by_case.setdefault(case, []).append(Forwarded(method, label, body, headers))


async def exchange(port: int, data: bytes, *, quiet_seconds: float) -> tuple[list[Response], bool]:
    """Send `data` on a new connection; the responses received and whether the connection
    was still open once nothing more arrived for `quiet_seconds`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    still_open = False
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(data)
            await writer.drain()
        while True:
            try:
                async with asyncio.timeout(quiet_seconds):
                    chunk = await reader.read(65536)
            except TimeoutError:
                still_open = True
                break
            except ConnectionError:
                break
            if not chunk:
                break
            received += chunk
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return parse_responses(received, head=data.startswith(b"HEAD ")), still_open


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


def parse_responses(data: bytes, *, head: bool) -> list[Response]:
    """The responses in `data`, read one after the other (bodies framed by
    `Content-Length`, chunked coding or the end of the data; none after `HEAD`)."""
    responses = []
    while data.startswith(b"HTTP/"):
        end = data.find(b"\r\n\r\n")
        if end < 0:
            break
        lines = data[:end].split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        data = data[end + 4 :]
        body = b""
        if status < 200 or status in (204, 304) or head:
            pass
        elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                line_end = data.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(data[:line_end].split(b";")[0], 16)
                body += data[line_end + 2 : line_end + 2 + size]
                data = data[line_end + 2 + size + 2 :]
                if size == 0:
                    break
        elif b"content-length" in fields:
            length = int(fields[b"content-length"])
            body, data = data[:length], data[length:]
        else:
            body, data = data, b""
        responses.append(Response(status, fields, body))
    return responses


async def run_cases(
    port: int, upstream: RecordingUpstream, cases: Iterable[tuple[str, Case]], *, quiet: float
) -> dict[str, Outcome]:
    """Every case on its own connection, concurrently; their outcomes by case id."""
    items = list(cases)
    results = await asyncio.gather(
        *(
            exchange(port, case.data.replace(b"{c}", case_id.encode()), quiet_seconds=quiet)
            for case_id, case in items
        )
    )
    outcomes: dict[str, Outcome] = {}
    for (case_id, _), (responses, still_open) in zip(items, results, strict=True):
        outcomes[case_id] = Outcome(
            [r.status for r in responses],
            still_open,
            upstream.by_case.get(case_id, []),
            [code_of_body(r.body) for r in responses],
        )
    return outcomes


def _success(statuses: list[int]) -> bool:
    return any(100 <= s < 400 for s in statuses)


def compare(wardgate: Outcome, peer: Outcome) -> str:
    """`agree`, `looser` or `stricter` (Wardgate against one peer); `differ` when each
    forwarded something the other did not."""
    ours = [f.key() for f in wardgate.forwarded]
    theirs = [f.key() for f in peer.forwarded]
    extra = [k for k in ours if k not in theirs]
    missing = [k for k in theirs if k not in ours]
    if extra and missing:
        return "differ"
    if extra:
        return "looser"
    continues = (100 in wardgate.statuses) and (100 not in peer.statuses)
    if continues or (
        _success(wardgate.statuses)
        and not _success(peer.statuses)
        and not wardgate.forwarded
        and peer.statuses
    ):
        return "looser"
    if missing:
        return "stricter"
    return "agree"


def boundary_mismatches(case: Case, outcome: Outcome) -> list[str]:
    """How the forwarded requests differ from the requests the client sent."""
    problems = []
    bodies = dict(case.bodies)
    for forwarded in outcome.forwarded:
        if forwarded.label not in case.requests:
            problems.append(f"{forwarded.method} {forwarded.label}: not a request of the client")
        elif forwarded.label in bodies and forwarded.body != bodies[forwarded.label]:
            problems.append(
                f"{forwarded.method} {forwarded.label}: body {forwarded.body[:80]!r}, "
                f"sent {bodies[forwarded.label][:80]!r}"
            )
    labels = [f.label for f in outcome.forwarded]
    expected_order = [label for label in case.requests if label in labels]
    if labels != expected_order:
        problems.append(f"forwarded in the order {labels}, sent {list(case.requests)}")
    return problems


# --- the peers ------------------------------------------------------------------------

_NGINX_CONF: Final = """
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {work}/body;
  proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fastcgi;
  uwsgi_temp_path {work}/uwsgi;
  scgi_temp_path {work}/scgi;
  client_header_timeout 5s;
  client_body_timeout 5s;
  upstream recorder {{
    server 127.0.0.1:{upstream};
    keepalive 16;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://recorder;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""

_HAPROXY_CONF: Final = """
global
  nbthread 1
  maxconn 1024
  log stderr format raw local0 emerg

defaults
  mode http
  timeout connect 5s
  timeout client 5s
  timeout server 5s
  timeout http-request 5s
  timeout http-keep-alive 5s
  option http-keep-alive

frontend differential
  bind 127.0.0.1:{port}
  default_backend recorder

backend recorder
  server upstream 127.0.0.1:{upstream}
"""


@dataclass
class Peer:
    """nginx or HAProxy, started as a child process in front of a recording upstream."""

    name: str
    port: int
    process: asyncio.subprocess.Process
    workdir: Path

    async def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        try:
            async with asyncio.timeout(10):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


async def _wait_listening(port: int, process: asyncio.subprocess.Process, name: str) -> None:
    async with asyncio.timeout(20):
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)  # polling a port that is not bound yet
                continue
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            return


async def start_nginx(upstream_port: int) -> Peer:
    work = Path(tempfile.mkdtemp(prefix="wardgate-nginx-"))
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(work=work, upstream=upstream_port, port=port))
    process = await asyncio.create_subprocess_exec(
        *["nginx", "-c", str(conf), "-p", str(work), "-e", str(work / "nginx-error.log")],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    peer = Peer("nginx", port, process, work)
    try:
        await _wait_listening(port, process, "nginx")
    except BaseException:
        await peer.stop()
        raise
    return peer


async def start_haproxy(upstream_port: int) -> Peer:
    work = Path(tempfile.mkdtemp(prefix="wardgate-haproxy-"))
    port = free_port()
    conf = work / "haproxy.cfg"
    conf.write_text(_HAPROXY_CONF.format(upstream=upstream_port, port=port))
    process = await asyncio.create_subprocess_exec(
        *["haproxy", "-db", "-f", str(conf)],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    peer = Peer("haproxy", port, process, work)
    try:
        await _wait_listening(port, process, "haproxy")
    except BaseException:
        await peer.stop()
        raise
    return peer
