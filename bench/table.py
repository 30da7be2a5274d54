"""The table of a run and the machine it ran on."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import Case, Contender


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
