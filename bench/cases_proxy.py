"""Cases 1 to 5: Wardgate side by side with nginx and HAProxy in front of the same upstream."""

from __future__ import annotations

from pathlib import Path

from bench.contenders import Setup, start_wardgate, wardgate_config
from bench.harness import PACED_DELAY_MS, Case, Contender, measure


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
    """wrk's pacing: each connection waits a random time between requests, exponential
    with a mean of PACED_DELAY_MS, so that the connections send independently, as many
    separate clients do. With one fixed delay they send in step (wrk's timers tick in
    whole milliseconds), and the p99 measured is then the time to answer a whole bunch
    of requests that arrived at once, whatever the load."""
    path = workdir / "paced.lua"
    path.write_text(
        "math.randomseed(os.time())\n"
        "function delay()\n"
        f"  return math.floor(-math.log(1 - math.random()) * {PACED_DELAY_MS} + 0.5)\n"
        "end\n"
    )
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
