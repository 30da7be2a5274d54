"""Render with a `RenderCache` (per-Route fragments reused, the config check of what it
already passed skipped) returns what a render from scratch returns, after every change of
a sequence: Routes added, edited and deleted, a conflict appearing and going, an Authorizer
or a Secret changing, a delegation or a namespace's labels changing, a Service appearing.
And it reuses: after one Route changes, only that Route is rendered again."""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from tests.golden.test_render_golden import CASES, run_case
from wardgate.operator.conditions import Cond
from wardgate.operator.inputs import meta_from_body, resource_from_body, secret_from_body
from wardgate.operator.render import (
    ObjectKey,
    RenderCache,
    RenderResult,
    SecretInfo,
    render,
)

PLATFORM = "platform"
GATEWAY_KEY = (PLATFORM, "shared")
TEAMS = ("team-a", "team-b")


def _gateway_spec(delegated: Mapping[str, list[str]]) -> dict[str, Any]:
    return {
        "defaultAuthorizer": "corp",
        "allowedRoutes": {"namespaces": {"from": "All"}},
        "servers": {
            "api": {
                "service": {"name": "api", "port": 8080},
                "allowedRoutes": {"namespaces": {"from": "All"}},
            },
            "edge": {"url": "https://edge.example.com"},
        },
        "delegations": [{"namespace": ns, "paths": paths} for ns, paths in delegated.items()],
        "authPolicy": {"requiredScopes": ["api"]},
    }


def _route(namespace: str, name: str, created: int, paths: list[str], **extra: Any) -> Any:
    return {
        "metadata": {
            "namespace": namespace,
            "name": name,
            "uid": f"{namespace}/{name}",
            "generation": extra.pop("generation", 1),
            "creationTimestamp": f"2026-01-01T00:{created // 60:02d}:{created % 60:02d}Z",
        },
        "spec": {
            "gatewayRef": {"name": "shared", "namespace": PLATFORM},
            "paths": [
                {
                    "method": ["GET", "POST"] if i % 2 else "GET",
                    "path": path,
                    "auth": extra.get("auth", True),
                    "integration": {"type": "http_proxy", "server": extra.get("server", "api")},
                }
                for i, path in enumerate(paths)
            ],
        },
    }


