"""Identity-provider health: the operator probes the JWKS of every Authorizer that has one,
periodically, and the Authorizer's status reports it (`status.jwks` and the
`IdentityProviderReachable` condition, which `Ready` summarises).

A probe is one GET of the key set, as a gateway would fetch it: reachable means a 200 with
a JSON key set holding at least one key. The status changes only when what it reports
changes (reachability, key IDs, error) or when `lastSuccess` is older than
`refresh_seconds`, so a healthy provider costs one status write per refresh period, not one
per probe.

`with_probe` (pure) folds a probe result into the rendered conditions and fields;
`JwksProber` runs the probes and asks for a reconcile of the Authorizers whose result
changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
from pydantic import ValidationError

from wardgate.gateway.config import (
    ASYMMETRIC_ALGORITHMS,
    Auth0Authorizer,
    JwtAuthorizer,
    SupabaseAuthorizer,
)
from wardgate.operator.conditions import DERIVED, Cond, false, summarise, true
from wardgate.operator.models import AUTHORIZER_SPEC_ADAPTER
from wardgate.operator.render import ObjectKey

log = logging.getLogger(__name__)

CONDITION: Final = "IdentityProviderReachable"
DEFAULT_INTERVAL_SECONDS: Final = 60.0
DEFAULT_TIMEOUT_SECONDS: Final = 5.0
DEFAULT_REFRESH_SECONDS: Final = 600.0
_ERROR_LIMIT: Final = 300
_KIDS_SHOWN: Final = 20


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe of a JWKS URL."""

    uri: str
    reachable: bool
    key_ids: tuple[str, ...] = ()
    error: str | None = None
    last_success: float | None = None
    """Seconds since the epoch of the last successful probe (this one, when reachable)."""

    def same_report(self, other: ProbeResult | None) -> bool:
        """Whether the status would say the same (`last_success` aside)."""
        return other is not None and (self.uri, self.reachable, self.key_ids, self.error) == (
            other.uri,
            other.reachable,
            other.key_ids,
            other.error,
        )

    def status_fields(self) -> dict[str, Any]:
        """`status.jwks` of the Authorizer."""
        return {
            "uri": self.uri,
            "reachable": self.reachable,
            "lastSuccess": _iso(self.last_success) if self.last_success is not None else None,
            "keyIds": list(self.key_ids[:_KIDS_SHOWN]),
            "error": self.error,
        }


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def jwks_uri(spec: Mapping[str, Any]) -> str | None:
    """The JWKS URL an Authorizer's gateways fetch keys from, or None (secret or inline keys
    only, or an invalid spec)."""
    try:
        parsed = AUTHORIZER_SPEC_ADAPTER.validate_python(dict(spec))
    except ValidationError:
        return None
    if isinstance(parsed, Auth0Authorizer):
        return parsed.effective_jwks_uri()
    if isinstance(parsed, SupabaseAuthorizer):
        algorithms = parsed.accepted_algorithms()
        if any(a in ASYMMETRIC_ALGORITHMS for a in algorithms):
            return parsed.effective_jwks_uri()
        return None
    if isinstance(parsed, JwtAuthorizer) and parsed.jwks_uri is not None:
        return str(parsed.jwks_uri)
    return None


def with_probe(
    conditions: Iterable[Cond],
    fields: Mapping[str, Any],
    result: ProbeResult | None,
    uri: str | None = None,
) -> tuple[tuple[Cond, ...], dict[str, Any]]:
    """The Authorizer's rendered conditions and fields with a probe result folded in:
    `IdentityProviderReachable` before `Ready` (and the other derived conditions), which
    are recomputed; `jwks` among the fields. No result for a JWKS `uri` yet (its first
    probe is under way): the condition is Unknown, so the Authorizer is not Ready before
    its keys were seen once (a tool reading Ready would otherwise take a provider that is
    down for healthy until the probe ends). Nothing to probe, or probing off: unchanged."""
    rendered = [c for c in conditions if c.type not in DERIVED]
    merged = dict(fields)
    if result is None:
        if uri is not None:
            rendered.append(Cond(CONDITION, "Unknown", "Pending", f"first probe of {uri}"))
        return summarise(rendered), merged
    if result.reachable:
        reachable = true(
            CONDITION, "JwksReachable", f"{result.uri} serves {len(result.key_ids)} key(s)"
        )
    else:
        reachable = false(CONDITION, "JwksUnreachable", f"{result.uri}: {result.error}")
    rendered.append(reachable)
    merged["jwks"] = result.status_fields()
    return summarise(rendered), merged


