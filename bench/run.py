#!/usr/bin/env python3
"""Wardgate side by side with nginx and HAProxy: one command, one table, one JSON file.

    .venv/bin/python bench/run.py [--rounds 3] [--duration 10] [--warmup 2] [--smoke]
                                  [--cases 1,2,3] [--output bench/results/run-TIME.json]

Cases, each against the same fast upstream (nginx answering a small JSON body,
`bench/anchors/nginx-upstream.conf`), loaded with wrk on loopback:

1. `GET /health`: Wardgate's static response vs nginx `return 200`;
2. HS256-protected proxied `GET /private/orders` with a valid token: Wardgate vs HAProxy
   2.6 `jwt_verify` (same checks: algorithm, issuer, audience, expiry, signature) vs nginx
   `proxy_pass` without auth (the cost of proxying alone);
   cases 1 and 2 also run `bench/python_floor.py`: uvloop, httptools and the proxy's
   upstream client with no framework, no auth and no logging, the floor of any Python
   server here;
   2L: p99 latency that Wardgate adds at half its peak load (wrk paced with a Lua delay),
   against the upstream answering directly at the same rate;
3. RS256 with the key from a JWKS URL: Wardgate vs HAProxy `jwt_verify` with the key file;
4. rejections on the same route, expired token (4a) and no token (4b): Wardgate vs HAProxy;
5. Wardgate with 1 and with 2 workers on the HS256 route (2 workers use both cores, which
   wrk and the upstream share: on a 2-core machine this says little about scaling);
6. the route table: match time with 10 and 10,000 routes in-process, and the RSS of a
   gateway process with 10 and with 10,000 routes;
7. the operator, from `bench/bench_operator.py`: render of one Gateway with 1,000 Routes;
   with the local control plane (started here, unless WARDGATE_KUBECONFIG names a
   cluster; not in `--smoke` or with `--no-cluster`), the median of 20 times from
   `kubectl apply` of a Route to the updated ConfigMap and the API writes of a reconcile
   with nothing to change.

Method: every contender of a case runs on CPU 0 (`taskset`), wrk and the upstream on CPU 1.
Within a round the contenders run one after the other, each warmed up first; the order
rotates between rounds, so that a neighbour's burst of load does not always hit the same
contender. Figures are the median over rounds, with the spread (min-max), and the ratio of
medians to the case's anchor. The load average is recorded with each case. `--smoke`
(one round of about a second per contender, no warm-up) checks that the harness works;
its figures mean nothing.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

HERE = Path(__file__).resolve().parent
ANCHORS = HERE / "anchors"
SECRET = "bench-secret-0123456789-abcdefghijklmnop"
ISSUER = "https://issuer.example.com"
AUDIENCE = "api-audience"
UPSTREAM_BODY = '{"orders":[{"id":"ord_1001","quantity":1}]}'
WARDGATE = str(Path(sys.executable).with_name("wardgate"))
CONNECTIONS = 64
# Half-load pacing: each wrk connection waits this long between requests.
PACED_DELAY_MS = 2


# --- measurements -----------------------------------------------------------------------


@dataclass
class Sample:
    """One wrk run."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    loadavg: float
    cpu_us_per_request: float | None = None
    """CPU time (user + system) of the contender's processes per request: unlike req/s,
    barely moved by other load on the machine."""
    waiting_ms_per_s: float | None = None
    """Time the contender's processes were ready to run but waited for the CPU, per second
    of the run (`/proc/PID/schedstat`): how much other load on its core got in the way."""


@dataclass
class Contender:
    """One contender of a case: what it is, how to reach it, and its samples."""

    name: str
    url: str
    headers: list[str] = field(default_factory=list)
    expect_status: int = 200
    connections: int = CONNECTIONS
    script: str | None = None
    pid: int | None = None
    """The contender's process (its children count too), for CPU per request."""
    samples: list[Sample] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def stats(values: list[float]) -> dict[str, float]:
            return {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
            }

        return {
            "name": self.name,
            "url": self.url,
            "expect_status": self.expect_status,
            "connections": self.connections,
            "paced": self.script is not None,
            "requests_per_second": stats([s.requests_per_second for s in self.samples]),
            "p50_ms": stats([s.p50_ms for s in self.samples]),
            "p99_ms": stats([s.p99_ms for s in self.samples]),
            "cpu_us_per_request": (
                stats([s.cpu_us_per_request for s in self.samples if s.cpu_us_per_request])
                if self.pid is not None
                else None
            ),
            "waiting_ms_per_s": (
                stats([s.waiting_ms_per_s for s in self.samples if s.waiting_ms_per_s is not None])
                if self.pid is not None
                else None
            ),
            "errors": sum(s.errors for s in self.samples),
            "samples": [asdict(s) for s in self.samples],
        }


