#!/usr/bin/env python3
"""Wardgate side by side with nginx and HAProxy: one command, one table, one JSON file.

    .venv/bin/python -m bench.run [--rounds 3] [--duration 10] [--warmup 2] [--smoke]
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
   2L: p99 latency that Wardgate adds at half its peak load (wrk paced with random
   exponential delays, as independent clients send),
   against the upstream answering directly at the same rate (each contender's number of
   paced connections is set first, from short runs, so that both are offered that rate);
3. RS256 with the key from a JWKS URL: Wardgate vs HAProxy `jwt_verify` with the key file;
4. rejections on the same route, expired token (4a) and no token (4b): Wardgate vs HAProxy;
5. Wardgate with 1 and with 2 workers on the HS256 route (2 workers use both cores, which
   wrk and the upstream share: on a 2-core machine this says little about scaling);
6. the route table: match time with 10 and 10,000 routes in-process, and the RSS of a
   gateway process with 10 and with 10,000 routes;
8. TLS on the traffic port, `GET /health` (static): 8a on keep-alive TLS connections (the
   cost of encryption per request), 8b with a new TLS connection per request (`Connection:
   close`: a full handshake each time, no session resumption), Wardgate's TLS listener vs
   HAProxy terminating TLS with the same certificate (EC P-256, generated at run time),
   Wardgate over plain HTTP alongside (`bench/cases_tls.py`);
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
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.cases_inprocess import case_operator, case_routes
from bench.cases_proxy import (
    case_health,
    case_hs256,
    case_latency,
    case_rejections,
    case_rs256,
    case_workers,
)
from bench.cases_tls import case_tls
from bench.contenders import Setup, make_keys, start_all
from bench.harness import CONNECTIONS, HERE, WARDGATE, Case, Processes, measure, pace, probe
from bench.table import machine, print_table, ratio
from tests.support.ports import free_port


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per case (3)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds (2)")
    parser.add_argument("--smoke", action="store_true", help="1 round, ~1 s per contender")
    parser.add_argument("--cases", default="1,2,2L,3,4,5,6,7,8", help="cases to run")
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
                # Both contenders offered the same rate: each paced to half the peak first.
                for contender in latency.contenders:
                    probe(contender)
                    pace(
                        contender,
                        peak / 2,
                        1 if args.smoke else 2,
                        load_cpu,
                        1 if args.smoke else 3,
                    )
                latency.title = f"p99 at half load (~{peak / 2:.0f} req/s offered to each; " + (
                    ", ".join(f"{c.name} {c.connections}" for c in latency.contenders)
                    + " paced connections)"
                )
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
            if "8" in wanted:
                for case in case_tls(setup):
                    measure(case, *measured)
                    cases.append(case)
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
