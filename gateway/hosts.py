"""Hostnames: which routes a request's `Host` selects, before the path matcher runs.

A gateway may list the hostnames it serves (exact, `api.example.com`, or a wildcard,
`*.example.com`, which matches any name ending in `.example.com` but not `example.com`
itself); a path may narrow to some of them. A request's host is its `Host` (or the
authority of an absolute-form target), compared case-insensitively, without the port and
without a trailing dot.

Precedence (as Gateway API's `hostnames`): the routes of the exact host first, then those of
the wildcards that match it, longest suffix first, then the paths that name no hostname;
within each table the path precedence of `wardgate.gateway.matching`. A table whose path
matches but not the method lets the next table try; if none has a route, the first `405`
(else the first table's `404`) answers. Cost: one dict lookup for the exact host and one
per label for the wildcards, whatever the number of hosts.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final, Generic, TypeVar

from wardgate.gateway.matching import (
    Match,
    MatchResult,
    MethodNotAllowed,
    NoRoute,
    RouteEntry,
    Router,
)

T = TypeVar("T")

_LABEL: Final = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME_RE: Final = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")
ANY_HOST: Final = ""
"""The table key of the paths that name no hostname."""


def check_hostname(value: str) -> str:
    """A config hostname: lower-case DNS labels, optionally after `*.`; no port, no dot at
    the end, at most 253 characters."""
    if len(value) > 253 or not _HOSTNAME_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a hostname: lower-case DNS labels (`api.example.com`), or "
            "`*.` and labels (`*.example.com`); no port, scheme or trailing dot"
        )
    if value.startswith("*.") and "." not in value[2:]:
        raise ValueError(f"{value!r}: a wildcard needs at least two labels after `*.`")
    return value


def check_unique_hostnames(values: list[str]) -> list[str]:
    """A list of config hostnames, each at most once."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value} is listed twice")
        seen.add(value)
    return values


def request_host(value: str | None) -> str:
    """The host of a `Host` value: lower case, without port and trailing dot."""
    if not value:
        return ""
    host = value.strip().lower()
    if host.startswith("["):  # an IPv6 literal, `[::1]:8080`
        return host.partition("]")[0] + "]"
    host = host.partition(":")[0]
    return host.removesuffix(".")


def hostname_matches(pattern: str, host: str) -> bool:
    """Whether a config hostname (exact or wildcard) matches a request host."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return pattern == host


def hostname_covers(outer: str, inner: str) -> bool:
    """Whether every host `inner` matches is matched by `outer` (both config hostnames)."""
    if outer == inner:
        return True
    if not outer.startswith("*."):
        return False
    suffix = outer[1:]
    return inner.endswith(suffix) and len(inner.removeprefix("*.")) > len(suffix) - 1


def served_hostnames(requested: Sequence[str], served: Sequence[str]) -> list[str]:
    """The hostnames of `requested` that a gateway serving `served` serves, as Gateway API
    intersects a Route's hostnames with its listener's: a requested hostname within a served
    one stays as it is; otherwise the served hostnames within it replace it
    (`*.example.com` of a gateway serving `a.example.com` is `a.example.com`). The hosts
    matched are exactly those both match; in the order of `requested`, each once. A gateway
    that lists none serves every hostname."""
    if not served:
        return list(dict.fromkeys(requested))
    found: dict[str, None] = {}
    for hostname in requested:
        if any(hostname_covers(outer, hostname) for outer in served):
            found[hostname] = None
        else:
            found.update((inner, None) for inner in served if hostname_covers(hostname, inner))
    return list(found)


class HostTable(Generic[T]):
    """One `Router` per hostname, and the host precedence above."""

    __slots__ = (
        "_exact",
        "_routers",
        "_served",
        "_served_exact",
        "_served_suffixes",
        "_wildcards",
    )

    def __init__(self, routers: dict[str, Router[T]], served: Sequence[str]) -> None:
        self._routers = routers
        self._exact = {k: r for k, r in routers.items() if k and not k.startswith("*.")}
        self._wildcards = {k[1:]: r for k, r in routers.items() if k.startswith("*.")}
        self._served = tuple(served)
        self._served_exact = frozenset(h for h in served if not h.startswith("*."))
        self._served_suffixes = frozenset(h[1:] for h in served if h.startswith("*."))

    @classmethod
    def build(
        cls, entries: Iterable[tuple[Sequence[str] | None, RouteEntry[T]]], served: Sequence[str]
    ) -> HostTable[T]:
        """Tables of `(hostnames or None, entry)`; the routers raise as `Router.build`."""
        grouped: dict[str, list[RouteEntry[T]]] = {}
        for hostnames, entry in entries:
            for key in hostnames or (ANY_HOST,):
                grouped.setdefault(key, []).append(entry)
        routers = {key: Router.build(group) for key, group in grouped.items()}
        return cls(routers, served)

    def serves(self, host: str) -> bool:
        """Whether the gateway serves this host (any host when it lists none)."""
        if not self._served or host in self._served_exact:
            return True
        suffixes = self._served_suffixes
        if suffixes:
            dot = host.find(".")
            while dot > 0:  # a wildcard needs a label before its suffix
                if host[dot:] in suffixes:
                    return True
                dot = host.find(".", dot + 1)
        return False

    def tables(self, host: str) -> list[tuple[str, Router[T]]]:
        """The routers that may serve a host, most specific hostname first."""
        found: list[tuple[str, Router[T]]] = []
        exact = self._exact.get(host)
        if exact is not None:
            found.append((host, exact))
        if self._wildcards:
            dot = host.find(".")
            while dot > 0:
                router = self._wildcards.get(host[dot:])
                if router is not None:
                    found.append(("*" + host[dot:], router))
                dot = host.find(".", dot + 1)
        any_host = self._routers.get(ANY_HOST)
        if any_host is not None:
            found.append((ANY_HOST, any_host))
        return found

    def match(self, method: str, host: str, path: str) -> tuple[MatchResult[T], str | None]:
        """The route for a request, and the hostname key of the table that decided."""
        first: tuple[MatchResult[T], str] | None = None
        for key, router in self.tables(host):
            result = router.match(method, path)
            if isinstance(result, Match):
                return result, key
            if first is None or (
                isinstance(result, MethodNotAllowed) and not isinstance(first[0], MethodNotAllowed)
            ):
                first = (result, key)
        if first is None:
            return NoRoute(()), None
        return first

    def hostnames(self) -> list[str]:
        """The hostnames served (the gateway's, else those paths name)."""
        return list(self._served) or [key for key in self._routers if key]
