"""A keyed work queue: coalesces requests, never runs one key twice at once, retries with
backoff. Level-triggered: a key says "look at this object again", not what changed.

Coalescing window: a key added while not queued waits `window` seconds (250 ms by default)
before it is queued; every add in the meantime is the same request. A bulk change (a
`kubectl apply` of thousands of Routes of one Gateway) therefore costs one render per window
or per render, whichever is longer, not one per object."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

MAX_BACKOFF_SECONDS = 60.0
COALESCE_SECONDS = 0.25
log = logging.getLogger(__name__)


def backoff_seconds(failures: int) -> float:
    """The delay before retrying a key after its `failures`-th failure in a row: 1 s, 2 s,
    4 s, ... up to `MAX_BACKOFF_SECONDS`."""
    return min(MAX_BACKOFF_SECONDS, 0.5 * 2.0**failures)


class WorkQueue(Generic[K]):
    """Run `process(key)` for each added key by `workers` tasks."""

    def __init__(
        self,
        process: Callable[[K], Awaitable[None]],
        retry_delay: Callable[[Exception], float | None],
        workers: int = 2,
        window: float = COALESCE_SECONDS,
    ) -> None:
        self._process = process
        self._retry_delay = retry_delay
        self._workers = workers
        self._window = window
        self._waiting: dict[K, asyncio.TimerHandle] = {}
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._again: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.processed = 0

    def add(self, key: K) -> None:
        """Ask for `key` to be processed (once, however often it is asked before it runs),
        after the coalescing window."""
        if key in self._timers:
            return  # a retry is due: it reads the latest state, after its backoff
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued and key not in self._waiting:
            if self._window <= 0:
                self._enqueue(key)
            else:
                self._waiting[key] = asyncio.get_running_loop().call_later(
                    self._window, self._enqueue, key
                )

    def _enqueue(self, key: K) -> None:
        self._waiting.pop(key, None)
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    @property
    def idle(self) -> bool:
        return not (self._queued or self._active or self._timers or self._waiting)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"wardgate-worker-{i}")
            for i in range(self._workers)
        ]

    async def stop(self) -> None:
        for timer in (*self._timers.values(), *self._waiting.values()):
            timer.cancel()
        self._timers.clear()
        self._waiting.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def _retry(self, key: K) -> None:
        self._timers.pop(key, None)
        self._enqueue(key)

    async def _run(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            try:
                await self._process(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = self._retry_delay(exc)
                if delay is None:
                    delay = backoff_seconds(failures)
                log.warning("processing %s failed (%s); retrying in %.1f s", key, exc, delay)
                if key not in self._timers:
                    self._timers[key] = asyncio.get_running_loop().call_later(
                        delay, self._retry, key
                    )
            finally:
                self.processed += 1
                self._active.discard(key)
                if key in self._again:
                    # Changed while it ran: again, after the window.
                    self._again.discard(key)
                    self.add(key)
