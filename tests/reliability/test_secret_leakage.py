"""Secret leakage: a gateway process (with `debug: true`, the most talkative setting) is
driven through denials, faults and successes with every kind of secret a request or the
config can carry; then each secret value is searched for in everything the gateway
emitted: its stdout (request log) and stderr (logs), every response body and header,
and the admin `/config`, `/metrics`, `/readyz` and `/healthz`. Zero hits.

Searched: the HMAC secrets of two authorizers (from the secrets directory), the bearer
tokens sent (whole, and their signatures), a Basic password, a cookie and a query-string
credential.

A second run sends requests the HTTP parser refuses (folded, invalid and oversized headers
carrying a valid token), at the `debug` log level, several times over: no byte of the
token (whole, header, payload or signature segment) in any output, no traceback, and the
refusals logged one line each, rate-limited.
"""

from __future__ import annotations

import asyncio
import base64
import signal
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from tests.support import results
from tests.support.gateway import AUDIENCE, ISSUER, CountingUpstream, raw_exchange, seed_document
from tests.support.malformed import malformed_corpus, token_fragments
from tests.support.processes import GatewayProcess, kill_all, launch_gateway
from tests.support.tokens import claims, ec_key, hs_token, json_bytes, raw_token, rsa_key

SUITE = "secret leakage"
JWT_SECRET = "leak-check-hmac-secret-7f3a9c1e5b2d8046-abcdef"
SB_SECRET = "leak-check-supabase-secret-51c0de9a77b3-xyz012"
BASIC_PASSWORD = "leak-check-basic-password-93b1"
COOKIE_VALUE = "leak-check-cookie-value-0c7d"
QUERY_SECRET = "leak-check-query-credential-d41f"


def gateway_config(upstream: CountingUpstream) -> dict[str, Any]:
    document = seed_document(upstream.url, debug=True)
    document["servers"] = {
        "orders": {"url": upstream.url, "readTimeout": 0.3},
        "down": "http://127.0.0.1:9",
    }
    document["authorizers"] = {
        "sb": {
            "type": "supabase",
            "projectUrl": "https://leakcheck.supabase.co",
            "jwtSecret": "$secret.SB_SECRET",
            "jwksUri": "http://127.0.0.1:9/jwks.json",
        }
    }
    document["paths"] += [
        {
            "method": "GET",
            "path": "/sb/orders",
            "auth": {"authorizer": "sb"},
            "integration": {"type": "http_proxy", "server": "orders"},
        },
        {
            "method": "GET",
            "path": "/down",
            "integration": {"type": "http_proxy", "server": "down"},
        },
    ]
    return document


def requests_to_send() -> list[tuple[str, dict[str, str]]]:
    good = claims(iss=ISSUER, aud=AUDIENCE)
    tokens = {
        "valid": hs_token(good, JWT_SECRET),
        "wrong secret": hs_token(good, SB_SECRET),
        "expired": hs_token(claims(iss=ISSUER, aud=AUDIENCE, lifetime=-3600), JWT_SECRET),
        "wrong issuer": hs_token(claims(iss="https://evil", aud=AUDIENCE), JWT_SECRET),
        "wrong audience": hs_token(claims(iss=ISSUER, aud="x"), JWT_SECRET),
        "alg none": raw_token(json_bytes({"alg": "none"}), json_bytes(good)),
        "confusion": raw_token(
            json_bytes({"alg": "HS256"}), json_bytes(good), rsa_key().public_pem(), "HS256"
        ),
        "supabase valid": hs_token(
            claims(iss="https://leakcheck.supabase.co/auth/v1", aud="authenticated"), SB_SECRET
        ),
        "supabase anon key": hs_token({"iss": "supabase", "role": "anon"}, SB_SECRET),
        "supabase key unreachable": ec_key("leak-check").sign(
            claims(iss="https://leakcheck.supabase.co/auth/v1", aud="authenticated")
        ),
    }
    basic = base64.b64encode(f"admin:{BASIC_PASSWORD}".encode()).decode()
    sent: list[tuple[str, dict[str, str]]] = []
    for token in tokens.values():
        for path in ("/private/orders", "/sb/orders", "/public/x", "/public/slow"):
            sent.append(
                (
                    f"{path}?api_key={QUERY_SECRET}",
                    {"Authorization": f"Bearer {token}", "Cookie": f"session={COOKIE_VALUE}"},
                )
            )
    sent += [
        ("/private/orders", {"Authorization": f"Basic {basic}"}),
        ("/private/orders", {"Authorization": f"Bearer {basic}"}),
        (f"/down?token={QUERY_SECRET}", {"Cookie": f"session={COOKIE_VALUE}"}),
        (f"/nowhere?password={QUERY_SECRET}", {}),
        (f"/public/..%2fx?key={QUERY_SECRET}", {}),
        (f"/private/orders?{QUERY_SECRET}", {"Authorization": "Bearer " + "a" * 9000}),
    ]
    return sent


