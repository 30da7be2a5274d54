"""The benchmark harness: wrk runs and their figures, the processes of the contenders, and
what every case shares."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import ssl
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ANCHORS = HERE / "anchors"
UPSTREAM_BODY = '{"orders":[{"id":"ord_1001","quantity":1}]}'
WARDGATE = str(Path(sys.executable).with_name("wardgate"))
CONNECTIONS = 64
# Half-load pacing: each wrk connection waits this long between requests, on average
# (exponentially distributed waits: `cases_proxy.paced_script`).
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
    cafile: str | None = None
    """For an `https://` URL: the CA the probe trusts."""

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
    context = ssl.create_default_context(cafile=contender.cafile) if contender.cafile else None
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    if status != contender.expect_status:
        raise RuntimeError(
            f"{contender.name}: {contender.url} answered {status}, not {contender.expect_status}"
        )


def pace(
    contender: Contender,
    rate: float,
    seconds: float,
    cpu: str | None,
    tries: int = 3,
    run: Callable[[Contender, float, str | None], Sample] | None = None,
) -> float:
    """Set a paced contender's connection count so that it is offered about `rate`
    requests per second: each paced connection sends one request per (delay + latency),
    so a contender that answers more slowly needs more connections for the same rate, and
    two contenders compared at one count are not compared at one rate. Adjusts from short
    runs until the rate is within 10 % (at most `tries` runs); returns the last rate.
    `run`: how one short run is made (`run_wrk`)."""
    achieved = 0.0
    for _ in range(tries):
        achieved = (run or run_wrk)(contender, seconds, cpu).requests_per_second
        if achieved <= 0 or abs(achieved - rate) <= 0.1 * rate:
            break
        contender.connections = max(1, round(contender.connections * rate / achieved))
    return achieved


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


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (a supervisor's workers), in MiB."""
    total = 0
    for p in process_tree(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024
