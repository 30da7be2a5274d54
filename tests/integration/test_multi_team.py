"""A shared Gateway attacked from a tenant namespace, against the real control plane.

The platform team's namespace holds the Gateway, its Authorizers and servers; team A and
team B each attach Routes from their own namespace. Team B's admin then tries every
escalation a Route can express (another team's server, `auth: false`, the `anon` API key
role, a weaker Authorizer, a catch-all, a `{param}` standing for team A's segment, a prefix
nobody owns, a changed required claim, an inline authorizer): each Route is refused with
its reason, the rendered config does not change, and a real gateway started from it keeps
serving team A, team B and the platform with the Gateway's auth, required scope included.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import yaml
from aiohttp import web

from tests.support.gateway import raw_exchange, status_of
from tests.support.operator_fixtures import Objects, RunningOperator, service_account_kubeconfig
from tests.support.ports import free_port
from wardgate.devcluster.cluster import KubeCluster, KubectlError, wait_until

pytestmark = pytest.mark.cluster

API = "wardgate.io/v1alpha1"
CORP_SECRET = "corp-secret-0123456789-abcdefghijklmnop"
PARTNER_SECRET = "partner-secret-0123456789-abcdefghijkl"
ISSUER = "https://id.example.com"
AUDIENCE = "shared-api"


@dataclass(frozen=True)
class Teams:
    platform: str
    a: str
    b: str
    b_admin: Path
    """Kubeconfig of team B's namespace admin: Routes in team B's namespace, nothing else
    (the grant docs/multi-team.md gives a team)."""


def _object(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec}


def _route(teams: Teams, name: str, *paths: dict[str, Any]) -> dict[str, Any]:
    return _object(
        "Route",
        name,
        {"gatewayRef": {"name": "shared", "namespace": teams.platform}, "paths": list(paths)},
    )


def _proxy(server: str) -> dict[str, Any]:
    return {"type": "http_proxy", "server": server}


def platform_objects(teams: Teams) -> list[dict[str, Any]]:
    """The platform team's Gateway, Authorizers (a strict one and a partner one, the weaker:
    no issuer or audience checked) and its own Routes."""
    selector = {"from": "Selector", "selector": {"matchLabels": {"wardgate-test/team": "a"}}}
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "keys"},
            "stringData": {"CORP": CORP_SECRET, "PARTNER": PARTNER_SECRET},
        },
        _object(
            "Authorizer",
            "corp",
            {
                "type": "jwt",
                "secret": "$secret.CORP",
                "secretRef": {"name": "keys"},
                "algorithm": "HS256",
                "issuer": ISSUER,
                "audience": AUDIENCE,
            },
        ),
        _object(
            "Authorizer",
            "partner",
            {
                "type": "jwt",
                "secret": "$secret.PARTNER",
                "secretRef": {"name": "keys"},
                "algorithm": "HS256",
            },
        ),
        _object(
            "Gateway",
            "shared",
            {
                "defaultAuthorizer": "corp",
                "allowedRoutes": {"namespaces": {"from": "All"}},
                "servers": {
                    "a-api": {
                        "url": "http://a-api.invalid",
                        "allowedRoutes": {"namespaces": selector},
                    },
                    "b-api": {
                        "url": "http://b-api.invalid",
                        "allowedRoutes": {"namespaces": {"from": "All"}},
                    },
                    "admin": {"url": "http://admin.invalid"},
                },
                "delegations": [
                    {"namespace": teams.a, "paths": ["/teams/a/*"]},
                    {"namespace": teams.b, "paths": ["/teams/b/*"]},
                ],
                "authPolicy": {
                    "authorizers": ["corp"],
                    "unauthenticated": [{"namespaces": [teams.a], "paths": ["/teams/a/public/*"]}],
                    "requiredScopes": ["api"],
                    "requiredClaims": {"tenant": "shared"},
                },
            },
        ),
        _route(
            teams,
            "platform",
            {"method": "GET", "path": "/health", "response": {"status": "ok"}},
            {
                "method": "GET",
                "path": "/admin/*",
                "auth": {"authorizer": "corp", "scopes": ["admin"]},
                "integration": _proxy("admin"),
            },
        ),
    ]


def team_a_routes(teams: Teams) -> list[dict[str, Any]]:
    return [
        _route(
            teams,
            "orders",
            {
                "method": ["GET", "POST"],
                "path": "/teams/a/orders/*",
                "auth": True,
                "integration": _proxy("a-api"),
            },
            {"method": "GET", "path": "/teams/a/public/status", "integration": _proxy("a-api")},
        )
    ]


def team_b_routes(teams: Teams) -> list[dict[str, Any]]:
    return [
        _route(
            teams,
            "orders",
            {
                "method": "GET",
                "path": "/teams/b/orders",
                "auth": True,
                "integration": _proxy("b-api"),
            },
        )
    ]


# Each escalation of team B: (Route name, its paths, the reason, text the message names).
ESCALATIONS: list[tuple[str, list[dict[str, Any]], str, list[str]]] = [
    (
        "other-teams-server",
        [
            {
                "method": "GET",
                "path": "/teams/b/a-data",
                "auth": True,
                "integration": _proxy("a-api"),
            }
        ],
        "NotAllowed",
        ["server 'a-api'", "spec.servers.a-api.allowedRoutes.namespaces: from: Selector"],
    ),
    (
        "platform-server",
        [{"method": "GET", "path": "/teams/b/admin", "auth": True, "integration": _proxy("admin")}],
        "NotAllowed",
        ["server 'admin'", "spec.servers.admin.allowedRoutes.namespaces: from: Same"],
    ),
    (
        "auth-off",
        [{"method": "GET", "path": "/teams/b/open", "auth": False, "integration": _proxy("b-api")}],
        "AuthRequired",
        ["spec.paths.0.auth: the path has no auth", "spec.authPolicy.unauthenticated"],
    ),
    (
        "anon-key",
        [
            {
                "method": "GET",
                "path": "/teams/b/anon",
                "auth": {"allowedApiKeyRoles": ["anon"]},
                "integration": _proxy("b-api"),
            }
        ],
        "AuthRequired",
        ["allowedApiKeyRoles", "anon"],
    ),
    (
        "weaker-authorizer",
        [
            {
                "method": "GET",
                "path": "/teams/b/partner",
                "auth": {"authorizer": "partner"},
                "integration": _proxy("b-api"),
            }
        ],
        "AuthorizerNotAllowed",
        ["Authorizer 'partner'", "spec.authPolicy.authorizers"],
    ),
    (
        "catch-all",
        [{"method": "*", "path": "/*", "auth": True, "integration": _proxy("b-api")}],
        "PathNotDelegated",
        ["spec.paths.0.path: /* is not within", "/teams/b/*"],
    ),
    (
        "param-over-teams",
        [
            {
                "method": "GET",
                "path": "/teams/{team}/orders/*",
                "auth": True,
                "integration": _proxy("b-api"),
            }
        ],
        "PathNotDelegated",
        ["/teams/{team}/orders/*"],
    ),
    (
        "other-teams-prefix",
        [
            {
                "method": "DELETE",
                "path": "/teams/a/orders/*",
                "auth": True,
                "integration": _proxy("b-api"),
            }
        ],
        "PathNotDelegated",
        ["/teams/a/orders/*"],
    ),
    (
        "squat",
        [{"method": "GET", "path": "/billing/*", "auth": True, "integration": _proxy("b-api")}],
        "PathNotDelegated",
        ["/billing/*"],
    ),
    (
        "case-trick",
        [
            {
                "method": "GET",
                "path": "/Teams/a/orders/x",
                "auth": True,
                "integration": _proxy("b-api"),
            }
        ],
        "PathNotDelegated",
        ["/Teams/a/orders/x"],
    ),
    (
        "changed-claim",
        [
            {
                "method": "GET",
                "path": "/teams/b/claims",
                "auth": {"claims": {"tenant": "b-only"}},
                "integration": _proxy("b-api"),
            }
        ],
        "RequiredClaimConflict",
        ["spec.paths.0.auth.claims.tenant", "spec.authPolicy.requiredClaims"],
    ),
    (
        "dot-segments",
        [{"method": "GET", "path": "/teams/b/../a/orders/x", "auth": True, "response": "x"}],
        "Invalid",
        ["dot segment"],
    ),
]


@pytest.fixture(scope="module")
def teams(
    cluster: KubeCluster, objects: Objects, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Teams]:
    """Three namespaces, the operator, and the platform's and both teams' objects Ready."""
    stamp = f"{os.getpid()}-{int(time.time()) % 100000}"
    platform, a, b = f"mt-platform-{stamp}", f"mt-a-{stamp}", f"mt-b-{stamp}"
    for namespace, team in ((platform, "platform"), (a, "a"), (b, "b")):
        cluster.kubectl("create", "namespace", namespace)
        cluster.kubectl("label", "namespace", namespace, f"wardgate-test/team={team}")
    cluster.kubectl("create", "serviceaccount", "admin", "-n", b)
    cluster.kubectl(
        "create", "role", "wardgate-routes", "-n", b,
        "--verb=get,list,watch,create,update,patch,delete", "--resource=routes.wardgate.io",
    )  # fmt: skip
    cluster.kubectl(
        "create", "rolebinding", "admin-routes", "-n", b,
        "--role=wardgate-routes", f"--serviceaccount={b}:admin",
    )  # fmt: skip
    directory = tmp_path_factory.mktemp("tenant")
    found = Teams(platform, a, b, service_account_kubeconfig(cluster, directory, "admin", b))
    operator = RunningOperator(cluster.kubeconfig).start()
    try:
        objects.apply(found.platform, *platform_objects(found))
        objects.apply(found.a, *team_a_routes(found))
        as_team_b(cluster, found, *team_b_routes(found))
        for namespace, name in (
            (found.a, "orders"),
            (found.b, "orders"),
            (found.platform, "platform"),
        ):
            objects.wait_condition("Route", namespace, name, "Accepted", "True", timeout=90)
        objects.wait_condition("Gateway", found.platform, "shared", "Accepted", "True", timeout=90)
        yield found
    finally:
        operator.stop()
        for namespace in (found.platform, found.a, found.b):
            cluster.kubectl("delete", "namespace", namespace, "--wait=false")


def as_team_b(cluster: KubeCluster, teams: Teams, *documents: dict[str, Any]) -> None:
    """`kubectl apply` in team B's namespace with team B's admin's credentials."""
    text = "\n---\n".join(yaml.safe_dump(d, sort_keys=False) for d in documents)
    cluster.kubectl(
        "--kubeconfig", str(teams.b_admin), "apply", "-n", teams.b, "-f", "-", input=text
    )


