"""The half-load case offers each contender the same rate: `bench.harness.pace` sets a
paced contender's connection count from short runs."""

from __future__ import annotations

from collections.abc import Callable

from bench.harness import Contender, Sample, pace

Run = Callable[[Contender, float, str | None], Sample]


def paced_run(rate_of: Callable[[int], float], made: list[int]) -> Run:
    """A contender whose rate follows its connection count (`rate_of`), recording the
    count of each run."""

    def run(contender: Contender, seconds: float, cpu: str | None) -> Sample:
        made.append(contender.connections)
        rate = rate_of(contender.connections)
        return Sample(rate, 1.0, 2.0, int(rate * seconds), 0, 0.0)

    return run


def test_a_slower_contender_gets_more_connections_for_the_same_rate() -> None:
    # Each paced connection sends one request per (delay + latency): 300 req/s through the
    # gateway, 420 to the upstream directly.
    made: list[int] = []
    gateway = Contender("gateway", "http://127.0.0.1:1/", connections=12)
    achieved = pace(gateway, 5000, 2, None, run=paced_run(lambda n: 300.0 * n, made))
    assert made == [12, 17]
    assert gateway.connections == 17
    assert achieved == 5100

    made = []
    direct = Contender("direct", "http://127.0.0.1:1/", connections=12)
    achieved = pace(direct, 5000, 2, None, run=paced_run(lambda n: 420.0 * n, made))
    assert made == [12]  # 5,040 req/s: within 10 % at once
    assert direct.connections == 12


def test_pacing_gives_up_after_its_tries_when_the_rate_cannot_be_reached() -> None:
    made: list[int] = []
    saturated = Contender("saturated", "http://127.0.0.1:1/", connections=10)
    achieved = pace(saturated, 5000, 1, None, tries=3, run=paced_run(lambda n: 3000.0, made))
    assert made == [10, 17, 28]
    assert achieved == 3000