async def probe_jwks(
    session: aiohttp.ClientSession, uri: str, limit_seconds: float, now: float
) -> ProbeResult:
    """GET the key set once, within `limit_seconds`."""
    try:
        async with session.get(
            uri,
            timeout=aiohttp.ClientTimeout(total=limit_seconds),
            allow_redirects=False,
            headers={"Accept": "application/json"},
        ) as response:
            if response.status != 200:
                return ProbeResult(uri, False, error=f"HTTP {response.status}")
            body = await response.read()
    except TimeoutError:
        return ProbeResult(uri, False, error=f"no answer within {limit_seconds:g}s")
    except aiohttp.ClientError as exc:
        return ProbeResult(uri, False, error=(str(exc) or type(exc).__name__)[:_ERROR_LIMIT])
    try:
        document = json.loads(body)
    except ValueError:
        return ProbeResult(uri, False, error="the response is not JSON")
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        return ProbeResult(uri, False, error="the response is not a key set (no `keys` array)")
    if not keys:
        return ProbeResult(uri, False, error="the key set is empty")
    kids = tuple(
        sorted({k["kid"] for k in keys if isinstance(k, dict) and isinstance(k.get("kid"), str)})
    )
    return ProbeResult(uri, True, key_ids=kids, last_success=now)


@dataclass
class JwksProber:
    """Probes every target each `interval` seconds; `on_change(key)` when an Authorizer's
    report changed (or its `lastSuccess` needs refreshing)."""

    interval: float
    on_change: Callable[[ObjectKey], None]
    session: Callable[[], aiohttp.ClientSession]
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    refresh: float = DEFAULT_REFRESH_SECONDS
    clock: Callable[[], float] = time.time
    results: dict[ObjectKey, ProbeResult] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def result(self, key: ObjectKey, uri: str | None) -> ProbeResult | None:
        """The latest result for an Authorizer, if it is for its current URL; a missing one
        makes the next probe round start now."""
        found = self.results.get(key)
        if uri is None:
            return None
        if found is None or found.uri != uri:
            self._wake.set()
            return None
        return found

    async def probe_all(self, targets: Mapping[ObjectKey, str]) -> None:
        """One round: probe every target concurrently; record and report changes."""
        for key in [k for k in self.results if k not in targets]:
            del self.results[key]
        keys = list(targets)
        now = self.clock()
        probed = await asyncio.gather(
            *(probe_jwks(self.session(), targets[k], self.timeout, now) for k in keys)
        )
        for key, result in zip(keys, probed, strict=True):
            previous = self.results.get(key)
            if not result.reachable and previous is not None and previous.uri == result.uri:
                result = ProbeResult(
                    result.uri, False, previous.key_ids, result.error, previous.last_success
                )
            stale = (
                previous is not None
                and result.reachable
                and previous.last_success is not None
                and now - previous.last_success >= self.refresh
            )
            if result.same_report(previous) and not stale:
                continue
            if previous is None or previous.reachable != result.reachable:
                level = logging.INFO if result.reachable else logging.WARNING
                log.log(level, "jwks %s/%s %s: %s", *key, result.uri, result.error or "reachable")
            self.results[key] = result
            self.on_change(key)

    async def run(self, targets: Callable[[], Mapping[ObjectKey, str]]) -> None:
        """Probe forever: every `interval`, or at once when a new target shows up."""
        while True:
            self._wake.clear()
            try:
                await self.probe_all(targets())
            except Exception:  # a bug here must not stop the probes for good
                log.exception("jwks probe round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
