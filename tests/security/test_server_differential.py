"""The traffic server against the aiohttp reference server: one corpus of raw requests to
both, each gateway in front of its own recording upstream, and the same status, the same
error code and the same request at the upstream for every case.

The request-level corpus (routes, auth, paths, bodies, limits, CORS, hop-by-hop headers)
must agree exactly (a `100 Continue` aside: a server may leave it out once the body has
arrived). The framing corpus of `test_framing_differential.py` goes to both as well and the
counts are recorded: there the traffic server differs by design where the reference was
stricter than both nginx and HAProxy (bare LF, `HTTP/1.2`, data after `Connection: close`,
the valid requests before a malformed one); that suite holds both to the peers.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from tests.support import results
from tests.support.framing import Case, Outcome, RecordingUpstream, compare, run_cases
from tests.support.framing_corpus import CORPUS, chunked, path, post, request
from tests.support.gateway import StartGateway, seed_document
from tests.support.tokens import AUDIENCE, ISSUER, claims, hs_token

SUITE = "traffic server vs aiohttp reference"
QUIET_SECONDS = 3.0
CLOSE = b"Connection: close\r\n"
MAX_BODY = 64


def _bearer(**values: object) -> bytes:
    token = hs_token(claims(**{"iss": ISSUER, "aud": AUDIENCE, **values}))
    return f"Authorization: Bearer {token}\r\n".encode()


def secure(label: str = "a") -> bytes:
    return b"/secure/{c}/" + label.encode()


def request_corpus() -> list[Case]:
    cases: list[Case] = []

    def add(name: str, data: bytes, *labels: str) -> None:
        cases.append(Case(name, "request", data, labels))

    add("GET", request(headers=CLOSE), "a")
    add("GET with a query", request(target=path("a") + b"?x=1&y=%20", headers=CLOSE), "a")
    add("HEAD", request(method=b"HEAD", headers=CLOSE), "a")
    add("GET /health", request(target=b"/health", headers=CLOSE))
    add("HEAD /health", request(method=b"HEAD", target=b"/health", headers=CLOSE))
    add("no route", request(target=b"/nowhere/{c}", headers=CLOSE))
    add("encoded slash", request(target=path("a") + b"%2Fb", headers=CLOSE))
    add("dot segments", request(target=b"/public/{c}/x/../a", headers=CLOSE), "a")
    add("absolute form", request(target=b"http://h.example" + path("a"), headers=CLOSE), "a")
    add("asterisk form", request(method=b"OPTIONS", target=b"*", headers=CLOSE))
    add("request ID kept", request(headers=b"X-Request-Id: trace-123\r\n" + CLOSE), "a")
    add("bad request ID", request(headers=b"X-Request-Id: a b\r\n" + CLOSE), "a")
    add(
        "hop-by-hop and override headers",
        request(
            headers=b"Connection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\n"
            b"X-HTTP-Method-Override: DELETE\r\nX-Kept: yes\r\n"
        ),
        "a",
    )
    add("X-Forwarded-For", request(headers=b"X-Forwarded-For: 192.0.2.1\r\n" + CLOSE), "a")
    add("no token", request(target=secure(), headers=CLOSE))
    add("valid token", request(target=secure(), headers=_bearer() + CLOSE), "a")
    add("expired token", request(target=secure(), headers=_bearer(lifetime=-3600) + CLOSE))
    add("wrong audience", request(target=secure(), headers=_bearer(aud="other") + CLOSE))
    add("Basic scheme", request(target=secure(), headers=b"Authorization: Basic YTpi\r\n" + CLOSE))
    add(
        "garbage token",
        request(target=secure(), headers=b"Authorization: Bearer x.y.z\r\n" + CLOSE),
    )
    add("method not allowed", request(method=b"DELETE", target=secure(), headers=CLOSE))
    add(
        "POST with Content-Length",
        post(b"Content-Length: 5\r\n" + CLOSE, b"hello"),
        "a",
    )
    add(
        "POST chunked", post(b"Transfer-Encoding: chunked\r\n" + CLOSE, chunked(b"he", b"llo")), "a"
    )
    add("POST body too large", post(b"Content-Length: 100\r\n" + CLOSE, b"x" * 100))
    add(
        "POST chunked body too large",
        post(b"Transfer-Encoding: chunked\r\n" + CLOSE, chunked(b"x" * 50, b"y" * 50)),
    )
    add(
        "POST with Expect: 100-continue",
        post(b"Expect: 100-continue\r\nContent-Length: 5\r\n" + CLOSE, b"hello"),
        "a",
    )
    add(
        "POST to a protected route without a token",
        request(method=b"POST", target=secure(), headers=b"Content-Length: 5\r\n" + CLOSE)
        + b"hello",
    )
    add(
        "CORS preflight",
        request(
            method=b"OPTIONS",
            headers=b"Origin: https://app.example\r\nAccess-Control-Request-Method: GET\r\n"
            + CLOSE,
        ),
    )
    add("CORS actual request", request(headers=b"Origin: https://app.example\r\n" + CLOSE), "a")
    add("pipelined GETs", request("a") + request("b", headers=CLOSE), "a", "b")
    add("keep-alive HTTP/1.0", request("a", version=b"HTTP/1.0"), "a")
    add("TRACE on a * route", request(method=b"TRACE", headers=CLOSE))
    add("CONNECT", request(method=b"CONNECT", target=b"h.example:443", headers=CLOSE))
    return cases


@pytest.fixture
async def recorders() -> AsyncIterator[dict[str, RecordingUpstream]]:
    started = {name: await RecordingUpstream().start() for name in ("traffic", "reference")}
    yield started
    for recorder in started.values():
        await recorder.stop()


def _document(upstream_port: int) -> dict[str, object]:
    document = seed_document(
        f"http://127.0.0.1:{upstream_port}",
        limits={"maxBodyBytes": MAX_BODY},
        cors={"allowOrigins": ["https://app.example"]},
    )
    paths = document["paths"]
    assert isinstance(paths, list)
    paths.append(
        {
            "method": ["GET", "POST"],
            "path": "/secure/*",
            "auth": True,
            "integration": {"type": "http_proxy", "server": "orders"},
        }
    )
    return document


def _visible(outcome: Outcome) -> list[tuple[str, str, bytes, list[tuple[str, str]]]]:
    """What the upstream saw, minus what differs by construction (the upstream's port in
    `Host`, the gateway's own request IDs)."""
    own_id = {"trace-123"}
    return [
        (
            f.method,
            f.label,
            f.body,
            [
                (name.lower(), value)
                for name, value in f.headers
                if name.lower() != "host"
                and not (name.lower() == "x-request-id" and value not in own_id)
            ],
        )
        for f in outcome.forwarded
    ]


async def test_traffic_server_agrees_with_the_aiohttp_reference(
    recorders: dict[str, RecordingUpstream], gateway_factory: StartGateway
) -> None:
    traffic = await gateway_factory(_document(recorders["traffic"].port))
    reference = await gateway_factory(_document(recorders["reference"].port), reference=True)
    corpus = request_corpus()
    cases = {f"c{index}": case for index, case in enumerate(corpus)}
    framing = {f"c{index + len(corpus)}": case for index, case in enumerate(CORPUS)}
    everything = {**cases, **framing}
    ours, theirs = await asyncio.gather(
        run_cases(traffic.port, recorders["traffic"], everything.items(), quiet=QUIET_SECONDS),
        run_cases(reference.port, recorders["reference"], everything.items(), quiet=QUIET_SECONDS),
    )
    failures = []
    for case_id, case in cases.items():
        mine, ref = _final(ours[case_id]), _final(theirs[case_id])
        if mine != ref:
            failures.append(f"{case.name}:\n  traffic   {mine}\n  reference {ref}")
    assert failures == [], "\n".join(failures)
    results.record(SUITE, "request cases that agree", len(cases))
    counts: Counter[str] = Counter(compare(ours[case_id], theirs[case_id]) for case_id in framing)
    for verdict in ("agree", "stricter", "looser", "differ"):
        results.record(SUITE, f"framing cases, traffic server {verdict}", counts[verdict])


def _final(outcome: Outcome) -> tuple[object, ...]:
    """Statuses and codes (interim `100`s left out) and what the upstream saw."""
    answers = [(s, c) for s, c in zip(outcome.statuses, outcome.codes, strict=True) if s != 100]
    return (answers, _visible(outcome))
