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
import time
from typing import Any, BinaryIO

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)


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

    def write(self, entry: dict[str, Any]) -> None:
        """Queue one line; it is written at the end of the current event-loop turn."""
        if self._stream is None:
            return
        self._lines.append(_ENCODER.encode(entry))
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
        lines.append("")
        try:
            self._stream.write("\n".join(lines).encode("utf-8", "backslashreplace"))
            self._stream.flush()
        except (OSError, ValueError):
            # A closed or broken log stream must not take requests down with it.
            self._stream = None


def log_entry(
    *,
    request_id: str,
    method: str,
    path: str,
    route: str | None,
    authorizer: str | None,
    status: int,
    code: str | None,
    started: float,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields of one request's line; `started` is a `time.perf_counter()` value."""
    entry: dict[str, Any] = {
        "ts": round(time.time(), 3),
        "requestId": request_id,
        "method": method,
        "path": path,
        "route": route,
        "authorizer": authorizer,
        "status": status,
        "code": code,
        "latencyMs": round((time.perf_counter() - started) * 1000.0, 3),
    }
    if detail:
        entry["detail"] = detail
    return entry