@dataclass
class Case:
    key: str
    title: str
    anchor: str | None
    contenders: list[Contender]
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def loadavg() -> float:
    return os.getloadavg()[0]


def pinned(cpu: str | None, command: list[str]) -> list[str]:
    return command if cpu is None else ["taskset", "-c", cpu, *command]


def process_tree(pid: int) -> list[int]:
    """A process and its descendants."""
    found = [pid]
    for p in found:
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process tree."""
    ticks = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def runqueue_seconds(pid: int) -> float:
    """Time a process tree's threads spent runnable but waiting for a CPU."""
    total = 0
    for p in process_tree(pid):
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def run_wrk(contender: Contender, seconds: float, cpu: str | None) -> Sample:
    command = [
        "wrk",
        "-t1",
        f"-c{contender.connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
    ]
    for header in contender.headers:
        command += ["-H", header]
    if contender.script is not None:
        command += ["-s", contender.script]
    pid = contender.pid
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    waited_before = runqueue_seconds(pid) if pid is not None else 0.0
    started = time.monotonic()
    done = subprocess.run(
        pinned(cpu, [*command, contender.url]), capture_output=True, text=True, check=True
    )
    elapsed = time.monotonic() - started
    cpu_used = cpu_seconds(pid) - cpu_before if pid is not None else 0.0
    waiting = (runqueue_seconds(pid) - waited_before) / elapsed * 1000 if pid is not None else None
    out = done.stdout
    rps = _number(r"Requests/sec:\s+([\d.]+)", out)
    total = int(_number(r"(\d+) requests in", out))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if contender.expect_status < 300 and non_2xx:
        errors += int(non_2xx.group(1))
    per_request = cpu_used / total * 1e6 if contender.pid is not None and total else None
    return Sample(
        rps,
        _latency(out, "50%"),
        _latency(out, "99%"),
        total,
        errors,
        loadavg(),
        per_request,
        waiting,
    )


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"wrk output without {pattern!r}:\n{text}")
    return float(match.group(1))


def _latency(output: str, percentile: str) -> float:
    match = re.search(rf"^\s*{re.escape(percentile)}\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return {"us": value / 1000, "ms": value, "s": value * 1000}[unit]


def probe(contender: Contender) -> None:
    """One request: the contender answers with the status the case expects."""
    request = urllib.request.Request(contender.url)
    for header in contender.headers:
        name, _, value = header.partition(": ")
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    if status != contender.expect_status:
        raise RuntimeError(
            f"{contender.name}: {contender.url} answered {status}, not {contender.expect_status}"
        )


def measure(case: Case, rounds: int, duration: float, warmup: float, load_cpu: str | None) -> None:
    for contender in case.contenders:
        probe(contender)
    order = list(case.contenders)
    for round_index in range(rounds):
        shift = round_index % len(order)
        for contender in order[shift:] + order[:shift]:
            if warmup > 0:
                run_wrk(contender, warmup, load_cpu)
            contender.samples.append(run_wrk(contender, duration, load_cpu))


# --- processes --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 60.0, *, any_status: bool = False) -> None:
    """Wait until a URL answers 200 (or anything, with `any_status`)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            if any_status:
                return
            if time.monotonic() > deadline:
                raise
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def render(template: str, values: dict[str, str]) -> str:
    text = (ANCHORS / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    leftover = re.search(r"@[A-Z_]+@", text)
    if leftover:
        raise RuntimeError(f"{template}: no value for {leftover.group(0)}")
    return text


class Processes:
    """Started processes, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs
        )
        self.running.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.running.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.running)):
            self.stop(process)


