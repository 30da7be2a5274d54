"""The operator's work queue: coalescing, one run of a key at a time, retries with backoff
that events do not cut short."""

from __future__ import annotations

import asyncio

from wardgate.operator.workqueue import WorkQueue


async def test_work_queue_coalesces_and_retries() -> None:
    seen: list[str] = []
    gate, started, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()
    failures = {"b": 1}

    async def process(key: str) -> None:
        seen.append(key)
        if seen == ["a"] or seen[:2] == ["b", "a"]:
            started.set()
            await gate.wait()
        if failures.get(key):
            failures[key] -= 1
            raise RuntimeError("transient")
        if seen.count("a") == 2 and seen.count("b") == 2:
            finished.set()

    queue: WorkQueue[str] = WorkQueue(process, lambda exc: 0.01, workers=2)
    queue.start()
    try:
        queue.add("a")
        queue.add("b")
        await asyncio.wait_for(started.wait(), 5)
        queue.add("a")  # while "a" runs: once more afterwards, never concurrently
        queue.add("a")
        gate.set()
        await asyncio.wait_for(finished.wait(), 5)
        assert seen.count("a") == 2  # the two requests made while it ran coalesced
        assert seen.count("b") == 2  # failed once, retried
    finally:
        await queue.stop()


async def _next(processed: asyncio.Queue[str]) -> str:
    return await asyncio.wait_for(processed.get(), 5)


async def test_changes_within_the_window_are_processed_once() -> None:
    processed: asyncio.Queue[str] = asyncio.Queue()

    async def process(key: str) -> None:
        processed.put_nowait(key)

    queue: WorkQueue[str] = WorkQueue(process, lambda exc: None, workers=2, window=0.2)
    queue.start()
    try:
        for _ in range(5000):  # a bulk edit: every Route event names the same Gateway
            queue.add("gateway")
        queue.add("other")
        assert sorted([await _next(processed), await _next(processed)]) == ["gateway", "other"]
        queue.add("later")  # processed after the window: nothing else came meanwhile
        assert await _next(processed) == "later"
        queue.add("gateway")  # a later change is processed again
        assert await _next(processed) == "gateway"
    finally:
        await queue.stop()


async def test_events_during_a_backoff_do_not_cut_it_short() -> None:
    loop = asyncio.get_running_loop()
    attempts: list[float] = []
    processed: asyncio.Queue[str] = asyncio.Queue()

    async def process(key: str) -> None:
        attempts.append(loop.time())
        processed.put_nowait(key)
        if len(attempts) == 1:
            raise RuntimeError("refused")

    queue: WorkQueue[str] = WorkQueue(process, lambda exc: 0.5, workers=1, window=0.0)
    queue.start()
    try:
        queue.add("gateway")
        assert await _next(processed) == "gateway"  # refused: retried in 0.5 s
        for _ in range(20):  # e.g. the watch delivering the operator's own status writes
            queue.add("gateway")
        assert await _next(processed) == "gateway"
        assert attempts[1] - attempts[0] >= 0.5
        queue.add("sentinel")
        assert await _next(processed) == "sentinel"  # no third attempt came before it
        assert len(attempts) == 3
    finally:
        await queue.stop()
