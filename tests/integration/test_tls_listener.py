"""The traffic server's TLS listener, in-process on loopback, with real TLS clients (asyncio's
and aiohttp's, OpenSSL underneath) and certificates with real keys: selection by SNI (exact,
wildcard, default, none), TLS versions, 421 for a host the connection is not for, the
plain-HTTP redirect, rotation under load without a failed request, and a bad certificate
that leaves the last good one serving."""

from __future__ import annotations

import asyncio
import copy
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from tests.support.certificates import Authority, Pair, new_authority, peer_fingerprint
from tests.support.gateway import (
    CountingUpstream,
    RunningGateway,
    seed_document,
    start_gateway,
    stop_gateway,
)
from tests.support.tokens import HS_SECRET
from wardgate.commands.explain import render_text
from wardgate.gateway.config import ConfigError, parse_config
from wardgate.gateway.errors import code_of_body
from wardgate.gateway.explain import explain_request
from wardgate.gateway.loading import LoadedConfig, document_hash
from wardgate.gateway.server import ServeOptions, start_tls_site


@dataclass
class TlsGateway:
    gateway: RunningGateway
    tls_port: int
    authority: Authority
    secrets: dict[str, str]
    document: dict[str, Any]

    async def swap(self, document: dict[str, Any], secrets: dict[str, str]) -> None:
        holder = self.gateway.runner.holder
        loaded = LoadedConfig(
            config=parse_config(document),
            secrets={k: SecretStr(v) for k, v in secrets.items()},
            config_hash=document_hash([document, sorted(secrets.values())]),
        )
        new = await asyncio.to_thread(holder.build, loaded)
        await holder.swap(new, loaded.config_hash)
        self.document, self.secrets = document, secrets


def tls_document(upstream_url: str, **tls: Any) -> dict[str, Any]:
    return seed_document(
        upstream_url,
        tls={
            "certificates": [
                {"certificate": "$secret.api.tls.crt", "key": "$secret.api.tls.key"},
                {"certificate": "$secret.apps.tls.crt", "key": "$secret.apps.tls.key"},
            ],
            **tls,
        },
    )


def tls_secrets(api: Pair, apps: Pair) -> dict[str, str]:
    return {
        "JWT_SECRET": HS_SECRET,
        "api.tls.crt": api.chain_pem,
        "api.tls.key": api.key_pem,
        "apps.tls.crt": apps.chain_pem,
        "apps.tls.key": apps.key_pem,
    }


@pytest.fixture(scope="module")
def authority() -> Authority:
    return new_authority()


@pytest.fixture(scope="module")
def pairs(authority: Authority) -> dict[str, Pair]:
    return {
        "api": authority.issue("api.example.com"),
        "apps": authority.issue("*.apps.example.com"),
    }


async def _start(
    upstream: CountingUpstream, authority: Authority, pairs: dict[str, Pair], **tls: Any
) -> TlsGateway:
    document = tls_document(upstream.url, **tls)
    secrets = tls_secrets(pairs["api"], pairs["apps"])
    running = await start_gateway(document, secrets=secrets, log_requests=False)
    site = await start_tls_site(
        running.runner,  # type: ignore[arg-type]
        running.runner.holder.current.loaded,
        ServeOptions(host="127.0.0.1", tls_port=0),
    )
    assert site is not None
    port = running.runner.addresses[1][1]
    return TlsGateway(running, port, authority, secrets, document)


@pytest.fixture
async def tls_gateway(
    upstream: CountingUpstream, authority: Authority, pairs: dict[str, Pair]
) -> AsyncIterator[TlsGateway]:
    running = await _start(upstream, authority, pairs)
    yield running
    await stop_gateway(running.gateway)


@dataclass
class Exchange:
    status: int
    body: bytes
    headers: dict[str, str]
    fingerprint: str
    version: str