@dataclass
class Keys:
    hs_token: str
    hs_expired: str
    rs_token: str
    jwks: str
    public_pem: bytes


def make_keys() -> Keys:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = private.public_key().public_numbers()

    def b64(n: int) -> str:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    jwk = {
        "kty": "RSA",
        "kid": "bench",
        "use": "sig",
        "alg": "RS256",
        "n": b64(numbers.n),
        "e": b64(numbers.e),
    }
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench", "iat": now, "exp": now + 86400}
    expired = {**claims, "iat": now - 7200, "exp": now - 3600}
    return Keys(
        hs_token=jwt.encode(claims, SECRET, algorithm="HS256"),
        hs_expired=jwt.encode(expired, SECRET, algorithm="HS256"),
        rs_token=jwt.encode(claims, private, algorithm="RS256", headers={"kid": "bench"}),
        jwks=json.dumps({"keys": [jwk]}, separators=(",", ":")),
        public_pem=private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
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
    ]
    process = setup.procs.start(pinned(cpu, command), env={**os.environ, "JWT_SECRET": SECRET})
    wait_http(f"http://127.0.0.1:{admin}/readyz")
    return Wardgate(process, f"http://127.0.0.1:{port}")


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (a supervisor's workers), in MiB."""
    total = 0
    for p in process_tree(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


# --- the cases --------------------------------------------------------------------------


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


def bearer(token: str) -> list[str]:
    return [f"Authorization: Bearer {token}"]


ORDERS = "/private/orders"
FLOOR = "python floor (no framework)"


def case_health(setup: Setup) -> Case:
    return Case(
        "1",
        "GET /health (static)",
        "nginx return 200",
        [
            setup.contender("wardgate", setup.wardgate_hs, "/health"),
            setup.contender("nginx return 200", setup.nginx_health, "/health"),
            setup.contender(FLOOR, setup.floor, "/health"),
        ],
    )


def case_hs256(setup: Setup) -> Case:
    token = bearer(setup.keys.hs_token)
    contenders = [setup.contender("wardgate HS256", setup.wardgate_hs, ORDERS, token)]
    if setup.haproxy_hs:
        contenders.append(
            setup.contender("haproxy jwt_verify HS256", setup.haproxy_hs, ORDERS, token)
        )
    contenders.append(setup.contender("nginx proxy_pass (no auth)", setup.nginx_proxy, ORDERS))
    contenders.append(setup.contender(FLOOR, setup.floor, ORDERS, token))
    anchor = "haproxy jwt_verify HS256" if setup.haproxy_hs else "nginx proxy_pass (no auth)"
    return Case("2", "GET /private/orders, HS256, proxied", anchor, contenders)


def case_rs256(setup: Setup) -> Case:
    token = bearer(setup.keys.rs_token)
    contenders = [setup.contender("wardgate RS256 (JWKS)", setup.wardgate_rs, ORDERS, token)]
    if setup.haproxy_rs:
        contenders.append(
            setup.contender("haproxy jwt_verify RS256", setup.haproxy_rs, ORDERS, token)
        )
    anchor = "haproxy jwt_verify RS256" if setup.haproxy_rs else None
    return Case("3", "GET /private/orders, RS256, proxied", anchor, contenders)


def case_rejections(setup: Setup) -> list[Case]:
    cases = []
    for key, title, headers in (
        ("4a", "GET /private/orders, expired token (401)", bearer(setup.keys.hs_expired)),
        ("4b", "GET /private/orders, no token (401)", []),
    ):
        contenders = [setup.contender("wardgate", setup.wardgate_hs, ORDERS, headers, 401)]
        if setup.haproxy_hs:
            contenders.append(setup.contender("haproxy", setup.haproxy_hs, ORDERS, headers, 401))
        cases.append(Case(key, title, "haproxy" if setup.haproxy_hs else None, contenders))
    return cases


def paced_script(workdir: Path) -> str:
    path = workdir / "paced.lua"
    path.write_text(f"function delay()\n  return {PACED_DELAY_MS}\nend\n")
    return str(path)


def case_latency(setup: Setup, peak: float, smoke: bool) -> Case:
    """p99 at half of Wardgate's HS256 peak, against the upstream directly at the same rate."""
    target = peak / 2
    # Each connection sends one request per (delay + latency): pick the connection count
    # that gives about the target rate.
    connections = max(1, round(target * PACED_DELAY_MS / 1000))
    script = paced_script(setup.workdir)
    token = bearer(setup.keys.hs_token)
    upstream = f"http://127.0.0.1:{setup.upstream_port}{ORDERS}"
    return Case(
        "2L",
        f"p99 at half load (~{target:.0f} req/s, {connections} paced connections)",
        "upstream direct",
        [
            setup.contender(
                "wardgate HS256",
                setup.wardgate_hs,
                ORDERS,
                token,
                connections=connections,
                script=script,
            ),
            Contender("upstream direct", upstream, token, connections=connections, script=script),
        ],
        note="latency added = p99(wardgate) - p99(upstream direct)"
        + ("; smoke: pacing from a 1-second peak" if smoke else ""),
    )


def case_workers(setup: Setup, rounds: int, duration: float, warmup: float) -> Case:
    config = wardgate_config(
        setup.upstream_port, {"secret": "$secret.JWT_SECRET", "algorithm": "HS256"}
    )
    both = None if setup.contender_cpu is None else f"{setup.contender_cpu},{setup.load_cpu}"
    two = start_wardgate(setup, "two-workers", config, both, workers=2)
    token = bearer(setup.keys.hs_token)
    case = Case(
        "5",
        "HS256 proxied, 1 vs 2 workers",
        "1 worker",
        [
            setup.contender("1 worker", setup.wardgate_hs, ORDERS, token),
            Contender("2 workers", two.base + ORDERS, token, pid=two.process.pid),
        ],
        note="2 workers run on both cores, which wrk and the upstream share",
    )
    try:
        measure(case, rounds, duration, warmup, setup.load_cpu)
    finally:
        setup.procs.stop(two.process)
    return case


def load_module(path: Path) -> ModuleType:
    """A sibling benchmark script, imported by path (`bench/` is no package)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def case_routes(setup: Setup, smoke: bool) -> Case:
    """Route matching in-process (bench/bench_matching.py), and a gateway process's RSS."""
    matching = load_module(HERE / "bench_matching.py")
    from functools import partial

    from wardgate.gateway.matching import Router

    number = 20_000 if smoke else 200_000
    small = Router.build(matching.route_entries(10))
    big = Router.build(matching.route_entries(10_000))
    shapes = []
    for name, method, path in matching.CASES:
        t_small = matching.best_ns(partial(small.match, method, path), number, 5)
        t_big = matching.best_ns(partial(big.match, method, path), number, 5)
        shapes.append(
            {"shape": name, "ns_10": t_small, "ns_10000": t_big, "ratio": t_big / t_small}
        )
    rss: dict[str, float] = {}
    for routes in (10, 10_000):
        config = wardgate_config(
            setup.upstream_port,
            {"secret": "$secret.JWT_SECRET", "algorithm": "HS256"},
            routes=routes - 2,
        )
        started = time.monotonic()
        gateway = start_wardgate(setup, f"routes-{routes}", config, None)
        startup = time.monotonic() - started
        try:
            # Serve a little first, so that lazily built parts count.
            for _ in range(20):
                with urllib.request.urlopen(gateway.base + "/health", timeout=5):
                    pass
            rss[f"rss_mib_{routes}"] = rss_mib(gateway.process.pid)
            rss[f"startup_s_{routes}"] = startup
        finally:
            setup.procs.stop(gateway.process)
    return Case(
        "6",
        "route table: 10 vs 10,000 routes",
        None,
        [],
        extra={
            "match": shapes,
            "worst_ratio": max(s["ratio"] for s in shapes),
            **rss,
        },
    )


def case_operator(smoke: bool, cluster: bool) -> Case:
    """The operator's own benchmark (`bench/bench_operator.py`): render of 1,000 Routes, and
    with `cluster`, apply-to-ConfigMap latency and no-op reconcile writes on the local
    control plane (or the one WARDGATE_KUBECONFIG names)."""
    module = load_module(HERE / "bench_operator.py")
    extra: dict[str, Any] = {
        "render_1000_routes": module.bench_render(routes=1000, samples=3 if smoke else 15)
    }
    note = ""
    if cluster:
        from wardgate.devcluster.cluster import LocalCluster, existing_cluster

        configured = os.environ.get("WARDGATE_KUBECONFIG")
        if configured:
            extra["cluster"] = module.bench_cluster(existing_cluster(Path(configured)), 20)
        else:
            local = LocalCluster(log=lambda message: print(message, file=sys.stderr))
            local.start()
            try:
                extra["cluster"] = module.bench_cluster(local, 20)
            finally:
                local.stop()
    else:
        note = "render only (--no-cluster or --smoke): the cluster figures need the control plane"
    return Case("7", "operator (bench/bench_operator.py)", None, [], note=note, extra=extra)


# --- the table --------------------------------------------------------------------------


def ratio(case: Case, contender: Contender) -> float | None:
    if case.anchor is None:
        return None
    anchor = next(c for c in case.contenders if c.name == case.anchor)
    base = statistics.median(s.requests_per_second for s in anchor.samples)
    mine = statistics.median(s.requests_per_second for s in contender.samples)
    return mine / base if base else None


def cpu_cell(contender: Contender) -> str:
    values = [s.cpu_us_per_request for s in contender.samples if s.cpu_us_per_request]
    return f"{statistics.median(values):.1f}" if values else ""


def wait_cell(contender: Contender) -> str:
    values = [s.waiting_ms_per_s for s in contender.samples if s.waiting_ms_per_s is not None]
    return f"{statistics.median(values):.0f}" if values else ""


def print_table(cases: list[Case], write: Callable[[str], None]) -> None:
    write(
        f"{'case':<5} {'contender':<28} {'req/s':>9} {'spread':>15} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'ratio':>6} {'cpu µs/req':>10} {'wait ms/s':>9} "
        f"{'load':>5}"
    )
    for case in cases:
        write(f"{case.key:<5} {case.title}")
        for c in case.contenders:
            rps = [s.requests_per_second for s in c.samples]
            r = ratio(case, c)
            load = statistics.median(s.loadavg for s in c.samples)
            write(
                f"{'':<5} {c.name:<28} {statistics.median(rps):>9.0f} "
                f"{min(rps):>7.0f}-{max(rps):<7.0f} "
                f"{statistics.median(s.p50_ms for s in c.samples):>7.2f} "
                f"{statistics.median(s.p99_ms for s in c.samples):>7.2f} "
                f"{'' if r is None else f'{r:.2f}':>6} {cpu_cell(c):>10} {wait_cell(c):>9} "
                f"{load:>5.2f}"
                + (
                    f"  errors {sum(s.errors for s in c.samples)}"
                    if any(s.errors for s in c.samples)
                    else ""
                )
            )
        if "p99_added_ms" in case.extra:
            write(f"{'':<5} p99 added by the gateway: {case.extra['p99_added_ms']:.2f} ms")
        if case.key == "6":
            for shape in case.extra["match"]:
                write(
                    f"{'':<5} match {shape['shape']:<26} {shape['ns_10']:>7.0f} ns "
                    f"{shape['ns_10000']:>7.0f} ns  ratio {shape['ratio']:.2f}"
                )
            write(
                f"{'':<5} gateway RSS: 10 routes {case.extra['rss_mib_10']:.1f} MiB, "
                f"10,000 routes {case.extra['rss_mib_10000']:.1f} MiB "
                f"(start-up {case.extra['startup_s_10000']:.1f} s)"
            )
        if case.key == "7":
            for group, values in case.extra.items():
                for key, value in values.items():
                    shown = f"{value:.1f}" if isinstance(value, float) else value
                    write(f"{'':<5} {group}.{key}: {shown}")
        if case.note:
            write(f"{'':<5} ({case.note})")


def machine() -> dict[str, Any]:
    def version(command: list[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=10)
        except OSError:
            return "not installed"
        return (done.stdout + done.stderr).strip().splitlines()[0]

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": version(["nginx", "-v"]),
        "haproxy": version(["haproxy", "-v"]),
        "wrk": version(["wrk", "-v"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per case (3)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds (2)")
    parser.add_argument("--smoke", action="store_true", help="1 round, ~1 s per contender")
    parser.add_argument("--cases", default="1,2,2L,3,4,5,6,7", help="cases to run")
    parser.add_argument("--output", type=Path, help="JSON file (bench/results/run-TIME.json)")
    parser.add_argument(
        "--no-cluster", action="store_true", help="case 7 without the control plane"
    )
    parser.add_argument(
        "--wardgate",
        default=WARDGATE,
        help="the wardgate command to measure (another build, for a before/after comparison)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.duration, args.warmup = 1, 1.0, 0.0
    wanted = set(args.cases.split(","))
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (hack/install-system-deps.sh)", file=sys.stderr)
            return 2
    cpus = sorted(os.sched_getaffinity(0))
    can_pin = shutil.which("taskset") is not None and len(cpus) >= 2
    contender_cpu, load_cpu = (str(cpus[0]), str(cpus[1])) if can_pin else (None, None)
    output = args.output or HERE / "results" / time.strftime("run-%Y%m%d-%H%M%S.json")
    started_load = os.getloadavg()
    cases: list[Case] = []
    procs = Processes()
    with tempfile.TemporaryDirectory(prefix="wardgate-bench-") as tmp:
        setup = Setup(
            procs, Path(tmp), make_keys(), free_port(), contender_cpu, load_cpu, args.wardgate
        )
        try:
            start_all(setup)
            measured = (args.rounds, args.duration, args.warmup, load_cpu)
            if "1" in wanted:
                cases.append(case_health(setup))
                measure(cases[-1], *measured)
            peak = None
            if wanted & {"2", "2L"}:
                hs = case_hs256(setup)
                if "2" in wanted:
                    measure(hs, *measured)
                    cases.append(hs)
                    peak = statistics.median(
                        s.requests_per_second for s in hs.contenders[0].samples
                    )
            if "2L" in wanted:
                if peak is None:
                    probe_case = Case("", "", None, [case_hs256(setup).contenders[0]])
                    measure(probe_case, 1, args.duration, args.warmup, load_cpu)
                    peak = probe_case.contenders[0].samples[0].requests_per_second
                latency = case_latency(setup, peak, args.smoke)
                measure(latency, *measured)
                gateway, direct = latency.contenders
                latency.extra["p99_added_ms"] = statistics.median(
                    s.p99_ms for s in gateway.samples
                ) - statistics.median(s.p99_ms for s in direct.samples)
                cases.append(latency)
            if "3" in wanted:
                cases.append(case_rs256(setup))
                measure(cases[-1], *measured)
            if "4" in wanted:
                for case in case_rejections(setup):
                    measure(case, *measured)
                    cases.append(case)
            if "5" in wanted:
                cases.append(case_workers(setup, args.rounds, args.duration, args.warmup))
            if "6" in wanted:
                cases.append(case_routes(setup, args.smoke))
        finally:
            procs.stop_all()
    if "7" in wanted:
        cases.append(case_operator(args.smoke, cluster=not (args.smoke or args.no_cluster)))

    lines: list[str] = []
    pinning = (
        f"contenders on CPU {contender_cpu}, wrk and upstream on CPU {load_cpu}"
        if can_pin
        else "no CPU pinning (needs taskset and two CPUs)"
    )
    info = machine()
    lines.append(
        f"{info['cpu']} x{info['cpus']}; {info['nginx']}; {info['haproxy']}; "
        f"python {info['python']}"
    )
    lines.append(
        f"{pinning}; wrk 1 thread, {CONNECTIONS} connections; {args.rounds} rounds "
        f"of {args.duration:g} s after {args.warmup:g} s warm-up; "
        f"load average at start {started_load[0]:.2f}"
    )
    print_table(cases, lines.append)
    print("\n".join(lines))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "machine": info,
                "pinning": pinning,
                "rounds": args.rounds,
                "duration": args.duration,
                "warmup": args.warmup,
                "smoke": args.smoke,
                "loadavg_start": started_load,
                "loadavg_end": os.getloadavg(),
                "cases": [
                    {
                        "key": c.key,
                        "title": c.title,
                        "anchor": c.anchor,
                        "note": c.note,
                        "contenders": [{**k.summary(), "ratio": ratio(c, k)} for k in c.contenders],
                        **c.extra,
                    }
                    for c in cases
                ],
                "table": lines,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
