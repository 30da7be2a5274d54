"""`Router.build(entries, previous)` gives the router a build without `previous` gives:
the same trie (children in the same order), method tables, static paths, route order,
matches, near misses, explanations and errors, after any sequence of changes."""

from __future__ import annotations

import random
from typing import Any

import pytest

from wardgate.gateway.matching import Match, RouteEntry, RouteError, Router

SEGMENTS = ("a", "b", "c", "orders", "{id}", "{x}", "*")
METHOD_SETS = (
    frozenset({"GET"}),
    frozenset({"GET", "POST"}),
    frozenset({"PUT"}),
    frozenset({"DELETE", "PATCH"}),
    None,
)


def random_entry(rng: random.Random, serial: int) -> RouteEntry[int]:
    """A pattern over a few shared segments (so that patterns share trie nodes), with
    parameters and sometimes a wildcard."""
    parts = [rng.choice(SEGMENTS[:-1]) for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.15:
        parts[-1] = "*"
    params = 0
    for position, part in enumerate(parts):
        if part.startswith("{"):
            params += 1
            parts[position] = f"{{v{params}}}"  # parameter names unique within a pattern
    return RouteEntry("/" + "/".join(parts), rng.choice(METHOD_SETS), serial)


def shape(router: Router[int]) -> Any:
    """Everything a router holds, in order."""

    def endpoint(e: Any) -> Any:
        if e is None:
            return None
        return (
            [(r.pattern, r.methods, r.payload) for r in e.routes],
            list(e.by_method.items()) and [(m, r.payload) for m, r in e.by_method.items()],
            e.any_route.payload if e.any_route is not None else None,
            e.allow,
            sorted((m, x.payload) for m, x in e.prebuilt.items()),
            e.prebuilt_any.payload if e.prebuilt_any is not None else None,
        )

    def node(n: Any) -> Any:
        return (
            [(text, node(child)) for text, child in n.literals.items()],
            node(n.param) if n.param is not None else None,
            endpoint(n.endpoint),
            endpoint(n.wildcard),
        )

    return (
        node(router._root),
        list(router._static),
        list(router._endpoints),
        [(r.pattern, r.methods, r.payload) for r in router._routes],
    )


def answers(router: Router[int], rng: random.Random) -> list[Any]:
    out: list[Any] = []
    for _ in range(60):
        path = "/" + "/".join(rng.choice(("a", "b", "c", "orders", "7", "z")) for _ in range(3))
        path = path[: rng.randint(2, len(path))]
        for method in ("GET", "HEAD", "PUT", "OPTIONS"):
            result = router.match(method, path)
            out.append(
                (result.payload, dict(result.params)) if isinstance(result, Match) else result
            )
        out.append([(m.payload, dict(m.params)) for m in router.routes_for_path(path)])
        out.append(router.explain_match("GET", path))
    return out


def build_or_error(entries: list[RouteEntry[int]], previous: Router[int] | None) -> Any:
    try:
        return Router.build(entries, previous)
    except RouteError as exc:
        return (type(exc), str(exc), exc.index)


@pytest.mark.parametrize("seed", range(12))
def test_a_router_built_from_the_previous_one_is_the_router_a_full_build_gives(
    seed: int,
) -> None:
    rng = random.Random(seed)
    serial = 0
    entries: list[RouteEntry[int]] = []
    while len(entries) < 40:
        serial += 1
        candidate = random_entry(rng, serial)
        trial = [*entries, candidate]
        if isinstance(build_or_error(trial, None), Router):
            entries = trial
    previous = Router.build(entries)
    for _ in range(40):
        changed = list(entries)
        action = rng.choice(("add", "remove", "replace", "swap", "duplicate", "many"))
        serial += 1
        if action == "add":
            changed.insert(rng.randrange(len(changed) + 1), random_entry(rng, serial))
        elif action == "remove" and changed:
            del changed[rng.randrange(len(changed))]
        elif action == "replace" and changed:
            index = rng.randrange(len(changed))
            old = changed[index]
            changed[index] = RouteEntry(old.pattern, old.methods, serial)
        elif action == "swap" and len(changed) > 1:
            i, j = rng.sample(range(len(changed)), 2)
            changed[i], changed[j] = changed[j], changed[i]
        elif action == "duplicate" and changed:
            changed.append(changed[rng.randrange(len(changed))])
        else:
            for _ in range(5):
                changed.insert(rng.randrange(len(changed) + 1), random_entry(rng, serial))
                serial += 1
        full = build_or_error(changed, None)
        reused = build_or_error(changed, previous)
        if not isinstance(full, Router):
            assert reused == full  # the same error, with the same positions
            continue
        assert isinstance(reused, Router)
        assert shape(reused) == shape(full)
        check = random.Random(serial)
        assert answers(reused, check) == answers(full, random.Random(serial))
        entries, previous = changed, reused


def test_unchanged_patterns_keep_their_method_tables() -> None:
    entries = [RouteEntry(f"/s/{n}/items/{{id}}", frozenset({"GET"}), n) for n in range(50)]
    first = Router.build(entries)
    added = RouteEntry("/s/new", frozenset({"GET"}), 99)
    second = Router.build([*entries[:10], added, *entries[10:]], first)
    kept = [
        second._endpoints[c] is first._endpoints[c]
        for c in first._endpoints
        if c in second._endpoints
    ]
    assert kept == [True] * 50
    assert second._endpoints["/s/new"] is not None
