"""A config reloaded in place reuses what did not change (validated path entries, compiled
routes, authorizers with their caches) and serves exactly what a fresh full load serves."""

from __future__ import annotations

import copy
import datetime
import pickle
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.certificates import new_authority
from tests.support.tokens import AUDIENCE, HS_SECRET, ISSUER, claims, hs_token
from wardgate.gateway.app import Gateway, GatewayHolder
from wardgate.gateway.authorizers import Authorizers
from wardgate.gateway.config import ConfigError, parse_config
from wardgate.gateway.errors import GatewayError
from wardgate.gateway.factory import ProcessContext
from wardgate.gateway.keysources import AuthorizerKeys
from wardgate.gateway.kubesource import Snapshot
from wardgate.gateway.loading import SecretSource, ValidatedPaths, load_config
from wardgate.gateway.matching import Match, MethodNotAllowed
from wardgate.gateway.proxy import HttpProxy
from wardgate.gateway.routes import Route
from wardgate.gateway.server import SentConfig, build_snapshot, validate_snapshot
from wardgate.gateway.static import StaticResponse

OTHER_SECRET = "rotated-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
TEAM_SECRET = "team-secret-0123456789-abcdefghijklmnopqrstuvwxyz-team"


def service_paths(index: int, authorizer: str | None = None) -> list[dict[str, Any]]:
    auth: Any = {"authorizer": authorizer, "scopes": ["read"]} if authorizer else True
    return [
        {
            "method": ["GET", "POST"],
            "path": f"/api/service-{index}/items/{{id}}",
            "auth": auth,
            "integration": {"type": "http_proxy", "server": "backend", "stripPrefix": "/api"},
        },
        {"method": "GET", "path": f"/api/service-{index}/health", "response": {"ok": index}},
    ]


def base_document() -> dict[str, Any]:
    paths: list[dict[str, Any]] = []
    for index in range(12):
        paths += service_paths(index, "team" if index % 3 == 0 else None)
    paths.append(
        {
            "method": "*",
            "path": "/public/*",
            "integration": {"type": "http_proxy", "server": "public"},
            "cors": {"allowOrigins": ["https://app.example.com"]},
        }
    )
    paths.append(
        {
            "method": "GET",
            "path": "/cookie/me",
            "auth": {"tokenSources": [{"type": "cookie", "name": "session"}]},
            "response": "me",
        }
    )
    return {
        "defaultAuthorizer": "main",
        "authorizers": {
            "main": {
                "type": "jwt",
                "secret": "$secret.MAIN",
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "forwardClaims": [{"claim": "sub", "header": "X-User"}],
            },
            "team": {
                "type": "jwt",
                "secret": "$secret.TEAM",
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "leeway": 5,
                "tokenSources": [
                    {"type": "authorization"},
                    {"type": "query", "name": "access_token"},
                ],
            },
        },
        "servers": {
            "backend": {"url": "http://127.0.0.1:9/base", "readTimeout": 7},
            "public": "http://127.0.0.1:10",
        },
        "cors": {"allowOrigins": ["https://www.example.com"]},
        "paths": paths,
    }


SECRETS = {"MAIN": HS_SECRET, "TEAM": TEAM_SECRET}


def add_route(document: dict[str, Any], index: int) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    changed["paths"] += service_paths(index)
    return changed


def remove_route(document: dict[str, Any], index: int) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    changed["paths"] = [p for p in changed["paths"] if f"/service-{index}/" not in p["path"]]
    return changed


