"""The contenders: keys and tokens (the tests' own helpers), Wardgate's config and
processes, nginx, HAProxy and the Python floor, started once for the proxy cases."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    CONNECTIONS,
    HERE,
    UPSTREAM_BODY,
    Contender,
    Processes,
    pinned,
    render,
    wait_http,
)
from tests.support.ports import free_port
from tests.support.tokens import AUDIENCE, ISSUER, claims, hs_token, jwks, rsa_key
from tests.support.tokens import HS_SECRET as SECRET


@dataclass
class Keys:
    hs_token: str
    hs_expired: str
    rs_token: str
    jwks: str
    public_pem: bytes


def make_keys() -> Keys:
    """The cases' tokens, minted with the tests' helpers: valid for a day, and one expired."""
    key = rsa_key("bench")
    now = time.time()
    valid = claims(sub="bench", now=now, lifetime=86400)
    expired = claims(sub="bench", now=now - 7200, lifetime=3600)
    return Keys(
        hs_token=hs_token(valid),
        hs_expired=hs_token(expired),
        rs_token=key.sign(valid),
        jwks=json.dumps(jwks(key), separators=(",", ":")),
        public_pem=key.public_pem(),
    )


def wardgate_config(upstream_port: int, authorizer: dict[str, Any], routes: int = 0) -> str:
    """The gateway config of the cases: the seed example's two paths, plus `routes` more."""
    paths: list[dict[str, Any]] = [
        {"method": "GET", "path": "/health", "response": {"status": "ok"}},
        {
            "method": "GET",
            "path": "/private/orders",
            "auth": True,
            "integration": {"type": "http_proxy", "server": "orders"},
        },
    ]
    for i in range(routes):
        paths.append(
            {
                "method": ["GET", "POST"],
                "path": f"/api/v1/svc{i}/items/{{id}}",
                "auth": True,
                "integration": {"type": "http_proxy", "server": "orders"},
            }
        )
    config = {
        "authorizer": {"type": "jwt", "issuer": ISSUER, "audience": AUDIENCE, **authorizer},
        "paths": paths,
        "servers": {"orders": f"http://127.0.0.1:{upstream_port}"},
    }
    return json.dumps(config)


@dataclass
class Wardgate:
    process: subprocess.Popen[bytes]
    base: str


def start_wardgate(
    setup: Setup,
    name: str,
    config: str,
    cpu: str | None,
    workers: int = 1,
    extra: list[str] | None = None,
) -> Wardgate:
    path = setup.workdir / f"wardgate-{name}.json"
    path.write_text(config)
    port, admin = free_port(), free_port()
    command = [
        setup.wardgate_command,
        "gateway",
        "--config",
        str(path),
        "--port",
        str(port),
        "--admin-port",
        str(admin),
        "--access-log",
        "off",
        "--workers",
        str(workers),
        *(extra or []),
    ]
    process = setup.procs.start(pinned(cpu, command), env={**os.environ, "JWT_SECRET": SECRET})
    wait_http(f"http://127.0.0.1:{admin}/readyz")
    return Wardgate(process, f"http://127.0.0.1:{port}")


@dataclass
class Setup:
    procs: Processes
    workdir: Path
    keys: Keys
    upstream_port: int
    contender_cpu: str | None
    load_cpu: str | None
    wardgate_command: str
    nginx_health: str = ""
    nginx_proxy: str = ""
    haproxy_hs: str = ""
    haproxy_rs: str = ""
    wardgate_hs: str = ""
    wardgate_rs: str = ""
    floor: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    """Root process of each contender's base URL."""

    def contender(
        self,
        name: str,
        base: str,
        path: str,
        headers: list[str] | None = None,
        expect_status: int = 200,
        *,
        connections: int = CONNECTIONS,
        script: str | None = None,
    ) -> Contender:
        return Contender(
            name,
            base + path,
            headers or [],
            expect_status,
            connections,
            script,
            pid=self.pids.get(base),
        )