@dataclass
class Upstreams:
    urls: dict[str, str]
    seen: list[tuple[str, str]]
    """(server, path) of every request that reached an upstream."""


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    """One loopback server per Gateway server, recording what reaches it."""
    seen: list[tuple[str, str]] = []
    runners: list[web.AppRunner] = []
    urls = {}
    for server in ("a-api", "b-api", "admin"):

        async def answer(request: web.Request, server: str = server) -> web.Response:
            seen.append((server, request.path))
            return web.json_response({"server": server, "path": request.path})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        urls[server] = f"http://127.0.0.1:{port}"
    try:
        yield Upstreams(urls, seen)
    finally:
        for runner in runners:
            await runner.cleanup()


@pytest.fixture
def gateway_url(
    teams: Teams, objects: Objects, upstreams: Upstreams, tmp_path: Path
) -> Iterator[str]:
    """`wardgate gateway` on the config rendered for the shared Gateway, its servers pointed
    at the loopback upstreams (the kubelet is fake: the gateway runs here)."""
    config = objects.config(teams.platform, "shared")
    assert config is not None
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config), encoding="utf-8")
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "keys.CORP").write_text(CORP_SECRET, encoding="utf-8")
    (secrets_dir / "keys.PARTNER").write_text(PARTNER_SECRET, encoding="utf-8")
    port, admin_port = free_port(), free_port()
    servers = [arg for name, url in upstreams.urls.items() for arg in ("--server", f"{name}={url}")]
    process = subprocess.Popen(
        [
            sys.executable, "-m", "wardgate", "gateway",
            "--config", str(config_file),
            "--secrets-dir", str(secrets_dir),
            "--port", str(port),
            "--admin-port", str(admin_port),
            "--access-log", "off",
            *servers,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        wait_until(
            lambda: _ready(f"http://127.0.0.1:{admin_port}/readyz"),
            what="the gateway ready",
            timeout=30,
            interval=0.05,
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=60)
        assert CORP_SECRET not in output
        assert PARTNER_SECRET not in output


def _ready(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _token(secret: str = CORP_SECRET, **claims: Any) -> str:
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "exp": int(time.time()) + 600,
        "scope": "api",
        "tenant": "shared",
        **claims,
    }
    return jwt.encode(body, secret, algorithm="HS256")


async def _status(
    session: aiohttp.ClientSession, url: str, method: str = "GET", token: str | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, url, headers=headers) as response:
        try:
            body = await response.json()
        except (aiohttp.ContentTypeError, json.JSONDecodeError):
            body = await response.text()
        return response.status, body


async def _everyone_is_served(session: aiohttp.ClientSession, url: str) -> None:
    """The legitimate paths of all three teams, with the Gateway's auth."""
    good = _token()
    assert await _status(session, f"{url}/health") == (200, {"status": "ok"})
    assert (await _status(session, f"{url}/teams/a/orders/1", token=good))[1] == {
        "server": "a-api",
        "path": "/teams/a/orders/1",
    }
    assert (await _status(session, f"{url}/teams/a/public/status"))[0] == 200
    assert (await _status(session, f"{url}/teams/b/orders", token=good))[1] == {
        "server": "b-api",
        "path": "/teams/b/orders",
    }
    # The Gateway's required scope and claim hold on the tenants' paths, which never
    # listed them: a token without them is refused.
    status, body = await _status(session, f"{url}/teams/b/orders", token=_token(scope="orders"))
    assert status == 403, body
    assert body["error"]["code"] == "insufficient_scope"
    status, body = await _status(session, f"{url}/teams/a/orders/1", token=_token(tenant="b-only"))
    assert status == 403, body
    # The weaker authorizer's tokens are not accepted on a tenant's path.
    partner = jwt.encode({"sub": "x", "scope": "api", "tenant": "shared"}, PARTNER_SECRET)
    assert (await _status(session, f"{url}/teams/b/orders", token=partner))[0] == 401


async def test_every_escalation_of_a_tenant_is_refused_and_everyone_else_is_served(
    cluster: KubeCluster,
    teams: Teams,
    objects: Objects,
    gateway_url: str,
    upstreams: Upstreams,
) -> None:
    url = gateway_url
    before = objects.config(teams.platform, "shared")
    gateway_hash = (objects.get("Gateway", teams.platform, "shared") or {})["status"]["configHash"]
    async with aiohttp.ClientSession() as session:
        await _everyone_is_served(session, url)
        for name, paths, reason, mentions in ESCALATIONS:
            as_team_b(cluster, teams, _route(teams, name, *paths))
            condition = await asyncio.to_thread(
                objects.wait_condition, "Route", teams.b, name, "Accepted", "False", reason
            )
            for text in mentions:
                assert text in condition["message"], (name, condition["message"])
            if reason not in ("Invalid",):
                policy = (objects.get("Route", teams.b, name) or {})["status"]["policy"]
                assert policy[0]["result"] == "Refused", (name, policy)
            # Nothing changed for anyone: the Gateway keeps its config, the gateway serves.
            gateway = objects.get("Gateway", teams.platform, "shared") or {}
            assert gateway["status"]["configHash"] == gateway_hash, name
            assert (
                objects.condition("Gateway", teams.platform, "shared", "Accepted")["status"]
                == "True"
            )
            assert objects.config(teams.platform, "shared") == before, name
            await _everyone_is_served(session, url)

        # The paths the attacks aimed at, however written, are team A's (raw targets: a
        # client library would resolve the dot segments before sending).
        good = _token()
        port = int(url.rsplit(":", 1)[1])
        for target in (
            "/teams/b/../a/orders/1",
            "/teams/b/%2e%2e/a/orders/1",
            "/teams/b/%2E%2E/a/orders/1",
            "/teams/b/./../a/orders/1",
            "//teams/b/..//a/orders/1",
        ):
            request = (
                f"GET {target} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {good}\r\n"
                "Connection: close\r\n\r\n"
            )
            response = await raw_exchange(port, request.encode())
            assert status_of(response) == 200, (target, response[:200])
            assert upstreams.seen[-1] == ("a-api", "/teams/a/orders/1"), target
        assert (await _status(session, f"{url}/teams/a/orders/1", "DELETE", good))[0] == 405
        assert (await _status(session, f"{url}/billing/x", token=good))[0] == 404
        assert (await _status(session, f"{url}/teams/b/open"))[0] == 404
    assert not [s for s in upstreams.seen if s[0] == "admin"]
    assert all(server == "a-api" for server, path in upstreams.seen if path.startswith("/teams/a"))

    # Team A's Route is admitted with the rules that admitted it, by field.
    team_a = objects.get("Route", teams.a, "orders") or {}
    rules = team_a["status"]["policy"][0]["rules"]
    assert f"path: spec.delegations.0.paths.0 delegates /teams/a/* to namespace {teams.a}" in rules
    assert "scopes api: added by spec.authPolicy.requiredScopes" in rules


def test_a_tenant_admin_can_touch_nothing_but_its_routes(
    cluster: KubeCluster, teams: Teams
) -> None:
    """What the policy rests on: team B's admin cannot change the Gateway, bring an
    Authorizer, read the platform's Secrets, write in team A's namespace or relabel a
    namespace to match a server's selector."""
    gateway = _object("Gateway", "shared", {"allowedRoutes": {"namespaces": {"from": "All"}}})
    attempts = [
        ("patch", "gateways.wardgate.io", "shared", "-n", teams.platform, "--type=merge",
         "-p", '{"spec": {"delegations": []}}'),
        ("get", "secret", "keys", "-n", teams.platform),
        ("label", "namespace", teams.b, "wardgate-test/team=a", "--overwrite"),
        ("delete", "routes.wardgate.io", "orders", "-n", teams.a),
    ]  # fmt: skip
    for attempt in attempts:
        result = cluster.kubectl("--kubeconfig", str(teams.b_admin), *attempt, check=False)
        assert result.returncode != 0, attempt
        assert "forbidden" in result.stderr.lower(), (attempt, result.stderr)
    for namespace in (teams.platform, teams.b):
        authorizer = _object("Authorizer", "mine", {"type": "jwt", "jwksUri": "https://x/j"})
        for document in (authorizer, gateway):
            text = yaml.safe_dump(document)
            result = cluster.kubectl(
                "--kubeconfig", str(teams.b_admin), "apply", "-n", namespace, "-f", "-",
                input=text, check=False,
            )  # fmt: skip
            assert "forbidden" in result.stderr.lower(), (namespace, document["kind"], result)


def test_explain_names_the_rule_that_admitted_or_refused_a_path(
    cluster: KubeCluster, teams: Teams, objects: Objects
) -> None:
    """`wardgate explain --gateway` reads the Routes' status: which Route claims the path,
    and which rule of the Gateway admitted or refused it."""
    as_team_b(
        cluster,
        teams,
        _route(teams, "open", {"method": "GET", "path": "/teams/b/public", "response": "x"}),
    )
    objects.wait_condition("Route", teams.b, "open", "Accepted", "False", "AuthRequired")

    def explain(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "wardgate", "explain", "--gateway", "shared"]
        return subprocess.run(
            [*command, "-n", teams.platform, *args],
            capture_output=True,
            text=True,
            env=cluster.env,
            timeout=120,
        )

    refused = explain("GET", "/teams/b/public")
    assert refused.returncode == 1, refused.stderr
    assert (
        f"Route {teams.b}/open spec.paths.0 /teams/b/public [GET]: refused, the whole Route "
        "(AuthRequired)" in refused.stdout
    ), refused.stdout
    assert "auth: spec.authPolicy.unauthenticated" in refused.stdout

    admitted = explain("GET", "/teams/b/../a/orders/1", "--token", _token(), "-o", "json")
    assert admitted.returncode == 0, admitted.stdout + admitted.stderr
    report = json.loads(admitted.stdout)
    assert report["result"]["admitted"] is True
    # Team A's Route serves it; team B's attempts at it (from the test above) are refused.
    line = next(x for x in report["policy"] if x.startswith(f"Route {teams.a}/"))
    assert all("refused" in x for x in report["policy"] if x != line)
    assert line.startswith(f"Route {teams.a}/orders spec.paths.0 /teams/a/orders/* [GET, POST]")
    assert f"path: spec.delegations.0.paths.0 delegates /teams/a/* to namespace {teams.a}" in line
    assert "scopes api: added by spec.authPolicy.requiredScopes" in line
    assert CORP_SECRET not in admitted.stdout + refused.stdout


def test_an_inline_authorizer_on_a_route_is_refused_at_admission(
    cluster: KubeCluster, teams: Teams, objects: Objects
) -> None:
    """A Route names Authorizers of the Gateway's namespace; it cannot bring its own (nor
    its own secret reference)."""
    inline = _route(
        teams,
        "inline-authorizer",
        {
            "method": "GET",
            "path": "/teams/b/inline",
            "auth": {"type": "jwt", "secret": "$secret.MINE", "algorithm": "HS256"},
            "response": "x",
        },
    )
    refusal = ""
    try:
        as_team_b(cluster, teams, inline)
    except KubectlError as exc:
        refusal = str(exc.stderr)
    if refusal:  # where the schema can tell, admission refuses it
        assert "unknown field" in refusal
        return
    # `auth` is `true` or an object in the schema: the operator refuses the Route.
    condition = objects.wait_condition(
        "Route", teams.b, "inline-authorizer", "Accepted", "False", "Invalid"
    )
    assert "spec.paths.0.auth" in condition["message"]
    config = objects.config(teams.platform, "shared") or {}
    assert "/teams/b/inline" not in [p["path"] for p in config["paths"]]


def test_a_tenant_gets_the_path_once_the_platform_delegates_it(
    cluster: KubeCluster, teams: Teams, objects: Objects
) -> None:
    """Squatting is over: `/invoices/*` claimed by team B before anyone owned it stays
    refused until the platform delegates it, and then the Route is admitted unchanged."""
    as_team_b(
        cluster,
        teams,
        _route(
            teams,
            "invoices",
            {"method": "GET", "path": "/invoices/*", "auth": True, "integration": _proxy("b-api")},
        ),
    )
    objects.wait_condition("Route", teams.b, "invoices", "Accepted", "False", "PathNotDelegated")
    gateway = objects.get("Gateway", teams.platform, "shared") or {}
    delegations = gateway["spec"]["delegations"]
    delegations[1]["paths"].append("/invoices/*")
    objects.merge_patch("Gateway", teams.platform, "shared", {"spec": {"delegations": delegations}})
    objects.wait_condition("Route", teams.b, "invoices", "Accepted", "True", timeout=60)
    config = objects.config(teams.platform, "shared") or {}
    assert "/invoices/*" in [p["path"] for p in config["paths"]]
