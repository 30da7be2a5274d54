#!/usr/bin/env python3
"""Requests per second of `wardgate gateway` with one worker, measured with wrk.

    .venv/bin/python bench/bench_gateway.py [--duration 10] [--connections 64] [--smoke]

Starts a fast upstream (nginx from Debian when installed, answering a small JSON body;
otherwise a minimal aiohttp upstream, and says which), then `wardgate gateway` with the seed
example and one worker, pinned with `taskset` to CPU 0, while wrk (and the upstream) run on
CPU 1. Cases:

- `GET /health`: the static response;
- `GET /private/orders` with a valid HS256 token (issuer, audience and expiry checked),
  proxied to the upstream;
- `GET /private/orders` without a token: the cost of saying no (401).

Each case is warmed up, then measured; the table gives requests per second and the p50 and
p99 latency reported by wrk, and the results go to a JSON file (`--output`). `--smoke` runs
each case for about a second, to check that the harness works (CI); real figures need the
default duration on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import jwt

SECRET = "bench-secret-0123456789-abcdefghijklmnop"
ISSUER = "https://issuer.example.com"
AUDIENCE = "api-audience"
UPSTREAM_BODY = '{"orders":[{"id":"ord_1001","quantity":1}]}'
WARDGATE = str(Path(sys.executable).with_name("wardgate"))


@dataclass
class Result:
    case: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(cpu: int | None, command: list[str]) -> list[str]:
    if cpu is None:
        return command
    return ["taskset", "-c", str(cpu), *command]


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def start_nginx(workdir: Path, port: int, cpu: int | None) -> subprocess.Popen[bytes]:
    conf = workdir / "nginx.conf"
    conf.write_text(
        textwrap.dedent(
            f"""\
            worker_processes 1;
            daemon off;
            pid {workdir}/nginx.pid;
            error_log {workdir}/nginx-error.log;
            events {{ worker_connections 4096; }}
            http {{
              access_log off;
              keepalive_requests 1000000;
              client_body_temp_path {workdir}/body;
              proxy_temp_path {workdir}/proxy;
              fastcgi_temp_path {workdir}/fastcgi;
              uwsgi_temp_path {workdir}/uwsgi;
              scgi_temp_path {workdir}/scgi;
              server {{
                listen 127.0.0.1:{port};
                location / {{
                  default_type application/json;
                  return 200 '{UPSTREAM_BODY}';
                }}
              }}
            }}
            """
        )
    )
    return subprocess.Popen(pinned(cpu, ["nginx", "-c", str(conf), "-p", str(workdir)]))


AIOHTTP_UPSTREAM = """
import sys
from aiohttp import web
body = sys.argv[2].encode()
async def handle(request):
    return web.Response(body=body, content_type="application/json")
app = web.Application()
app.router.add_route("*", "/{tail:.*}", handle)
try:
    import uvloop
    loop_factory = uvloop.new_event_loop
except ImportError:
    loop_factory = None
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
            loop=loop_factory() if loop_factory else None)
