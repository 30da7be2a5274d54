"""TLS certificates from Kubernetes TLS Secrets, end to end on the real control plane: the
operator renders a Gateway's `spec.tls`, a gateway replica (in-process, as the Gateway's own
ServiceAccount, following its ConfigMap as a pod does) reads the Secrets its Role allows and
serves them; a rotated Secret is served in place; an invalid one is `InvalidCertificate` on
the Gateway (what is wrong, never the key) and the last good certificate keeps serving."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.certificates import Authority, Pair, new_authority, peer_fingerprint
from tests.support.operator_fixtures import (
    Objects,
    RunningOperator,
    account_kubeconfig,
)
from wardgate.devcluster.cluster import KubeCluster
from wardgate.gateway.app import GatewayRunner, build_app, server_options
from wardgate.gateway.kubesource import (
    ConfigMapSource,
    ConfigObject,
    ConfigWatch,
    load_client_configuration,
    wait_for_snapshot,
)
from wardgate.gateway.loading import SecretSource, load_config
from wardgate.gateway.server import ServeOptions, follow_config, start_tls_site

pytestmark = pytest.mark.cluster

API = "wardgate.io/v1alpha1"
HOST = "api.example.com"


def tls_secret(name: str, pair: Pair, type_: str = "kubernetes.io/tls") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": type_,
        "stringData": pair.secret_data(),
    }


def tls_gateway(*refs: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Gateway",
        "metadata": {"name": "api"},
        "spec": {"tls": {"certificateRefs": [{"name": ref} for ref in refs]}},
    }


def health_route() -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Route",
        "metadata": {"name": "health"},
        "spec": {
            "gatewayRef": {"name": "api"},
            "paths": [{"method": "GET", "path": "/health", "response": {"ok": True}}],
        },
    }


async def presented(port: int, authority: Authority) -> str:
    """The fingerprint of the certificate a new TLS connection for HOST is given."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=authority.client_context(), server_hostname=HOST
    )
    try:
        writer.write(f"GET /health HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        answer = await reader.read()
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:80]
        return peer_fingerprint(writer.get_extra_info("ssl_object"))
    finally:
        writer.close()
        await writer.wait_closed()


async def until_presented(port: int, authority: Authority, fingerprint: str) -> None:
    """Wait (30 s at most) until new connections are given the certificate `fingerprint`."""
    for _ in range(300):
        if await presented(port, authority) == fingerprint:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the rotated certificate was not served within 30 s")


def config_map_hash(objects: Objects, namespace: str) -> str:
    config_map = objects.get("ConfigMap", namespace, "wardgate-api-config") or {}
    return str(config_map["metadata"]["annotations"]["wardgate.io/config-hash"])


async def test_certificates_from_secrets_rotate_in_place_and_a_bad_one_changes_nothing(
    operator: RunningOperator,
    objects: Objects,
    cluster: KubeCluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    authority = new_authority()
    first = authority.issue(HOST)
    objects.apply(namespace, tls_secret("api-tls", first), tls_gateway("api-tls"), health_route())
    await asyncio.to_thread(
        objects.wait_condition, "Gateway", namespace, "api", "Accepted", "True", None, 90
    )
    config_map = objects.get("ConfigMap", namespace, "wardgate-api-config")
    assert config_map is not None
    assert "PRIVATE KEY" not in json.dumps(config_map)
    assert "BEGIN CERTIFICATE" not in json.dumps(config_map)
    deployment = objects.get("Deployment", namespace, "wardgate-api")
    assert deployment is not None
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-2:] == ["--tls-port", "8443"]
    service = objects.get("Service", namespace, "wardgate-api")
    assert service is not None
    assert {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"} in service[
        "spec"
    ]["ports"]

    # A replica as the Gateway's ServiceAccount: its Role lets it read this Secret.
    kubeconfig = await asyncio.to_thread(
        account_kubeconfig, cluster, namespace, "wardgate-api", tmp_path
    )
    source = ConfigMapSource(
        ConfigObject(namespace, "wardgate-api-config"), load_client_configuration(kubeconfig)
    )
    snapshot = await asyncio.to_thread(wait_for_snapshot, source, 30)
    loaded = load_config(
        snapshot.document,
        SecretSource(directory=None, environ=snapshot.secrets),
        config_hash=snapshot.config_hash,
    )
    runner = GatewayRunner(build_app(loaded), **server_options(loaded))
    await runner.setup()
    following: asyncio.Task[None] | None = None
    try:
        await start_tls_site(runner, loaded, ServeOptions(host="127.0.0.1", tls_port=0))
        port = runner.addresses[0][1]
        following = asyncio.create_task(
            follow_config(runner.holder, ConfigWatch(source, snapshot.resource_version))
        )
        assert await presented(port, authority) == first.fingerprint

        rotated = authority.issue(HOST)
        await asyncio.to_thread(objects.apply, namespace, tls_secret("api-tls", rotated))
        await until_presented(port, authority, rotated.fingerprint)
        good_hash = config_map_hash(objects, namespace)

        now = datetime.now(UTC)
        expired = authority.issue(
            HOST, not_before=now - timedelta(days=9), not_after=now - timedelta(days=2)
        )
        mismatched = authority.issue(HOST)
        bad = {
            "expired on": expired.secret_data(),
            "tls.key does not match": {**rotated.secret_data(), "tls.key": mismatched.key_pem},
            "tls.crt is not PEM": {"tls.crt": "not a certificate", "tls.key": rotated.key_pem},
        }
        for reason, data in bad.items():
            body = {**tls_secret("api-tls", rotated), "stringData": data}
            await asyncio.to_thread(objects.apply, namespace, body)
            condition = await asyncio.to_thread(
                objects.wait_condition,
                "Gateway",
                namespace,
                "api",
                "Accepted",
                "False",
                "InvalidCertificate",
            )
            assert condition["message"].startswith("spec.tls.certificateRefs.0: Secret 'api-tls'")
            assert reason in condition["message"]
            status = json.dumps((objects.get("Gateway", namespace, "api") or {}).get("status"))
            assert "PRIVATE KEY" not in status
            assert data["tls.key"].splitlines()[1] not in status
            # Nothing rolled out: the replica keeps the last good certificate.
            assert config_map_hash(objects, namespace) == good_hash
            assert await presented(port, authority) == rotated.fingerprint
            # Fixed again: the Gateway is accepted with the same config (not re-read meanwhile).
            await asyncio.to_thread(objects.apply, namespace, tls_secret("api-tls", rotated))
            await asyncio.to_thread(
                objects.wait_condition, "Gateway", namespace, "api", "Accepted", "True"
            )
        events = json.dumps(objects.list("Event", namespace))
        assert "PRIVATE KEY" not in events
        assert rotated.key_pem.splitlines()[1] not in events

        # A Secret of another type is named as such.
        await asyncio.to_thread(
            objects.apply,
            namespace,
            tls_secret("opaque-tls", rotated, "Opaque"),
            tls_gateway("api-tls", "opaque-tls"),
        )
        condition = await asyncio.to_thread(
            objects.wait_condition,
            "Gateway",
            namespace,
            "api",
            "Accepted",
            "False",
            "InvalidCertificate",
        )
        assert (
            "Secret 'opaque-tls' is of type Opaque, not kubernetes.io/tls" in condition["message"]
        )
        assert await presented(port, authority) == rotated.fingerprint
    finally:
        if following is not None:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
        await runner.cleanup()