def secret_values(sent: list[tuple[str, dict[str, str]]]) -> dict[str, str]:
    values = {
        "JWT_SECRET": JWT_SECRET,
        "SB_SECRET": SB_SECRET,
        "Basic password": BASIC_PASSWORD,
        "cookie": COOKIE_VALUE,
        "query credential": QUERY_SECRET,
    }
    for _, headers in sent:
        authorization = headers.get("Authorization", "")
        if authorization.startswith("Bearer ") and authorization.count(".") == 2:
            token = authorization.removeprefix("Bearer ")
            values[f"token {token[-12:]}"] = token
            if token.split(".")[2]:
                values[f"signature of {token[-12:]}"] = token.split(".")[2]
    return values


async def test_no_secret_reaches_logs_bodies_or_the_admin_port(tmp_path: Path) -> None:
    upstream = await CountingUpstream().start()
    upstream.gate = asyncio.Event()  # /public/slow never answers: 504
    processes: list[GatewayProcess] = []
    emitted: list[str] = []
    sent = requests_to_send()
    statuses: set[int] = set()
    try:
        gateway = await launch_gateway(
            gateway_config(upstream),
            {"JWT_SECRET": JWT_SECRET + "\n", "SB_SECRET": SB_SECRET},
            tmp_path,
            "--access-log",
            "-",
        )
        processes.append(gateway)
        async with aiohttp.ClientSession() as session:
            await gateway.ready(session)
            for path, headers in sent:
                url = URL(gateway.url + path, encoded=True)
                async with session.get(url, headers=headers) as response:
                    statuses.add(response.status)
                    body = (await response.read()).decode("utf-8", "replace")
                    emitted.append(str(response.headers))
                    if response.status != 200:  # a 200's body is the upstream's echo
                        emitted.append(body)
            for endpoint in ("/config", "/metrics", "/readyz", "/healthz"):
                async with session.get(gateway.admin + endpoint) as response:
                    assert response.status == 200
                    emitted.append(await response.text())
        gateway.process.send_signal(signal.SIGTERM)
        assert await gateway.wait() == 0
        emitted.append(gateway.output())
    finally:
        await kill_all(processes)
        await upstream.stop()
    # The run covered successes, denials, refusals and upstream faults.
    assert {200, 400, 401, 404, 502, 503, 504} <= statuses
    assert '"status":401' in gateway.output()  # the request log was captured
    text = "\n".join(emitted)
    secrets = secret_values(sent)
    hits = sorted(name for name, value in secrets.items() if value in text)
    assert hits == []
    results.record(SUITE, "secret values searched", len(secrets))
    results.record(SUITE, "requests sent with secrets", len(sent))
    results.record(SUITE, "bytes of output searched", len(text.encode()))
    results.record(SUITE, "hits", len(hits))


async def test_malformed_requests_leak_no_token_at_debug(tmp_path: Path) -> None:
    upstream = await CountingUpstream().start()
    processes: list[GatewayProcess] = []
    token = hs_token(claims(iss=ISSUER, aud=AUDIENCE, marker="leak-check-claim"), JWT_SECRET)
    corpus = malformed_corpus(token)
    rounds = 5
    try:
        gateway = await launch_gateway(
            gateway_config(upstream),
            {"JWT_SECRET": JWT_SECRET, "SB_SECRET": SB_SECRET},
            tmp_path,
            "--access-log",
            "-",
            "--log-level",
            "debug",
        )
        processes.append(gateway)
        async with aiohttp.ClientSession() as session:
            await gateway.ready(session)
        answers = []
        for _ in range(rounds):
            for data in corpus.values():
                answers.append(await raw_exchange(gateway.port, data))
        gateway.process.send_signal(signal.SIGTERM)
        assert await gateway.wait() == 0
    finally:
        await kill_all(processes)
        await upstream.stop()
    assert all(a.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4")) for a in answers)
    output = gateway.output()
    fragments = [*token_fragments(token), JWT_SECRET]
    hits = [f[:12] for f in fragments if f in output]
    assert hits == []
    assert "Traceback" not in output
    assert "Error handling request" not in output
    refused = [
        line
        for line in gateway.stdout
        if '"malformed_request"' in line or '"header_too_large"' in line
    ]
    assert 0 < len(refused) <= len(answers)
    results.record(SUITE, "malformed requests sent at debug", len(answers))
    results.record(SUITE, "token fragments searched", len(fragments))
    results.record(SUITE, "hits", len(hits))