async def fetch(
    port: int,
    context: ssl.SSLContext,
    server_name: str | None,
    host: str,
    path: str = "/health",
) -> Exchange:
    """One request on a new TLS connection: the answer and the certificate presented."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=server_name or ""
    )
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        raw = await reader.read()
        ssl_object = writer.get_extra_info("ssl_object")
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        return Exchange(
            int(lines[0].split()[1]),
            body,
            headers,
            peer_fingerprint(ssl_object),
            ssl_object.version(),
        )
    finally:
        writer.close()
        await writer.wait_closed()


def no_sni_context(authority: Authority) -> ssl.SSLContext:
    context = authority.client_context()
    context.check_hostname = False  # a client by IP address: no name, no SNI
    return context


async def test_sni_selects_exact_wildcard_and_default_certificates(
    tls_gateway: TlsGateway, pairs: dict[str, Pair]
) -> None:
    port, context = tls_gateway.tls_port, tls_gateway.authority.client_context()
    api = await fetch(port, context, "api.example.com", "api.example.com")
    assert (api.status, api.fingerprint) == (200, pairs["api"].fingerprint)
    apps = await fetch(port, context, "team1.apps.example.com", "team1.apps.example.com")
    assert (apps.status, apps.fingerprint) == (200, pairs["apps"].fingerprint)
    # Two labels below the wildcard: not covered; the default certificate is presented, and
    # the client's own verification refuses it.
    with pytest.raises(ssl.SSLCertVerificationError):
        await fetch(port, context, "a.b.apps.example.com", "a.b.apps.example.com")
    anonymous = await fetch(port, no_sni_context(tls_gateway.authority), None, "10.0.0.1")
    assert (anonymous.status, anonymous.fingerprint) == (200, pairs["api"].fingerprint)
    # TLS 1.3 when the client has it.
    assert api.version == "TLSv1.3"


async def test_a_host_the_connection_is_not_for_is_421(tls_gateway: TlsGateway) -> None:
    port, context = tls_gateway.tls_port, tls_gateway.authority.client_context()
    wrong = await fetch(port, context, "api.example.com", "team1.apps.example.com")
    assert wrong.status == 421
    assert code_of_body(wrong.body) == "misdirected_request"
    # The SNI name with a port and another case is the same host.
    same = await fetch(port, context, "api.example.com", "API.example.com:8443")
    assert same.status == 200
    # Another name of the certificate the SNI selected (a wildcard's): allowed, as HTTP/2
    # clients reuse a connection for every name of its certificate.
    sibling = await fetch(port, context, "team1.apps.example.com", "team2.apps.example.com")
    assert sibling.status == 200
    # An SNI name no certificate has: the default certificate, and only that name.
    unnamed = no_sni_context(tls_gateway.authority)
    other = await fetch(port, unnamed, "other.example.org", "api.example.com")
    assert other.status == 421
    assert (await fetch(port, unnamed, "other.example.org", "other.example.org")).status == 200
    # Without SNI nothing is compared.
    assert (await fetch(port, unnamed, None, "anything.example.net")).status == 200


async def test_plain_http_still_serves_and_tls_clients_below_the_minimum_are_refused(
    upstream: CountingUpstream, authority: Authority, pairs: dict[str, Pair]
) -> None:
    running = await _start(upstream, authority, pairs, minVersion="1.3")
    try:
        context = authority.client_context()
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        # The server's protocol-version alert, or its reset of the connection.
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await fetch(running.tls_port, context, "api.example.com", "api.example.com")
        # Back to 1.2 in place: the next handshake accepts TLS 1.2.
        document = copy.deepcopy(running.document)
        document["tls"]["minVersion"] = "1.2"
        await running.swap(document, running.secrets)
        answer = await fetch(running.tls_port, context, "api.example.com", "api.example.com")
        assert (answer.status, answer.version) == (200, "TLSv1.2")
        plain = await running.gateway.request("GET", "/health")
        assert plain.status == 200
    finally:
        await stop_gateway(running.gateway)


async def test_plain_http_redirects_to_https_keeping_path_and_query(
    upstream: CountingUpstream, authority: Authority, pairs: dict[str, Pair]
) -> None:
    running = await _start(upstream, authority, pairs, redirectHttp=True)
    try:
        gateway = running.gateway
        answer = await gateway.request(
            "POST", "/private/orders?page=2&q=a%20b", {"Host": "API.example.com:8080"}, b"{}"
        )
        assert answer.status == 308
        assert answer.headers["Location"] == "https://api.example.com/private/orders?page=2&q=a%20b"
        assert upstream.seen == []
        document = copy.deepcopy(running.document)
        document["tls"]["httpsPort"] = 8443
        document["hostnames"] = ["api.example.com", "*.apps.example.com"]
        await running.swap(document, running.secrets)
        answer = await gateway.request("GET", "/health", {"Host": "x.apps.example.com"})
        assert answer.headers["Location"] == "https://x.apps.example.com:8443/health"
        # No redirect to a host the gateway does not serve.
        refused = await gateway.request("GET", "/health", {"Host": "evil.example.net"})
        assert (refused.status, refused.code) == (404, "unknown_host")
        assert "Location" not in refused.headers
        # The TLS listener answers as usual.
        tls = await fetch(
            running.tls_port, authority.client_context(), "api.example.com", "api.example.com"
        )
        assert tls.status == 200
    finally:
        await stop_gateway(running.gateway)


async def test_rotation_under_load_fails_no_request_and_new_connections_see_the_new_certificate(
    tls_gateway: TlsGateway, authority: Authority, pairs: dict[str, Pair]
) -> None:
    port = tls_gateway.tls_port
    url = f"https://api.example.com:{port}/health"
    context = authority.client_context()
    statuses: list[int] = []
    failures: list[str] = []
    stop = asyncio.Event()
    answered = asyncio.Event()

    async def more_answers(count: int) -> None:
        target = len(statuses) + count
        while len(statuses) < target:
            answered.clear()
            await answered.wait()

    class Loopback(aiohttp.abc.AbstractResolver):
        async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[Any]:
            return [
                {"hostname": host, "host": "127.0.0.1", "port": port, "family": 2,
                 "proto": 0, "flags": 0}
            ]  # fmt: skip

        async def close(self) -> None:
            pass

    async def keep_alive_client() -> None:
        connector = aiohttp.TCPConnector(ssl=context, resolver=Loopback(), limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            while not stop.is_set():
                try:
                    async with session.get(url) as response:
                        await response.read()
                        statuses.append(response.status)
                        answered.set()
                except (aiohttp.ClientError, OSError) as exc:
                    failures.append(repr(exc))
                    answered.set()

    async def new_connection_client() -> None:
        while not stop.is_set():
            try:
                answer = await fetch(port, context, "api.example.com", "api.example.com")
                statuses.append(answer.status)
                answered.set()
            except (OSError, ssl.SSLError) as exc:
                failures.append(repr(exc))
                answered.set()

    clients = [asyncio.create_task(keep_alive_client()) for _ in range(3)]
    clients.append(asyncio.create_task(new_connection_client()))
    try:
        fingerprints = [pairs["api"].fingerprint]
        for _ in range(3):
            rotated = authority.issue("api.example.com")
            await more_answers(20)  # traffic on the old certificate first
            secrets = {
                **tls_gateway.secrets,
                "api.tls.crt": rotated.chain_pem,
                "api.tls.key": rotated.key_pem,
            }
            await tls_gateway.swap(tls_gateway.document, secrets)
            seen = await fetch(port, context, "api.example.com", "api.example.com")
            assert seen.fingerprint == rotated.fingerprint
            fingerprints.append(rotated.fingerprint)
        await more_answers(20)
    finally:
        stop.set()
        await asyncio.gather(*clients)
    assert failures == []
    assert set(statuses) == {200}
    assert len(set(fingerprints)) == 4


async def test_a_bad_certificate_is_refused_and_the_last_good_one_keeps_serving(
    tls_gateway: TlsGateway,
    authority: Authority,
    pairs: dict[str, Pair],
    caplog: pytest.LogCaptureFixture,
) -> None:
    port, context = tls_gateway.tls_port, authority.client_context()
    good_secrets = dict(tls_gateway.secrets)
    other = authority.issue("api.example.com")
    now = datetime.now(UTC)
    expired = authority.issue(
        "api.example.com", not_before=now - timedelta(days=10), not_after=now - timedelta(days=1)
    )
    bad = {
        "not PEM": ("this is not a certificate", pairs["api"].key_pem),
        "does not match": (pairs["api"].chain_pem, other.key_pem),
        "expired": (expired.chain_pem, expired.key_pem),
    }
    # A route change in the same config still applies.
    document = copy.deepcopy(tls_gateway.document)
    document["paths"].append({"method": "GET", "path": "/new", "response": {"ok": True}})
    for reason, (chain, key) in bad.items():
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="wardgate.gateway"):
            await tls_gateway.swap(
                document, {**good_secrets, "api.tls.crt": chain, "api.tls.key": key}
            )
        assert reason in caplog.text
        assert "last good version keeps serving" in caplog.text
        assert key not in caplog.text or key == pairs["api"].key_pem
        assert "PRIVATE KEY" not in caplog.text
        answer = await fetch(port, context, "api.example.com", "api.example.com", "/new")
        assert answer.status == 200
        assert answer.fingerprint == pairs["api"].fingerprint


async def test_a_bad_certificate_without_a_good_version_is_a_config_error(
    pairs: dict[str, Pair], upstream: CountingUpstream
) -> None:
    document = tls_document(upstream.url)
    secrets = {**tls_secrets(pairs["api"], pairs["apps"]), "apps.tls.key": pairs["api"].key_pem}
    with pytest.raises(ConfigError) as refused:
        await start_gateway(document, secrets=secrets, log_requests=False)
    assert refused.value.problems == [
        "tls.certificates.1: tls.key does not match the certificate in tls.crt "
        "(subject CN=*.apps.example.com)"
    ]


async def test_explain_shows_the_certificate_and_agrees_on_421(tls_gateway: TlsGateway) -> None:
    loaded = tls_gateway.gateway.runner.holder.current.loaded
    port, context = tls_gateway.tls_port, tls_gateway.authority.client_context()
    for server_name, host in [
        ("api.example.com", "team1.apps.example.com"),
        ("api.example.com", "api.example.com"),
        ("team1.apps.example.com", "team2.apps.example.com"),
    ]:
        answer = await fetch(port, context, server_name, host)
        report = await explain_request(
            loaded, "GET", "/health", [("Host", host)], server_name=server_name
        )
        assert report.status == answer.status
        assert report.code == code_of_body(answer.body)
        text = render_text(report, "test")
        listener = next(line for line in text.splitlines() if line.startswith("listener"))
        assert f"SNI {server_name}" in listener
        certificate = "apps" if "apps" in server_name else "api"
        assert f"certificate {certificate} (selected by name)" in listener
        assert listener.split()[1] == ("FAIL" if answer.status == 421 else "TLS,")


async def test_an_upstream_verified_against_a_ca_bundle(
    authority: Authority, tmp_path: Path
) -> None:
    from aiohttp import web

    served = authority.issue("localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*_pem_files(served, tmp_path))

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"over": "tls"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    port = runner.addresses[0][1]
    stranger = new_authority("another CA")

    def document(bundle: str | None) -> dict[str, Any]:
        server: dict[str, Any] = {"url": f"https://localhost:{port}"}
        if bundle is not None:
            server["caBundle"] = "$secret.upstream-ca.ca.crt"
        return {
            "servers": {"internal": server},
            "paths": [
                {
                    "method": "GET",
                    "path": "/internal/*",
                    "integration": {"type": "http_proxy", "server": "internal"},
                }
            ],
        }

    try:
        for bundle, status in [(authority.pem, 200), (None, 502), (stranger.pem, 502)]:
            secrets = {"upstream-ca.ca.crt": bundle} if bundle is not None else {}
            gateway = await start_gateway(document(bundle), secrets=secrets, log_requests=False)
            try:
                answer = await gateway.request("GET", "/internal/x")
                assert answer.status == status, (bundle is not None, answer.body)
            finally:
                await stop_gateway(gateway)
        with pytest.raises(ConfigError) as refused:
            await start_gateway(
                document("x"), secrets={"upstream-ca.ca.crt": "not a bundle"}, log_requests=False
            )
        assert refused.value.problems == [
            "servers.internal.caBundle: not PEM: it has no CERTIFICATE block"
        ]
    finally:
        await runner.cleanup()


def _pem_files(pair: Pair, directory: Path) -> tuple[str, str]:
    (directory / "chain.pem").write_text(pair.chain_pem)
    (directory / "key.pem").write_text(pair.key_pem)
    return str(directory / "chain.pem"), str(directory / "key.pem")
