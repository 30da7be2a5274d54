"""What a gateway replica does when its ConfigMap changes by one Route, stage by stage.

    .venv/bin/python -m bench.bench_reload                     # 1,000 and 10,000 Routes
    .venv/bin/python -m bench.bench_reload --routes 10000 --changes 5
    .venv/bin/python -m bench.bench_reload --change secret    # or route, edit, authorizer

In-process, no cluster: a config of N two-path Routes (`bench.routes.route_paths`, the
Routes of `bench/bench_scale.py`: 2 N paths, one HMAC authorizer, one server) is loaded and
served by a `GatewayHolder` as `wardgate gateway --watch-config` serves it; then, `--changes`
times, the config changes (`--change`: `route`, a Route added, as by a `kubectl apply` of a
new Route; `edit`, a Route in the middle edited; `secret`, the authorizer's Secret rotated;
`authorizer`, the authorizer's audience edited) and the snapshot is applied the way
`follow_config` applies it, each stage timed (wall and CPU of this process):

- decode: base64 of the ConfigMap's `binaryData`, gunzip, JSON;
- validate: the models (pydantic) and the `$secret.NAME` references (`load_config`);
- authorizers: the runtime authorizers (`ProcessContext.authorizers`);
- compile: the route table and the rest of the `Gateway` (`Gateway(...)`: `build_routes`,
  the matcher);
- swap: `GatewayHolder.swap` (keys prefetched, one assignment);
- workers (`--workers N`): the parent's check of the version (a build, as `validate_snapshot`
  does it), pickling what it sends its workers (`SentConfig`) and unpickling it in one of
  them; each worker then loads and builds it as a replica does (the stages above).

The figures are medians over the changes; the load average is printed beside them, as the
machine may be shared. The first load (everything new) is shown for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import gzip
import json
import os
import pickle
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.routes import route_paths
from tests.support.tokens import HS_SECRET
from wardgate.gateway.app import Gateway, GatewayHolder
from wardgate.gateway.delivery import CONFIG_KEY
from wardgate.gateway.factory import ProcessContext
from wardgate.gateway.kubesource import Snapshot
from wardgate.gateway.loading import (
    LoadedConfig,
    SecretSource,
    ValidatedPaths,
    load_config,
    parse_document,
)
from wardgate.gateway.memory import collection_paused
from wardgate.gateway.server import SentConfig
from wardgate.gateway.sources import check_runtime

STAGES = ("decode", "validate", "authorizers", "compile", "swap")
WORKER_STAGES = ("parent check", "pickle", "unpickle")


def route_document(routes: int) -> dict[str, Any]:
    """The config the operator renders for a Gateway of `routes` two-path Routes."""
    paths: list[dict[str, Any]] = []
    for index in range(routes):
        paths.extend(route_paths("/api", index, {"ok": True, "tag": ""}))
    return {
        "defaultAuthorizer": "jwt",
        "authorizers": {"jwt": {"type": "jwt", "secret": "$secret.KEY"}},
        "servers": {"backend": {"url": "http://127.0.0.1:9"}},
        "paths": paths,
    }


def config_map_value(document: dict[str, Any]) -> str:
    """The ConfigMap's `binaryData` value of a config (as the API server sends it)."""
    text = json.dumps(document, sort_keys=True)
    return base64.b64encode(gzip.compress(text.encode("utf-8"))).decode("ascii")