@dataclass
class World:
    """The inputs of one Gateway's render, as bodies (each change makes new objects, as the
    informers do)."""

    delegated: dict[str, list[str]] = field(
        default_factory=lambda: {"team-a": ["/a/*"], "team-b": ["/b/*"]}
    )
    routes: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    authorizers: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    services: set[ObjectKey] = field(default_factory=set)
    created: dict[ObjectKey, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.set_authorizer("corp", "KEY")
        self.set_secret("keys", "k" * 40)

    def set_authorizer(self, name: str, key: str) -> None:
        self.authorizers[name] = {
            "metadata": {"namespace": PLATFORM, "name": name, "uid": name},
            "spec": {"type": "jwt", "secret": f"$secret.{key}", "secretRef": {"name": "keys"}},
        }

    def set_secret(self, name: str, value: str) -> None:
        self.secrets[name] = {
            "metadata": {"namespace": PLATFORM, "name": name},
            "stringData": {"KEY": value},
        }

    def add_route(self, namespace: str, name: str, paths: list[str], **extra: Any) -> None:
        self.created[(namespace, name)] = created = len(self.created) + 1
        self.routes[(namespace, name)] = _route(namespace, name, created, paths, **extra)

    def edit_route(self, namespace: str, name: str, paths: list[str], **extra: Any) -> None:
        generation = self.routes[(namespace, name)]["metadata"]["generation"] + 1
        created = self.created[(namespace, name)]
        body = _route(namespace, name, created, paths, generation=generation, **extra)
        self.routes[(namespace, name)] = body

    def render(self, cache: RenderCache | None) -> RenderResult:
        gateway = resource_from_body(
            {
                "metadata": {"namespace": PLATFORM, "name": "shared", "uid": "g"},
                "spec": _gateway_spec(self.delegated),
            }
        )
        secrets: Mapping[ObjectKey, SecretInfo] = {
            meta_from_body(b).key: secret_from_body(b) for b in self.secrets.values()
        }
        services: Collection[ObjectKey] = set(self.services)
        return render(
            GATEWAY_KEY,
            gateway,
            [resource_from_body(b) for b in self.routes.values()],
            [resource_from_body(b) for b in self.authorizers.values()],
            secrets,
            {ns: dict(labels) for ns, labels in self.labels.items()},
            services,
            cache=cache,
        )


def _same(world: World, cache: RenderCache) -> RenderResult:
    """Render with the cache and from scratch; both must be equal in every field."""
    cached = world.render(cache)
    fresh = world.render(None)
    assert cached == fresh
    assert cached.config_json == fresh.config_json
    assert cached.config == fresh.config
    return cached


def _populated(count: int = 12) -> World:
    world = World()
    for i in range(count):
        world.add_route(PLATFORM, f"own-{i}", [f"/own/{i}", f"/own/{i}/{{id}}"])
    world.add_route("team-a", "orders", ["/a/orders", "/a/orders/{id}"])
    world.add_route("team-b", "billing", ["/b/billing"])
    return world


def _accepted(result: RenderResult, name: str) -> Cond:
    status = next(s for s in result.routes if s.meta.name == name)
    return next(c for c in status.conditions if c.type == "Accepted")


def test_one_route_edited_is_the_only_one_rendered_again() -> None:
    world = _populated()
    cache = RenderCache()
    first = _same(world, cache)
    assert first.config is not None
    assert cache.rendered == len(world.routes)
    world.edit_route(PLATFORM, "own-3", ["/own/3", "/own/3/changed"])
    second = _same(world, cache)
    assert cache.rendered == 1
    assert cache.reused == len(world.routes) - 1
    assert second.config_hash != first.config_hash
    assert second.config is not None
    assert "/own/3/changed" in [p.path for p in second.config.paths]


def test_adding_and_deleting_routes() -> None:
    world = _populated()
    cache = RenderCache()
    _same(world, cache)
    world.add_route(PLATFORM, "new", ["/new"])
    _same(world, cache)
    assert cache.rendered == 1
    del world.routes[(PLATFORM, "own-0")]
    result = _same(world, cache)
    assert cache.rendered == 0
    assert "own-0" not in [s.meta.name for s in result.routes]
    world.routes.clear()
    empty = _same(world, cache)
    assert empty.config is not None
    assert not empty.config.paths


def test_a_conflict_appearing_and_going() -> None:
    world = _populated()
    cache = RenderCache()
    _same(world, cache)
    # A newer Route claims a path of an older one: refused while the older one exists.
    world.add_route(PLATFORM, "late", ["/own/5", "/late"])
    result = _same(world, cache)
    assert _accepted(result, "late").reason == "Conflict"
    # The older one gives the path up: the newer one is accepted, rendered from its
    # cached fragment (only the claims changed).
    world.edit_route(PLATFORM, "own-5", ["/own/5-moved"])
    result = _same(world, cache)
    assert cache.rendered == 1
    assert _accepted(result, "late").ok
    # A duplicate within one Route, and the older Route claiming it back.
    world.edit_route(PLATFORM, "late", ["/late", "/late"])
    _same(world, cache)
    world.edit_route(PLATFORM, "own-5", ["/own/5"])
    _same(world, cache)
    del world.routes[(PLATFORM, "own-5")]
    _same(world, cache)


def test_an_authorizer_or_a_secret_changing() -> None:
    world = _populated()
    cache = RenderCache()
    first = _same(world, cache)
    # A Secret rotated: a new hash, every fragment reused.
    world.set_secret("keys", "r" * 40)
    rotated = _same(world, cache)
    assert rotated.config_hash != first.config_hash
    assert cache.rendered == 0
    # The Authorizer names a key the Secret lacks: not ready, the Routes using it refused.
    world.set_authorizer("corp", "MISSING")
    broken = _same(world, cache)
    assert _accepted(broken, "own-0").reason == "AuthorizerNotReady"
    # And back.
    world.set_authorizer("corp", "KEY")
    assert _same(world, cache).config_hash == rotated.config_hash
    # The Secret gone, then back.
    del world.secrets["keys"]
    _same(world, cache)
    world.set_secret("keys", "r" * 40)
    assert _same(world, cache).config_hash == rotated.config_hash
    # A second Authorizer appears (the Gateway-wide part of the config changes only once a
    # Route uses it), then a Route uses it.
    world.set_authorizer("other", "KEY")
    _same(world, cache)
    world.add_route(PLATFORM, "other-user", ["/other"], auth={"authorizer": "other"})
    _same(world, cache)


def test_a_delegation_labels_or_a_service_changing() -> None:
    world = _populated()
    cache = RenderCache()
    _same(world, cache)
    # team-b loses its delegation: its Route is refused; then it gets it back.
    world.delegated = {"team-a": ["/a/*"]}
    result = _same(world, cache)
    assert _accepted(result, "billing").reason == "PathNotDelegated"
    world.delegated = {"team-a": ["/a/*"], "team-b": ["/b/*"]}
    assert _accepted(_same(world, cache), "billing").ok
    # A namespace's labels change: only that namespace's Routes are rendered again.
    world.labels["team-a"] = {"team": "a"}
    _same(world, cache)
    assert cache.rendered == 1
    # The Service behind the `api` server appears: ResolvedRefs changes for its Routes.
    world.services.add((PLATFORM, "api"))
    result = _same(world, cache)
    assert all(c.ok for s in result.routes for c in s.conditions if c.type == "ResolvedRefs")
    # An unrelated Service changes nothing.
    world.services.add((PLATFORM, "unrelated"))
    _same(world, cache)
    assert cache.rendered == 0


def test_random_sequences_of_changes() -> None:
    """Many random changes, each checked against a render from scratch."""
    generator = random.Random(17)
    world = _populated(30)
    cache = RenderCache()
    names = [key for key in world.routes]
    for step in range(150):
        choice = generator.random()
        namespace, name = generator.choice(names)
        if choice < 0.35:
            # An edit, possibly into a conflict with another Route or out of it.
            target = generator.randrange(40)
            if (namespace, name) not in world.routes:
                world.add_route(namespace, name, ["/x"])
            prefix = {"team-a": "/a", "team-b": "/b"}.get(namespace, "/own")
            world.edit_route(namespace, name, [f"{prefix}/{target}", f"{prefix}/s{step}"])
        elif choice < 0.5:
            world.routes.pop((namespace, name), None)
        elif choice < 0.65:
            world.add_route(namespace, f"{name}-{step}", [f"/own/{generator.randrange(40)}"])
            names.append((namespace, f"{name}-{step}"))
        elif choice < 0.72:
            world.set_secret("keys", generator.choice(["k", "r", "s"]) * 40)
        elif choice < 0.78:
            world.set_authorizer("corp", generator.choice(["KEY", "KEY", "MISSING"]))
        elif choice < 0.84:
            paths = generator.choice([["/b/*"], ["/b/billing"], []])
            world.delegated = {"team-a": ["/a/*"], **({"team-b": paths} if paths else {})}
        elif choice < 0.9:
            world.services ^= {(PLATFORM, "api")}
        else:
            world.labels["team-b"] = {"step": str(step)}
        _same(world, cache)


def test_golden_cases_render_the_same_with_a_cache() -> None:
    """Every golden case, rendered into a cache and again from it."""
    for case_path in sorted(CASES.glob("*.in.yaml")):
        case = yaml.safe_load(case_path.read_text(encoding="utf-8"))
        cache = RenderCache()
        expected = run_case(case)
        assert run_case(case, cache) == expected, case_path.name
        assert run_case(case, cache) == expected, case_path.name
        assert cache.rendered == 0, case_path.name
