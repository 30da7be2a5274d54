"""Route matching and path normalisation cost, in-process: 10 routes against 10,000, and
10 routes on one host against 10,000 across 1,000 hosts.

Usage: `.venv/bin/python -m bench.bench_matching [--number N]`. Prints the best time per call
of several repeats for each request shape, the 10,000/10 ratio (the matcher's cost must not
grow with the number of routes), and the memory taken by a 10,000-route table.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import timeit
import tracemalloc
from collections.abc import Callable, Iterator
from functools import partial

from wardgate.gateway.hosts import HostTable
from wardgate.gateway.matching import RouteEntry, Router
from wardgate.gateway.paths import normalise_path

GET = frozenset({"GET"})

# Method, path and what it exercises; every path has the same depth for both tables.
CASES: list[tuple[str, str, str]] = [
    ("static hit", "GET", "/api/v1/svc7/items"),
    ("HEAD on a GET route", "HEAD", "/api/v1/svc7/items"),
    ("one parameter", "GET", "/api/v1/svc7/items/42"),
    ("parameter, then literal", "GET", "/api/v1/svc7/items/42/notes"),
    ("prefix wildcard", "GET", "/api/v1/svc7/files/a/b/c"),
    ("405, parameter route", "PATCH", "/api/v1/svc7/items/42"),
    ("404, one segment off", "GET", "/api/v1/svc7/nothing/here"),
]


def route_entries(count: int) -> Iterator[RouteEntry[int]]:
    """A realistic mix: per service, a collection, an item, a sub-resource and a file tree."""
    shapes = [
        ("/api/v1/svc{i}/items", frozenset({"GET", "POST"})),
        ("/api/v1/svc{i}/items/{{id}}", frozenset({"GET", "PUT", "DELETE"})),
        ("/api/v1/svc{i}/items/{{id}}/notes", GET),
        ("/api/v1/svc{i}/files/*", GET),
        ("/api/v1/svc{i}/health", None),
    ]
    made = 0
    # Service 7 first, so that both tables hold the routes the cases hit.
    for service in (7, *range(10_000)):
        if service == 7 and made:
            continue
        for pattern, methods in shapes:
            if made == count:
                return
            yield RouteEntry(pattern.format(i=service), methods, made)
            made += 1


def host_entries(hosts: int, per_host: int) -> Iterator[tuple[list[str], RouteEntry[int]]]:
    """`per_host` routes on each of `hosts` hostnames: half exact (`hN.example.com`), half
    wildcards (`*.tN.example.com`)."""
    made = 0
    for host in range(hosts):
        name = f"h{host}.example.com" if host % 2 == 0 else f"*.t{host}.example.com"
        for entry in route_entries(per_host):
            yield [name], RouteEntry(entry.pattern, entry.methods, made)
            made += 1


def hosts_table(number: int) -> None:
    """Matching by host: 10 routes on one host against 10,000 across 1,000 hosts."""
    small = HostTable.build(host_entries(2, 10), ["h0.example.com", "*.t1.example.com"])
    entries = list(host_entries(1_000, 10))
    big = HostTable.build(entries, sorted({name for names, _ in entries for name in names}))
    print(f"\n{'match by host':32} {'1 host':>12} {'1,000 hosts':>12} {'ratio':>7}")
    for host_name, host in [("exact", "h0.example.com"), ("wildcard", "a.t1.example.com")]:
        for name, method, path in CASES:
            label = f"{host_name}: {name}"[:32]
            expected = type(small.match(method, host, path)[0])
            assert type(big.match(method, host, path)[0]) is expected, label
            t_small = best_ns(partial(small.match, method, host, path), number)
            t_big = best_ns(partial(big.match, method, host, path), number)
            print(f"{label:32} {t_small:9.0f} ns {t_big:9.0f} ns {t_big / t_small:7.2f}")
    for label, one, many in [
        ("exact", "h0.example.com", "h998.example.com"),
        ("wildcard", "a.t1.example.com", "a.t999.example.com"),
    ]:
        t_one = best_ns(partial(small.serves, one), number)
        t_many = best_ns(partial(big.serves, many), number)
        print(
            f"{'host served? ' + label:32} {t_one:9.0f} ns {t_many:9.0f} ns {t_many / t_one:7.2f}"
        )
    assert not big.serves("evil.example.net")


def best_ns(call: Callable[[], object], number: int, repeat: int = 7) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e9


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000, help="calls per repeat")
    number = parser.parse_args().number

    print(f"python {platform.python_version()} on {platform.machine()}, {number} calls x 7")
    # Memory first, in a process that has built nothing yet; RSS without tracemalloc, whose
    # own bookkeeping would count, then the allocations of a second, traced build.
    gc.collect()
    before = rss_bytes()
    big = Router.build(route_entries(10_000))
    gc.collect()
    after = rss_bytes()
    tracemalloc.start()
    traced_router = Router.build(route_entries(10_000))
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del traced_router
    print(
        f"10,000-route table: RSS +{(after - before) / 2**20:.1f} MiB "
        f"(process {after / 2**20:.1f} MiB), {traced / 2**20:.1f} MiB allocated (tracemalloc)"
    )
    small = Router.build(route_entries(10))
    assert len(small) == 10
    assert len(big) == 10_000

    print(f"\n{'match':32} {'10 routes':>12} {'10,000':>12} {'ratio':>7}")
    for name, method, path in CASES:
        assert type(small.match(method, path)) is type(big.match(method, path)), name
        t_small = best_ns(partial(small.match, method, path), number)
        t_big = best_ns(partial(big.match, method, path), number)
        print(f"{name:32} {t_small:9.0f} ns {t_big:9.0f} ns {t_big / t_small:7.2f}")

    hosts_table(number)

    print(f"\n{'normalise_path':32} {'per call':>12}")
    for name, raw in [
        ("clean path (fast path)", "/api/v1/svc7/items/42/notes"),
        ("'//' and '..' (slow path)", "//api/v1/../v1/svc7//items/42"),
        ("percent-escapes (slow path)", "/api/v1/svc7/items/%34%32/caf%c3%a9"),
    ]:
        print(f"{name:32} {best_ns(partial(normalise_path, raw), number):9.0f} ns")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
