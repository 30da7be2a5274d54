"""Render time of one large Gateway, in-process (no cluster): from scratch, and after one
Route changes with the render cache of the previous render, with where the time goes.

    .venv/bin/python -m bench.bench_render                    # 1,000 and 10,000 Routes
    .venv/bin/python -m bench.bench_render --routes 10000 --samples 20

The Routes are the scale bench's (two paths each: a proxied path with a parameter and auth,
and a static one; `bench.routes`). Each figure is the median of the samples, in CPU
milliseconds of this process (less sensitive to other work on the machine than wall time)
with wall milliseconds beside it:

- cold: a render from scratch whose Route specs were never validated (the first render
  after a start);
- scratch: a render from scratch, the specs validated before (what every render cost
  before the cache);
- one change: one Route's spec edited (new generation), rendered with the cache of the
  previous render;
- objects: building the owned objects from the result (gzip of the config, hashes).

The breakdown (`RenderSteps`, wall milliseconds): gateway (its spec, the Authorizers),
validation (Route specs), policy (the per-Route checks and the multi-team policy), json (the
paths' config lines), routes (looking up the cached fragments), conflicts (the claims of
all Routes, in order), assembly, config check (the gateway's own check of the assembled
config), hash.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import defaultdict
from typing import Any

from bench.routes import route_paths
from wardgate.gateway.memory import collection_paused
from wardgate.operator.inputs import resource_from_body, secret_from_body
from wardgate.operator.manifests import Defaults, build_gateway_objects
from wardgate.operator.render import (
    ROUTE_SPEC_CACHE_SIZE,
    RenderCache,
    RenderResult,
    Resource,
    forget_route_specs,
    render,
)

NAMESPACE = "bench"


class StepTimes:
    """Seconds per render step (`RenderSteps`), of wall time: the CPU clock costs a system
    call, and a step is taken four times per Route rendered."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.last = time.perf_counter()

    def step(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] += now - self.last
        self.last = now


def _route_body(index: int, tag: str = "") -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": NAMESPACE,
            "name": f"route-{index:05d}",
            "uid": f"uid-{index}",
            "generation": 1,
            "creationTimestamp": f"2026-01-01T{index // 3600:02d}:{index // 60 % 60:02d}:"
            f"{index % 60:02d}Z",
        },
        "spec": {
            "gatewayRef": {"name": "api"},
            "paths": route_paths("/api", index, {"ok": True, "tag": tag}),
        },
    }


class Inputs:
    """One Gateway, its Authorizer and Secret, and `count` Routes."""

    def __init__(self, count: int) -> None:
        self.gateway = resource_from_body(
            {
                "metadata": {"namespace": NAMESPACE, "name": "api", "uid": "u"},
                "spec": {
                    "defaultAuthorizer": "jwt",
                    "servers": {"backend": {"service": {"name": "backend", "port": 80}}},
                },
            }
        )
        self.authorizer = resource_from_body(
            {
                "metadata": {"namespace": NAMESPACE, "name": "jwt"},
                "spec": {"type": "jwt", "secret": "$secret.KEY", "secretRef": {"name": "keys"}},
            }
        )
        self.secrets = {(NAMESPACE, "keys"): secret_from_body({"stringData": {"KEY": "k" * 40}})}
        self.routes: list[Resource] = [resource_from_body(_route_body(i)) for i in range(count)]
        self.edits = 0

    def edit_one(self) -> None:
        """A new generation of one Route, with another static response."""
        self.edits += 1
        index = (self.edits * 7919) % len(self.routes)
        body = _route_body(index, tag=f"edit-{self.edits}")
        body["metadata"]["generation"] = 1 + self.edits
        self.routes[index] = resource_from_body(body)

    def render(self, cache: RenderCache | None, steps: StepTimes) -> RenderResult:
        with collection_paused():
            return render(
                self.gateway.meta.key,
                self.gateway,
                self.routes,
                [self.authorizer],
                self.secrets,
                {},
                {(NAMESPACE, "backend")},
                cache=cache,
                steps=steps,
            )


def _measure(inputs: Inputs, mode: str, cache: RenderCache | None) -> dict[str, Any]:
    if mode == "cold":
        forget_route_specs()
    if mode == "one change":
        inputs.edit_one()
    steps = StepTimes()
    wall, cpu = time.perf_counter(), time.process_time()
    result = inputs.render(cache, steps)
    render_cpu, render_wall = time.process_time() - cpu, time.perf_counter() - wall
    assert result.config is not None
    assert result.spec is not None
    assert len(result.config.paths) == 2 * len(inputs.routes)
    cpu = time.process_time()
    build_gateway_objects(inputs.gateway.meta, result.spec, result, Defaults())
    return {
        "cpu_ms": render_cpu * 1000,
        "wall_ms": render_wall * 1000,
        "objects_cpu_ms": (time.process_time() - cpu) * 1000,
        "steps_ms": {name: seconds * 1000 for name, seconds in steps.seconds.items()},
        "rendered": cache.rendered if cache is not None else len(inputs.routes),
    }


def bench(count: int, samples: int) -> dict[str, Any]:
    inputs = Inputs(count)
    assert count <= ROUTE_SPEC_CACHE_SIZE
    figures: dict[str, Any] = {}
    for mode in ("cold", "scratch", "one change"):
        cache = RenderCache() if mode == "one change" else None
        if cache is not None:
            inputs.render(cache, StepTimes())  # the render before the change
        runs = [_measure(inputs, mode, cache) for _ in range(samples)]
        names = sorted({n for run in runs for n in run["steps_ms"]})
        figures[mode] = {
            "cpu_ms": statistics.median(r["cpu_ms"] for r in runs),
            "wall_ms": statistics.median(r["wall_ms"] for r in runs),
            "objects_cpu_ms": statistics.median(r["objects_cpu_ms"] for r in runs),
            "routes_rendered": statistics.median(r["rendered"] for r in runs),
            "steps_ms": {
                n: round(statistics.median(r["steps_ms"].get(n, 0.0) for r in runs), 2)
                for n in names
            },
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", default="1000,10000", help="Route counts, comma-separated")
    parser.add_argument("--samples", type=int, default=7)
    args = parser.parse_args()
    results: dict[str, Any] = {"load_average_before": os.getloadavg()}
    for count in (int(n) for n in args.routes.split(",")):
        figures = bench(count, args.samples)
        results[str(count)] = figures
        for mode, row in figures.items():
            steps = ", ".join(f"{n} {v:.1f}" for n, v in row["steps_ms"].items() if v >= 0.05)
            print(
                f"{count:>6} Routes, {mode:<10}: {row['cpu_ms']:8.1f} ms CPU "
                f"({row['wall_ms']:.1f} ms wall), {row['routes_rendered']:.0f} Routes rendered; "
                f"objects (gzip, hashes) {row['objects_cpu_ms']:.1f} ms; {steps}",
                flush=True,
            )
    results["load_average_after"] = os.getloadavg()
    print(f"load average before {results['load_average_before']}, after {os.getloadavg()}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
