"""The operator's JWKS probes: which Authorizers have a JWKS, how a result shows in the
status, and when a probe round asks for a status update (against a loopback JWKS)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.support.jwks_server import JwksServer
from tests.support.tokens import jwks, rsa_key
from wardgate.operator.conditions import Cond, false, true
from wardgate.operator.probes import CONDITION, JwksProber, ProbeResult, jwks_uri, with_probe

RENDERED = (
    true("Accepted", "Accepted"),
    true("ResolvedRefs", "ResolvedRefs"),
    true("Ready", "Ready"),
)


@pytest.mark.parametrize(
    ("spec", "uri"),
    [
        (
            {"type": "jwt", "jwksUri": "https://idp.example.com/keys", "algorithms": ["RS256"]},
            "https://idp.example.com/keys",
        ),
        ({"type": "auth0", "domain": "t.eu.auth0.com", "audience": "a"}, None),
        (
            {"type": "supabase", "projectUrl": "https://ref.supabase.co"},
            "https://ref.supabase.co/auth/v1/.well-known/jwks.json",
        ),
        (
            {
                "type": "supabase",
                "projectUrl": "https://ref.supabase.co",
                "jwtSecret": "$secret.S",
                "secretRef": {"name": "s"},
                "algorithms": ["HS256"],
            },
            None,
        ),
        (
            {"type": "jwt", "secret": "$secret.S", "secretRef": {"name": "s"}},
            None,
        ),
        ({"type": "jwt"}, None),
    ],
)
def test_jwks_uri(spec: dict[str, Any], uri: str | None) -> None:
    if spec["type"] == "auth0":
        uri = "https://t.eu.auth0.com/.well-known/jwks.json"
    assert jwks_uri(spec) == uri


def test_with_probe_folds_reachability_into_ready() -> None:
    same, fields = with_probe(RENDERED, {"issuer": "i"}, None)
    assert same == RENDERED
    assert fields == {"issuer": "i"}

    up = ProbeResult("https://idp/keys", True, ("k1", "k2"), last_success=1_800_000_000)
    conditions, fields = with_probe(RENDERED, {"issuer": "i"}, up)
    assert [c.type for c in conditions] == ["Accepted", "ResolvedRefs", CONDITION, "Ready"]
    assert conditions[-1].ok
    assert fields["jwks"] == {
        "uri": "https://idp/keys",
        "reachable": True,
        "lastSuccess": "2027-01-15T08:00:00Z",
        "keyIds": ["k1", "k2"],
        "error": None,
    }

    down = ProbeResult("https://idp/keys", False, ("k1",), "HTTP 503", 1_800_000_000)
    conditions, fields = with_probe(RENDERED, {}, down)
    assert conditions[-1] == Cond("Ready", "False", "JwksUnreachable", "https://idp/keys: HTTP 503")
    assert fields["jwks"]["reachable"] is False
    assert fields["jwks"]["keyIds"] == ["k1"]

    refused = (true("Accepted", "Accepted"), false("ResolvedRefs", "SecretNotFound", "x"))
    conditions, _ = with_probe(refused, {}, down)
    assert conditions[-1].reason == "SecretNotFound"  # the first failure is the summary


def test_an_authorizer_is_not_ready_before_its_first_probe() -> None:
    """A JWKS not probed yet: Ready is Unknown (Pending), neither Stalled nor Reconciling,
    so a tool reading Ready waits instead of taking a provider that may be down for up."""
    conditions, fields = with_probe(RENDERED, {"issuer": "i"}, None, "https://idp/keys")
    assert [c.type for c in conditions] == ["Accepted", "ResolvedRefs", CONDITION, "Ready"]
    assert conditions[-1] == Cond("Ready", "Unknown", "Pending", "first probe of https://idp/keys")
    assert fields == {"issuer": "i"}


@pytest.fixture
async def key_server() -> AsyncIterator[JwksServer]:
    server = await JwksServer(jwks(rsa_key("probe-1"))).start()
    yield server
    await server.stop()


async def test_probe_rounds_report_changes_only(key_server: JwksServer) -> None:
    changed: list[tuple[str, str]] = []
    now = [1_800_000_000.0]
    async with aiohttp.ClientSession() as session:
        prober = JwksProber(
            60, changed.append, lambda: session, timeout=2, refresh=600, clock=lambda: now[0]
        )
        key = ("ns", "idp")
        targets = {key: key_server.url}
        assert prober.result(key, key_server.url) is None

        await prober.probe_all(targets)
        assert changed == [key]
        first = prober.result(key, key_server.url)
        assert first is not None
        assert (first.reachable, first.key_ids) == (True, ("probe-1",))

        now[0] += 60
        await prober.probe_all(targets)  # the same report: no status write
        assert changed == [key]

        key_server.status = 503
        now[0] += 60
        await prober.probe_all(targets)
        assert changed == [key, key]
        down = prober.result(key, key_server.url)
        assert down is not None
        assert (down.reachable, down.error) == (False, "HTTP 503")
        assert down.key_ids == ("probe-1",)  # the last known
        assert down.last_success == first.last_success

        key_server.status = 200
        key_server.document = {"keys": []}
        now[0] += 60
        await prober.probe_all(targets)
        empty = prober.result(key, key_server.url)
        assert empty is not None
        assert empty.error == "the key set is empty"

        key_server.document = jwks(rsa_key("probe-1"), rsa_key("probe-2"))
        now[0] += 60
        await prober.probe_all(targets)
        assert len(changed) == 4
        now[0] += 600  # healthy for a refresh period: lastSuccess is rewritten once
        await prober.probe_all(targets)
        assert len(changed) == 5

        await prober.probe_all({})  # the Authorizer is gone
        assert prober.result(key, key_server.url) is None