def start_all(setup: Setup) -> None:
    """The upstream, then every contender of cases 1-4 (idle ones cost nothing)."""
    work = str(setup.workdir)
    for sub in ("upstream", "anchor"):
        for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (setup.workdir / f"{sub}-{temp}").mkdir()
    upstream_conf = setup.workdir / "nginx-upstream.conf"
    upstream_conf.write_text(
        render(
            "nginx-upstream.conf",
            {
                "WORKDIR": work,
                "UPSTREAM_PORT": str(setup.upstream_port),
                "BODY": UPSTREAM_BODY,
                "JWKS": setup.keys.jwks,
            },
        )
    )
    setup.procs.start(pinned(setup.load_cpu, ["nginx", "-c", str(upstream_conf), "-p", work]))
    wait_http(f"http://127.0.0.1:{setup.upstream_port}/")

    health, proxy = free_port(), free_port()
    anchor_conf = setup.workdir / "nginx-anchor.conf"
    anchor_conf.write_text(
        render(
            "nginx-anchor.conf",
            {
                "WORKDIR": work,
                "HEALTH_PORT": str(health),
                "PROXY_PORT": str(proxy),
                "UPSTREAM_PORT": str(setup.upstream_port),
            },
        )
    )
    anchor = setup.procs.start(
        pinned(setup.contender_cpu, ["nginx", "-c", str(anchor_conf), "-p", work])
    )
    setup.nginx_health = f"http://127.0.0.1:{health}"
    setup.nginx_proxy = f"http://127.0.0.1:{proxy}"
    setup.pids[setup.nginx_health] = setup.pids[setup.nginx_proxy] = anchor.pid

    if shutil.which("haproxy"):
        pubkey = setup.workdir / "rs256-public.pem"
        pubkey.write_bytes(setup.keys.public_pem)
        hs, rs = free_port(), free_port()
        haproxy_conf = setup.workdir / "haproxy-jwt.cfg"
        haproxy_conf.write_text(
            render(
                "haproxy-jwt.cfg",
                {
                    "HS_PORT": str(hs),
                    "RS_PORT": str(rs),
                    "UPSTREAM_PORT": str(setup.upstream_port),
                    "SECRET": SECRET,
                    "PUBKEY": str(pubkey),
                    "ISSUER": ISSUER,
                    "AUDIENCE": AUDIENCE,
                },
            )
        )
        haproxy = setup.procs.start(
            pinned(setup.contender_cpu, ["haproxy", "-W", "-db", "-f", str(haproxy_conf)])
        )
        setup.haproxy_hs = f"http://127.0.0.1:{hs}"
        setup.haproxy_rs = f"http://127.0.0.1:{rs}"
        setup.pids[setup.haproxy_hs] = setup.pids[setup.haproxy_rs] = haproxy.pid
        wait_http(setup.haproxy_hs + "/", any_status=True)

    hs_config = wardgate_config(
        setup.upstream_port, {"secret": "$secret.JWT_SECRET", "algorithm": "HS256"}
    )
    rs_config = wardgate_config(
        setup.upstream_port,
        {
            "jwksUri": f"http://127.0.0.1:{setup.upstream_port}/.well-known/jwks.json",
            "algorithm": "RS256",
        },
    )
    floor_port = free_port()
    floor = setup.procs.start(
        pinned(
            setup.contender_cpu,
            [
                sys.executable,
                str(HERE / "python_floor.py"),
                str(floor_port),
                str(setup.upstream_port),
            ],
        )
    )
    setup.floor = f"http://127.0.0.1:{floor_port}"
    setup.pids[setup.floor] = floor.pid
    wait_http(setup.floor + "/health")
    for name, config in (("hs256", hs_config), ("rs256", rs_config)):
        gateway = start_wardgate(setup, name, config, setup.contender_cpu)
        setup.pids[gateway.base] = gateway.process.pid
        if name == "hs256":
            setup.wardgate_hs = gateway.base
        else:
            setup.wardgate_rs = gateway.base
    wait_http(setup.nginx_health + "/health")
