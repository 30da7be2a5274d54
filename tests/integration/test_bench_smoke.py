"""The benchmark harness still works: `python -m bench.run --smoke` (about a second per contender)
produces every case with positive figures. The figures themselves mean nothing here.

Case 7 runs its render part only; the operator's cluster figures come from
`bench/bench_operator.py`, whose cluster path the operator's own tests cover."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CASES = {"1", "2", "2L", "3", "4a", "4b", "5", "6", "7", "8a", "8b"}


def test_smoke_run_has_every_case(tmp_path: Path) -> None:
    output = tmp_path / "smoke.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(output.read_text())
    cases = {case["key"]: case for case in results["cases"]}
    assert set(cases) == CASES

    for key in CASES - {"6", "7"}:
        contenders = cases[key]["contenders"]
        assert len(contenders) >= 2, key
        for contender in contenders:
            where = f"case {key}, {contender['name']}"
            assert contender["requests_per_second"]["median"] > 0, where
            assert contender["p99_ms"]["median"] > 0, where
            assert contender["errors"] == 0, where
            if cases[key]["anchor"] is not None:
                assert contender["ratio"] > 0, where
    names = {c["name"] for c in cases["2"]["contenders"]}
    assert names == {
        "wardgate HS256",
        "haproxy jwt_verify HS256",
        "nginx proxy_pass (no auth)",
        "python floor (no framework)",
    }
    wardgate = cases["2"]["contenders"][0]
    assert wardgate["cpu_us_per_request"]["median"] > 0
    assert cases["2L"]["p99_added_ms"] == cases["2L"]["p99_added_ms"]  # not NaN

    routes = cases["6"]
    assert {shape["shape"] for shape in routes["match"]} >= {"static hit", "one parameter"}
    assert all(shape["ns_10"] > 0 and shape["ns_10000"] > 0 for shape in routes["match"])
    assert routes["rss_mib_10"] > 0
    assert routes["rss_mib_10000"] > routes["rss_mib_10"]
    assert cases["7"]["render_1000_routes"]["render_median_ms"] > 0
    for key in ("8a", "8b"):
        assert [c["name"] for c in cases[key]["contenders"]] == [
            "wardgate TLS",
            "haproxy TLS",
            "wardgate plain HTTP",
        ]
        assert cases[key]["contenders"][0]["cpu_us_per_request"]["median"] > 0
    assert any("req/s" in line for line in results["table"])