"""


def start_upstream(
    workdir: Path, port: int, cpu: int | None
) -> tuple[str, subprocess.Popen[bytes]]:
    if shutil.which("nginx"):
        return "nginx", start_nginx(workdir, port, cpu)
    command = [sys.executable, "-c", AIOHTTP_UPSTREAM, str(port), UPSTREAM_BODY]
    return "aiohttp", subprocess.Popen(pinned(cpu, command))


def run_wrk(
    url: str,
    duration: float,
    connections: int,
    cpu: int | None,
    headers: list[str],
    expect_ok: bool = True,
) -> Result:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    for header in headers:
        command += ["-H", header]
    output = subprocess.run(
        pinned(cpu, [*command, url]), capture_output=True, text=True, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Result(
        case="",
        requests_per_second=rps,
        p50_ms=_latency(output, "50%"),
        p99_ms=_latency(output, "99%"),
        requests=total,
        errors=errors + (int(non_2xx.group(1)) if non_2xx and expect_ok else 0),
    )


def _latency(output: str, percentile: str) -> float:
    match = re.search(rf"^\s*{re.escape(percentile)}\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return {"us": value / 1000, "ms": value, "s": value * 1000}[unit]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per case (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up (2)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--smoke", action="store_true", help="about a second per case")
    parser.add_argument(
        "--access-log", default="/dev/null", help="the gateway's request log (/dev/null)"
    )
    parser.add_argument(
        "--output", type=Path, default=Path("bench/results/gateway.json"), help="JSON results"
    )
    args = parser.parse_args()
    if args.smoke:
        args.duration, args.warmup = 1.0, 0.0
    for tool in ("wrk",):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (Debian: apt-get install {tool})", file=sys.stderr)
            return 2
    cpus = sorted(os.sched_getaffinity(0))
    can_pin = shutil.which("taskset") is not None and len(cpus) >= 2
    gateway_cpu, load_cpu = (cpus[0], cpus[1]) if can_pin else (None, None)

    with tempfile.TemporaryDirectory(prefix="wardgate-bench-") as tmp:
        workdir = Path(tmp)
        upstream_port, port, admin_port = free_port(), free_port(), free_port()
        upstream_kind, upstream = start_upstream(workdir, upstream_port, load_cpu)
        config = {
            "authorizer": {
                "type": "jwt",
                "secret": "$secret.JWT_SECRET",
                "algorithm": "HS256",
                "issuer": ISSUER,
                "audience": AUDIENCE,
            },
            "paths": [
                {"method": "GET", "path": "/health", "response": {"status": "ok"}},
                {
                    "method": "GET",
                    "path": "/private/orders",
                    "auth": True,
                    "integration": {"type": "http_proxy", "server": "orders"},
                },
            ],
            "servers": {"orders": f"http://127.0.0.1:{upstream_port}"},
        }
        (workdir / "gateway.json").write_text(json.dumps(config))
        gateway_command = [
            WARDGATE,
            "gateway",
            "--config",
            str(workdir / "gateway.json"),
            "--port",
            str(port),
            "--admin-port",
            str(admin_port),
            "--access-log",
            args.access_log,
        ]
        gateway = subprocess.Popen(
            pinned(gateway_cpu, gateway_command),
            env={**os.environ, "JWT_SECRET": SECRET},
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_http(f"http://127.0.0.1:{upstream_port}/")
            wait_http(f"http://127.0.0.1:{admin_port}/readyz")
            now = int(time.time())
            token = jwt.encode(
                {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench", "iat": now, "exp": now + 86400},
                SECRET,
                algorithm="HS256",
            )
            base = f"http://127.0.0.1:{port}"
            cases: list[tuple[str, str, list[str] | None]] = [
                ("GET /health (static)", f"{base}/health", []),
                (
                    "GET /private/orders (HS256, proxied)",
                    f"{base}/private/orders",
                    [f"Authorization: Bearer {token}"],
                ),
                ("GET /private/orders (no token, 401)", f"{base}/private/orders", None),
            ]
            results: list[Result] = []
            for name, url, headers in cases:
                expect_ok = headers is not None
                wrk_headers = headers or []
                if args.warmup > 0:
                    run_wrk(url, args.warmup, args.connections, load_cpu, wrk_headers, expect_ok)
                result = run_wrk(
                    url, args.duration, args.connections, load_cpu, wrk_headers, expect_ok
                )
                result.case = name
                results.append(result)
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=60)
            upstream.send_signal(signal.SIGTERM)
            upstream.wait(timeout=30)

    pinning = (
        f"gateway on CPU {gateway_cpu}, wrk and upstream on CPU {load_cpu}"
        if can_pin
        else "no CPU pinning (needs taskset and two CPUs)"
    )
    print(f"wardgate gateway, 1 worker; upstream: {upstream_kind}; {pinning}")
    print(f"wrk: 1 thread, {args.connections} connections, {args.duration:g} s per case")
    print(f"{'case':<40} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for r in results:
        print(
            f"{r.case:<40} {r.requests_per_second:>10.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{r.errors:>7}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "upstream": upstream_kind,
                "pinning": pinning,
                "connections": args.connections,
                "duration": args.duration,
                "results": [asdict(r) for r in results],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