class Timer:
    """Wall and CPU seconds of named stages."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu


def decode(value: str) -> object:
    return parse_document(base64.b64decode(value), CONFIG_KEY)


CHANGES = ("route", "edit", "secret", "authorizer")
SECRETS = (HS_SECRET, "rotated-" + HS_SECRET)


def changed(
    kind: str, document: dict[str, Any], routes: int, change: int
) -> tuple[dict[str, Any], dict[str, str]]:
    """The `change`th version of the config for a change of `kind`, and its secrets."""
    document = copy.copy(document)
    secret = HS_SECRET
    if kind == "route":
        document["paths"] = document["paths"] + route_paths(
            "/api", routes + change, {"ok": True, "tag": ""}
        )
    elif kind == "edit":
        paths = list(document["paths"])
        middle = routes // 2
        paths[2 * middle : 2 * middle + 2] = route_paths(
            "/api", middle, {"ok": True, "tag": f"edit-{change}"}
        )
        document["paths"] = paths
    elif kind == "secret":
        secret = SECRETS[change % 2]
    else:
        spec = dict(document["authorizers"]["jwt"])
        spec["audience"] = f"api-{change}"
        document["authorizers"] = {"jwt": spec}
    return document, {"KEY": secret}


async def apply_change(
    holder: GatewayHolder,
    context: ProcessContext,
    paths: ValidatedPaths,
    value: str,
    secrets: dict[str, str],
    timer: Timer,
    config_hash: str,
) -> LoadedConfig:
    """One snapshot applied as `follow_config` applies it (`build_snapshot`, then `swap`),
    with the stages of `GatewayHolder.build` timed apart (what did not change taken over
    from the serving config, as there)."""
    with collection_paused():
        with timer.stage("decode"):
            document = decode(value)
        with timer.stage("validate"):
            loaded = load_config(
                document,
                SecretSource(directory=None, environ=secrets),
                origin="bench",
                config_hash=config_hash,
                paths=paths,
            )
        with timer.stage("authorizers"):
            authorizers = context.authorizers(loaded, previous=holder.current.authorizers)
        with timer.stage("compile"):
            gateway = Gateway(
                loaded,
                authorizers,
                upstreams=context.upstreams,
                previous_certificates=holder.current.certificates,
                previous=holder.current,
            )
    with timer.stage("swap"):
        await holder.swap(gateway, config_hash)
    return loaded


class Parent:
    """The supervisor of `--workers N`: its check of each version, and what it sends."""

    def __init__(self) -> None:
        self.paths = ValidatedPaths()
        self.checked: Gateway | None = None

    def hand_over(self, value: str, secrets: dict[str, str], config_hash: str, timer: Timer) -> int:
        snapshot = Snapshot(config_hash, decode(value), secrets, "1", "bench")
        # The validation itself is the replica's; only the check's build is timed here.
        loaded = load_config(
            snapshot.document,
            SecretSource(directory=None, environ=snapshot.secrets),
            origin="bench",
            config_hash=config_hash,
            paths=self.paths,
        )
        with collection_paused():
            with timer.stage("parent check"):
                self.checked = check_runtime(loaded, self.checked)
            sent = SentConfig(snapshot.document, snapshot.secrets, "bench", config_hash)
            with timer.stage("pickle"):
                payload = pickle.dumps(sent, pickle.HIGHEST_PROTOCOL)
            with timer.stage("unpickle"):
                pickle.loads(payload)
        return len(payload)


async def run_one(routes: int, changes: int, kind: str) -> dict[str, Any]:
    document = route_document(routes)
    context = ProcessContext.create()
    first = Timer()
    paths = ValidatedPaths()  # as `ConfigWatch.paths`: from the first version on
    parent = Parent()
    try:
        value = config_map_value(document)
        with collection_paused():
            with first.stage("decode"):
                decoded = decode(value)
            with first.stage("validate"):
                loaded = load_config(
                    decoded,
                    SecretSource(directory=None, environ={"KEY": HS_SECRET}),
                    origin="bench",
                    config_hash="h0",
                    paths=paths,
                )
            with first.stage("authorizers"):
                authorizers = context.authorizers(loaded)
            with first.stage("compile"):
                gateway = Gateway(loaded, authorizers, upstreams=context.upstreams)
        holder = GatewayHolder(gateway, "h0", context)
        # The parent's first check: everything new.
        parent.hand_over(value, {"KEY": HS_SECRET}, "h0", Timer())
        timers: list[Timer] = []
        payload_bytes = 0
        for change in range(1, changes + 1):
            document, secrets = changed(kind, document, routes, change)
            value = config_map_value(document)
            timer = Timer()
            await apply_change(holder, context, paths, value, secrets, timer, f"h{change}")
            payload_bytes = parent.hand_over(value, secrets, f"h{change}", timer)
            timers.append(timer)
        await holder.close()
    finally:
        await context.close()
    return {
        "routes": routes,
        "paths": len(document["paths"]),
        "first": first,
        "changes": timers,
        "pickle_bytes": payload_bytes,
        "kind": kind,
    }


def median(timers: list[Timer], kind: str, stage: str) -> float:
    return statistics.median(getattr(t, kind).get(stage, 0.0) for t in timers) * 1000


def print_table(result: dict[str, Any], load_before: str, load_after: str) -> None:
    timers: list[Timer] = result["changes"]
    first: Timer = result["first"]
    print(
        f"\n{result['routes']:,} Routes ({result['paths']:,} paths), change: {result['kind']}, "
        f"median of {len(timers)}; load average {load_before} -> {load_after}"
    )
    print("| stage | first load wall ms | change wall ms | change CPU ms |")
    print("| --- | --- | --- | --- |")
    total_wall = total_cpu = 0.0
    for stage in STAGES:
        wall, cpu = median(timers, "wall", stage), median(timers, "cpu", stage)
        total_wall += wall
        total_cpu += cpu
        first_ms = f"{first.wall[stage] * 1000:.0f}" if stage in first.wall else "-"
        print(f"| {stage} | {first_ms} | {wall:.1f} | {cpu:.1f} |")
    first_total = sum(first.wall.values()) * 1000
    print(f"| **replica total** | {first_total:.0f} | {total_wall:.1f} | {total_cpu:.1f} |")
    for stage in WORKER_STAGES:
        wall, cpu = median(timers, "wall", stage), median(timers, "cpu", stage)
        print(f"| workers: {stage} ({result['pickle_bytes']:,} B) | - | {wall:.1f} | {cpu:.1f} |")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routes", default="1000,10000", help="comma-separated Route counts")
    parser.add_argument("--changes", type=int, default=5, help="changes per count")
    parser.add_argument("--change", choices=CHANGES, default="route", help="what changes")
    args = parser.parse_args()
    for routes in [int(r) for r in args.routes.split(",")]:
        before = load_average()
        result = asyncio.run(run_one(routes, args.changes, args.change))
        print_table(result, before, load_average())


if __name__ == "__main__":
    main()
