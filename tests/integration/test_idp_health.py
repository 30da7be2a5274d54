"""Identity-provider health in the Authorizer's status, and `wardgate explain --gateway`,
against the real control plane with the operator running (probing every `PROBE_SECONDS`).

The JWKS is served on loopback by this process, which the operator (in a thread of this
process) reaches; an outage is the server going away, so connections are refused."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.support.key_set_server import KeySetServer
from tests.support.operator_fixtures import (
    Objects,
    RunningOperator,
    seed_objects,
    service_account_kubeconfig,
)
from tests.support.tokens import jwks, rsa_key
from wardgate.devcluster.cluster import KubeCluster

pytestmark = pytest.mark.cluster

API = "wardgate.io/v1alpha1"
PROBE_SECONDS = 2.0
# Besides the probe interval: the reconcile, the status patch and the watch delivering it.
STATUS_LATENCY = 5.0
SECRET = "explain-secret-0123456789-abcdefghijklm"


@pytest.fixture(scope="module")
def operator(
    cluster: KubeCluster, objects: Objects, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningOperator]:
    kubeconfig = service_account_kubeconfig(cluster, tmp_path_factory.mktemp("operator"))
    running = RunningOperator(kubeconfig, probe_seconds=PROBE_SECONDS).start()
    yield running
    running.stop()


@pytest.fixture
def key_server() -> Iterator[KeySetServer]:
    server = KeySetServer(jwks(rsa_key("partners-2025-06"))).start()
    yield server
    server.stop()


def authorizer_row(cluster: KubeCluster, namespace: str) -> dict[str, str]:
    lines = cluster.kubectl("get", "authorizers", "-n", namespace).stdout.splitlines()
    header = lines[0].split()
    return dict(zip(header, lines[1].split(), strict=False))


def test_authorizer_status_shows_a_jwks_outage_within_one_probe(
    operator: RunningOperator,
    objects: Objects,
    namespace: str,
    cluster: KubeCluster,
    key_server: KeySetServer,
) -> None:
    objects.apply(
        namespace,
        {
            "apiVersion": API,
            "kind": "Authorizer",
            "metadata": {"name": "partners"},
            "spec": {
                "type": "jwt",
                "jwksUri": key_server.url,
                "algorithms": ["RS256"],
                "issuer": "https://partners.example.com/",
                "audience": "api-audience",
            },
        },
    )
    objects.wait_condition("Authorizer", namespace, "partners", "IdentityProviderReachable", "True")
    objects.wait_condition("Authorizer", namespace, "partners", "Ready", "True")
    body = objects.get("Authorizer", namespace, "partners")
    assert body is not None
    healthy = body["status"]["jwks"]
    assert healthy["uri"] == key_server.url
    assert healthy["reachable"] is True
    assert healthy["keyIds"] == ["partners-2025-06"]
    assert healthy["lastSuccess"]
    assert healthy.get("error") is None
    assert body["status"]["issuer"] == "https://partners.example.com/"
    row = authorizer_row(cluster, namespace)
    assert (row["JWKS"], row["READY"], row["KEYS"]) == ("true", "True", '["partners-2025-06"]')

    key_server.stop()
    outage = time.monotonic()
    down = objects.wait_condition(
        "Authorizer",
        namespace,
        "partners",
        "Ready",
        "False",
        reason="JwksUnreachable",
        timeout=PROBE_SECONDS + STATUS_LATENCY,
    )
    assert time.monotonic() - outage <= PROBE_SECONDS + STATUS_LATENCY
    assert key_server.url in down["message"]
    body = objects.get("Authorizer", namespace, "partners")
    assert body is not None
    jwks_status = body["status"]["jwks"]
    assert jwks_status["reachable"] is False
    assert jwks_status["error"]
    assert jwks_status["keyIds"] == ["partners-2025-06"]  # the last known keys
    assert jwks_status["lastSuccess"] == healthy["lastSuccess"]
    row = authorizer_row(cluster, namespace)
    assert (row["JWKS"], row["READY"]) == ("false", "False")

    key_server.start()  # the same port: the provider is back
    objects.wait_condition(
        "Authorizer", namespace, "partners", "Ready", "True", timeout=PROBE_SECONDS + STATUS_LATENCY
    )


def test_explain_reads_the_gateway_config_from_the_cluster(
    operator: RunningOperator, objects: Objects, namespace: str, cluster: KubeCluster
) -> None:
    objects.apply(namespace, *seed_objects(SECRET))
    objects.wait("the rendered config", lambda: objects.config(namespace, "api") is not None)
    now = int(time.time())
    claims = {
        "iss": "https://issuer.example.com",
        "aud": "api-audience",
        "sub": "user-1",
        "iat": now,
        "exp": now + 600,
    }

    def explain(token: str) -> tuple[int, dict[str, Any]]:
        args = ["explain", "--gateway", "api", "-n", namespace, "--token", token]
        completed = subprocess.run(
            [sys.executable, "-m", "wardgate", *args, "-o", "json", "GET", "/private/orders"],
            capture_output=True,
            text=True,
            env=cluster.env,
            cwd=Path(__file__).parent,
            timeout=120,
        )
        assert completed.returncode in (0, 1), completed.stderr
        document: dict[str, Any] = json.loads(completed.stdout)
        return completed.returncode, document

    status, admitted = explain(jwt.encode(claims, SECRET, algorithm="HS256"))
    assert status == 0
    assert admitted["config"] == f"configmap/wardgate-api-config -n {namespace}"
    assert admitted["auth"]["authorizer"] == "jwt"
    assert admitted["result"]["admitted"] is True
    assert admitted["result"]["integration"].startswith("http_proxy to server 'orders'")

    forged = jwt.encode(claims, "another-secret-0123456789-abcdefghijk", algorithm="HS256")
    status, refused = explain(forged)
    assert status == 1
    assert (refused["result"]["code"], refused["result"]["failingCheck"]) == (
        "invalid_signature",
        "signature",
    )
