"""Case 8: TLS on the traffic port, Wardgate's TLS listener vs HAProxy terminating TLS with the
same certificate (EC P-256, generated at each run), `GET /health` (static) on keep-alive
connections (8a) and with a new connection, so a full handshake, per request (8b)."""

from __future__ import annotations

import ipaddress
import json
import shutil
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from bench.contenders import Setup, start_wardgate, wardgate_config
from bench.harness import Case, pinned, render
from tests.support.ports import free_port


def tls_material(workdir: Path) -> tuple[Path, Path]:
    """A CA and a certificate for 127.0.0.1 and localhost (EC P-256, real keys): the CA file,
    and a secrets directory with `bench.tls.crt` and `bench.tls.key` (also joined in
    `bench.pem` beside it, HAProxy's form)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    chain = leaf.public_bytes(pem) + ca.public_bytes(pem)
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    secrets = workdir / "tls-secrets"
    secrets.mkdir()
    (secrets / "bench.tls.crt").write_bytes(chain)
    (secrets / "bench.tls.key").write_bytes(key_pem)
    (workdir / "bench.pem").write_bytes(chain + key_pem)
    ca_file = workdir / "bench-ca.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    return ca_file, secrets


def case_tls(setup: Setup) -> list[Case]:
    """Cases 8a and 8b: Wardgate's TLS listener and HAProxy's TLS, side by side."""
    ca_file, secrets = tls_material(setup.workdir)
    document = json.loads(
        wardgate_config(setup.upstream_port, {"secret": "$secret.JWT_SECRET", "algorithm": "HS256"})
    )
    document["tls"] = {
        "certificates": [{"certificate": "$secret.bench.tls.crt", "key": "$secret.bench.tls.key"}]
    }
    tls_port = free_port()
    gateway = start_wardgate(
        setup,
        "tls",
        json.dumps(document),
        setup.contender_cpu,
        extra=["--tls-port", str(tls_port), "--secrets-dir", str(secrets)],
    )
    wardgate_tls = f"https://127.0.0.1:{tls_port}"
    setup.pids[wardgate_tls] = setup.pids[gateway.base] = gateway.process.pid
    haproxy_tls = ""
    if shutil.which("haproxy"):
        port = free_port()
        conf = setup.workdir / "haproxy-tls.cfg"
        conf.write_text(
            render(
                "haproxy-tls.cfg", {"TLS_PORT": str(port), "PEM": str(setup.workdir / "bench.pem")}
            )
        )
        haproxy = setup.procs.start(
            pinned(setup.contender_cpu, ["haproxy", "-W", "-db", "-f", str(conf)])
        )
        haproxy_tls = f"https://127.0.0.1:{port}"
        setup.pids[haproxy_tls] = haproxy.pid
        context = ssl.create_default_context(cafile=str(ca_file))
        for _ in range(100):
            try:
                with urllib.request.urlopen(haproxy_tls + "/health", timeout=2, context=context):
                    break
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
    cases = []
    for key, title, headers in (
        ("8a", "GET /health over TLS, keep-alive", []),
        (
            "8b",
            "GET /health, a new TLS connection (full handshake) per request",
            ["Connection: close"],
        ),
    ):
        contenders = [setup.contender("wardgate TLS", wardgate_tls, "/health", headers)]
        contenders[0].cafile = str(ca_file)
        if haproxy_tls:
            contenders.append(setup.contender("haproxy TLS", haproxy_tls, "/health", headers))
            contenders[-1].cafile = str(ca_file)
        contenders.append(setup.contender("wardgate plain HTTP", gateway.base, "/health", headers))
        anchor = "haproxy TLS" if haproxy_tls else None
        cases.append(Case(key, title, anchor, contenders))
    return cases