def change_authorizer(document: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    changed["authorizers"]["team"]["audience"] = "another-audience"
    changed["authorizers"]["team"]["tokenSources"] = [{"type": "authorization"}]
    return changed


def break_it(document: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    changed["paths"].append(dict(changed["paths"][0]))  # a duplicate route
    changed["paths"][3]["integration"] = {"type": "http_proxy", "server": "nowhere"}
    changed["paths"][4]["method"] = "get"
    return changed


TOKENS = {
    "main": "Bearer " + hs_token(claims(scope="read")),
    "team": "Bearer " + hs_token(claims(scope="read"), TEAM_SECRET),
    "rotated": "Bearer " + hs_token(claims(scope="read"), OTHER_SECRET),
    "other audience": "Bearer " + hs_token(claims(aud="another-audience", scope="read")),
    "team other audience": "Bearer "
    + hs_token(claims(aud="another-audience", scope="read"), TEAM_SECRET),
    "none": None,
}


def request_corpus() -> list[tuple[str, str]]:
    requests = [("GET", "/public/x/y"), ("DELETE", "/public"), ("GET", "/cookie/me")]
    requests.append(("GET", "/secure"))
    for index in range(16):
        for method in ("GET", "POST", "HEAD", "PUT", "OPTIONS"):
            requests.append((method, f"/api/service-{index}/items/42"))
            requests.append((method, f"/api/service-{index}/health"))
    requests += [("GET", "/nothing"), ("GET", "/api/service-1/items/")]
    return requests


def describe_route(route: Route) -> dict[str, Any]:
    """Everything a request's handling reads from a compiled route."""
    integration = route.integration
    integration_of: dict[str, Any]
    if isinstance(integration, HttpProxy):
        # The same process's pool (by identity), timeouts, paths and dropped headers.
        integration_of = {name: getattr(integration, name) for name in integration.__slots__}
    else:
        assert isinstance(integration, StaticResponse)
        integration_of = {name: getattr(integration, name) for name in integration.__slots__}
    credentials = route.credentials
    return {
        "pattern": route.pattern,
        "methods": route.methods,
        "auth": route.auth,
        "authorizer": route.authorizer,
        "cors": None if route.cors is None else vars_of(route.cors),
        "credentials": None
        if credentials is None
        else (credentials.where, credentials.query_names, credentials.reads_authorization),
        "integration": integration_of,
        "websocket": route.websocket,
        "leeway": route.leeway,
        "json": (route.route_json, route.authorizer_json),
    }


def vars_of(value: object) -> object:
    slots = getattr(type(value), "__slots__", None)
    if slots:
        return {name: getattr(value, name) for name in slots if hasattr(value, name)}
    return getattr(value, "__dict__", repr(value))


async def decisions(gateway: Gateway) -> list[Any]:
    """What the gateway decides for every request of the corpus with every token."""
    out: list[Any] = [
        sorted(gateway.query_token_names),
        sorted(gateway.authorizers.stripped_request_headers()),
        gateway.cors is not None and vars_of(gateway.cors),
    ]
    for method, path in request_corpus():
        result = gateway.router.match(method, path)
        if isinstance(result, Match):
            route = result.payload
            outcomes: dict[str, Any] = {}
            if route.auth is not None:
                for name, header in TOKENS.items():
                    try:
                        principal = await gateway.authorizers.authorize(route.auth, header)
                        outcomes[name] = ("ok", principal.authorizer, principal.subject)
                    except GatewayError as exc:
                        outcomes[name] = ("refused", exc.error.code)
            out.append((method, path, describe_route(route), dict(result.params), outcomes))
        elif isinstance(result, MethodNotAllowed):
            out.append((method, path, "405", result.allowed))
        else:
            out.append((method, path, "404"))
    return out


@pytest.fixture
async def context() -> AsyncIterator[ProcessContext]:
    created = ProcessContext.create()
    yield created
    await created.close()


def fresh(context: ProcessContext, document: dict[str, Any], secrets: dict[str, str]) -> Gateway:
    """A full load, as a gateway started on the document loads it."""
    loaded = load_config(document, SecretSource(environ=secrets), config_hash="fresh")
    return Gateway(loaded, context.authorizers(loaded), upstreams=context.upstreams)


class Replica:
    """A gateway following its config: the holder and the entries validated last (as
    `wardgate gateway --watch-config` has them in its `ConfigWatch`)."""

    def __init__(self, context: ProcessContext, document: dict[str, Any]) -> None:
        self.paths = ValidatedPaths()
        loaded = load_config(
            document, SecretSource(environ=SECRETS), config_hash="h0", paths=self.paths
        )
        gateway = Gateway(loaded, context.authorizers(loaded), upstreams=context.upstreams)
        self.holder = GatewayHolder(gateway, "h0", context)

    def build(self, document: dict[str, Any], secrets: dict[str, str], name: str) -> Gateway:
        snapshot = Snapshot(name, document, secrets, "1", "test")
        return build_snapshot(self.holder, lambda d: d, snapshot, self.paths)

    async def apply(self, document: dict[str, Any], secrets: dict[str, str], name: str) -> Gateway:
        """A snapshot applied as `follow_config` applies it."""
        gateway = self.build(document, secrets, name)
        await self.holder.swap(gateway, name)
        return gateway


async def test_reused_pieces_decide_as_a_fresh_full_load_after_each_change(
    context: ProcessContext,
) -> None:
    document = base_document()
    replica = Replica(context, document)
    holder = replica.holder
    secrets = dict(SECRETS)
    steps = [
        ("route added", add_route(document, 12), secrets),
        ("route removed", remove_route(add_route(document, 12), 4), secrets),
        ("authorizer changed", change_authorizer(remove_route(document, 4)), secrets),
        (
            "secret rotated",
            change_authorizer(remove_route(document, 4)),
            {**secrets, "MAIN": OTHER_SECRET},
        ),
        ("route added again", add_route(change_authorizer(document), 13), secrets),
    ]
    for number, (label, changed, values) in enumerate(steps):
        reused = await replica.apply(changed, values, f"h{number + 1}")
        expected = fresh(context, changed, values)
        assert reused.loaded.config == expected.loaded.config, label
        assert reused.loaded.config.model_dump() == expected.loaded.config.model_dump(), label
        assert await decisions(reused) == await decisions(expected), label
        # A bad config between the changes is refused whole and changes nothing.
        serving = holder.current
        bad = break_it(changed)
        with pytest.raises(ConfigError) as refused:
            replica.build(bad, values, "bad")
        with pytest.raises(ConfigError) as full:
            parse_config(bad)
        assert refused.value.problems == full.value.problems
        assert holder.current is serving
    await holder.close()


async def test_a_one_route_change_reuses_the_unchanged_entries_and_routes(
    context: ProcessContext,
) -> None:
    document = base_document()
    replica = Replica(context, document)
    holder = replica.holder
    before = holder.current
    after = await replica.apply(add_route(document, 12), SECRETS, "h1")
    old_paths, new_paths = before.loaded.config.paths, after.loaded.config.paths
    assert all(new is old for new, old in zip(new_paths, old_paths, strict=False))
    reused = []
    for entry in new_paths:
        earlier = before.routes.compiled.get(id(entry))
        now = after.routes.compiled[id(entry)]
        reused.append(earlier is not None and now.route is earlier.route)
    assert reused == [True] * len(old_paths) + [False, False]
    # Only what the current config holds is kept.
    assert len(replica.paths) == len(new_paths)
    assert len(after.routes.compiled) == len(new_paths)
    # An authorizer changed: the routes that use it are compiled again, the others not.
    changed = await replica.apply(change_authorizer(add_route(document, 12)), SECRETS, "h2")
    for entry in changed.loaded.config.paths:
        now = changed.routes.compiled[id(entry)].route
        earlier = after.routes.compiled[id(entry)].route
        uses_team = now.payload.authorizer == "team"
        assert (now is earlier) is not uses_team, entry.path
    # Only its audience changed: what its routes are compiled from did not.
    audience = change_authorizer(add_route(document, 12))
    audience["authorizers"]["team"]["audience"] = "a-third-audience"
    third = await replica.apply(audience, SECRETS, "h3")
    assert all(
        third.routes.compiled[id(e)].route is changed.routes.compiled[id(e)].route
        for e in third.loaded.config.paths
    )
    assert third.authorizers.runtime("team") is not changed.authorizers.runtime("team")
    await holder.close()


async def test_unchanged_authorizers_keep_their_caches_and_changed_ones_start_empty(
    context: ProcessContext,
) -> None:
    document = base_document()
    replica = Replica(context, document)
    holder = replica.holder
    first = holder.current.authorizers
    team_auth = holder.current.router.match("GET", "/api/service-0/items/1")
    main_auth = holder.current.router.match("GET", "/api/service-1/items/1")
    assert isinstance(team_auth, Match)
    assert isinstance(main_auth, Match)
    await first.authorize(team_auth.payload.auth, TOKENS["team"])  # type: ignore[arg-type]
    await first.authorize(main_auth.payload.auth, TOKENS["main"])  # type: ignore[arg-type]
    assert len(first.runtime("main").cache) == 1
    assert len(first.runtime("team").cache) == 1

    second = (await replica.apply(change_authorizer(document), SECRETS, "h1")).authorizers
    assert second.runtime("main") is first.runtime("main")
    assert len(second.runtime("main").cache) == 1
    assert second.runtime("team") is not first.runtime("team")
    assert len(second.runtime("team").cache) == 0

    rotated = {**SECRETS, "MAIN": OTHER_SECRET}
    third = (await replica.apply(change_authorizer(document), rotated, "h2")).authorizers
    assert third.runtime("team") is second.runtime("team")
    assert third.runtime("main") is not second.runtime("main")
    assert len(third.runtime("main").cache) == 0
    await holder.close()


async def test_a_replaced_config_closes_only_the_authorizers_no_config_took_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    document = base_document()
    loaded = load_config(document, SecretSource(environ=SECRETS))
    first = Authorizers.build(loaded)
    changed = load_config(change_authorizer(document), SecretSource(environ=SECRETS))
    second = Authorizers.build(changed, previous=first)
    closed: list[AuthorizerKeys] = []

    async def record(keys: AuthorizerKeys) -> None:
        closed.append(keys)

    monkeypatch.setattr(AuthorizerKeys, "close", record)
    await first.close(keep=[second])
    assert closed == [first.runtime("team").keys]
    closed.clear()
    await second.close()
    assert closed == [runtime.keys for runtime in second.runtimes()]
    assert second.runtime("main") is first.runtime("main")


def test_validated_paths_give_the_models_a_full_validation_gives() -> None:
    paths = ValidatedPaths()
    document = base_document()
    assert paths.parse(document) == parse_config(document)
    changed = add_route(remove_route(document, 2), 30)
    reused = paths.parse(changed)
    assert reused == parse_config(changed)
    assert reused.model_fields_set == parse_config(changed).model_fields_set
    assert len(paths) == len(changed["paths"])
    # A value equal in Python but of another type is another entry (`False` is not `0`).
    typed = copy.deepcopy(changed)
    typed["paths"][1]["response"] = {"ok": False}  # was {"ok": 0}
    response = paths.parse(typed).paths[1].response
    assert isinstance(response, dict)
    assert response["ok"] is False
    # What a YAML document may hold and JSON cannot (a date) is validated whole, as before.
    dated = copy.deepcopy(typed)
    dated["paths"][1]["response"] = {"when": datetime.date(2026, 1, 1)}
    with pytest.raises(ConfigError) as refused_date:
        paths.parse(dated)
    with pytest.raises(ConfigError) as full_date:
        parse_config(dated)
    assert refused_date.value.problems == full_date.value.problems
    with pytest.raises(ConfigError) as refused:
        paths.parse(break_it(changed))
    with pytest.raises(ConfigError) as full:
        parse_config(break_it(changed))
    assert refused.value.problems == full.value.problems
    assert len(paths) == len(typed["paths"])  # the refused config left them as they were


async def test_workers_load_the_sent_document_reusing_what_they_validated_before(
    context: ProcessContext,
) -> None:
    """`--workers N`: the parent validates and checks each version with what it checked
    before and sends the document; a worker loads and builds it with what it had."""
    document = base_document()
    worker = Replica(context, document)
    parent_paths = ValidatedPaths()
    checked = None
    versions = [
        add_route(document, 12),
        remove_route(add_route(document, 12), 3),
        change_authorizer(remove_route(add_route(document, 12), 3)),
    ]
    previous_entries: dict[int, Any] = {}
    for number, version in enumerate(versions):
        snapshot = Snapshot(f"w{number}", version, SECRETS, "1", "test")
        loaded, sent, check = validate_snapshot(lambda d: d, snapshot, parent_paths, checked)
        if checked is not None:  # the parent's check reused its previous build
            assert any(
                check.routes.compiled[key].route is earlier.route
                for key, earlier in checked.routes.compiled.items()
                if key in check.routes.compiled
            )
        checked = check
        received: SentConfig = pickle.loads(pickle.dumps(sent, pickle.HIGHEST_PROTOCOL))
        gateway = worker.holder.build(received.load(worker.paths))
        await worker.holder.swap(gateway, received.config_hash)
        assert gateway.loaded.config == loaded.config
        assert gateway.loaded.config_hash == loaded.config_hash == f"w{number}"
        assert await decisions(gateway) == await decisions(fresh(context, version, SECRETS))
        kept = [e for e in gateway.loaded.config.paths if id(e) in previous_entries]
        if number:  # after the first version, most entries are the worker's own again
            assert len(kept) >= len(gateway.loaded.config.paths) - 2
        previous_entries = {id(e): e for e in gateway.loaded.config.paths}
    await worker.holder.close()


async def test_a_rotated_ca_bundle_compiles_again_the_routes_of_its_server_only(
    context: ProcessContext,
) -> None:
    first_ca, second_ca = new_authority("first CA"), new_authority("second CA")
    document = base_document()
    document["servers"]["secure"] = {"url": "https://127.0.0.1:11", "caBundle": "$secret.CA"}
    document["paths"].append(
        {
            "method": "GET",
            "path": "/secure",
            "integration": {"type": "http_proxy", "server": "secure"},
        }
    )
    secrets = {**SECRETS, "CA": first_ca.pem}
    replica = Replica(context, base_document())
    before = await replica.apply(document, secrets, "h1")
    rotated = {**secrets, "CA": second_ca.pem}
    after = await replica.apply(document, rotated, "h2")
    for entry in after.loaded.config.paths:
        now = after.routes.compiled[id(entry)].route
        earlier = before.routes.compiled[id(entry)].route
        assert (now is earlier) is (entry.path != "/secure"), entry.path
    assert await decisions(after) == await decisions(fresh(context, document, rotated))
    await replica.holder.close()
