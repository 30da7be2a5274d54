"""The request log: one JSON line per request, written without blocking the request path.

Each line holds the request ID, method, normalised path (never the query string, which may
carry credentials), route pattern, authorizer, error code, status and latency. A denial adds
the `GatewayError` detail (expected versus actual: issuer, audience, `kid`, clock), which
the authorizers build without signatures or secrets.

Lines are buffered and written once per turn of the event loop, so a burst of requests
costs one `write` call; `flush` runs at shutdown.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any, BinaryIO, Final

_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)
_TOKEN_RE: Final = re.compile(r"[A-Z]{1,16}")
# Writes up to PIPE_BUF bytes to a pipe are atomic, so the lines of several workers sharing
# one stdout never interleave mid-line.
_WRITE_LIMIT: Final = 4096


class RequestLog:
    """Writes request log lines to a binary stream (stdout by default); None discards."""

    __slots__ = ("_lines", "_scheduled", "_stream")

    def __init__(self, stream: BinaryIO | None) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._scheduled = False

    @property
    def enabled(self) -> bool:
        return self._stream is not None

    def write(self, line: str) -> None:
        """Queue one line (without its newline); it is written at the end of the current
        event-loop turn."""
        if self._stream is None:
            return
        self._lines.append(line)
        if not self._scheduled:
            self._scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        """Write every queued line."""
        self._scheduled = False
        if not self._lines or self._stream is None:
            return
        lines, self._lines = self._lines, []
        stream = self._stream
        try:
            batch: list[bytes] = []
            size = 0
            for line in lines:
                data = line.encode("utf-8", "backslashreplace") + b"\n"
                if size + len(data) > _WRITE_LIMIT and batch:
                    stream.write(b"".join(batch))
                    stream.flush()
                    batch, size = [], 0
                batch.append(data)
                size += len(data)
            stream.write(b"".join(batch))
            stream.flush()
        except (OSError, ValueError):
            # A closed or broken log stream must not take requests down with it.
            self._stream = None


def format_entry(
    *,
    request_id: str,
    method: str,
    path: str,
    route_json: str,
    authorizer_json: str,
    status: int,
    code: str | None,
    started: float,
    detail: dict[str, Any] | None = None,
    trusted_path: bool = True,
) -> str:
    """One request's line. `route_json` and `authorizer_json` are JSON values computed once
    per route; a trusted path (one returned by `normalise_path`), the request ID (checked or
    generated), the method (an HTTP token) and the code need no escaping, so the common line
    is built without the JSON encoder."""
    if not trusted_path or not _TOKEN_RE.fullmatch(method):
        path = _ENCODER.encode(path)[1:-1]
        method = _ENCODER.encode(method)[1:-1]
    code_json = "null" if code is None else f'"{code}"'
    line = (
        f'{{"ts":{time.time():.3f},"requestId":"{request_id}","method":"{method}",'
        f'"path":"{path}","route":{route_json},"authorizer":{authorizer_json},'
        f'"status":{status},"code":{code_json},'
        f'"latencyMs":{(time.perf_counter() - started) * 1000.0:.3f}'
    )
    if detail:
        return f'{line},"detail":{_ENCODER.encode(detail)}}}'
    return line + "}"


def json_value(value: str | None) -> str:
    """A string (or null) as JSON, for `format_entry`."""
    return _ENCODER.encode(value)


class RateLimit:
    """At most `per_second` events a second (a window per whole second), counting the
    events turned away in between."""

    __slots__ = ("_count", "_per_second", "_suppressed", "_window")

    def __init__(self, per_second: int) -> None:
        self._per_second = per_second
        self._window = -1
        self._count = 0
        self._suppressed = 0

    def admit(self, now: float) -> int | None:
        """None when the event is turned away; else how many were turned away since the
        last admitted one."""
        window = int(now)
        if window != self._window:
            self._window, self._count = window, 0
        if self._count >= self._per_second:
            self._suppressed += 1
            return None
        self._count += 1
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed
