"""Periodic checks of many objects from one task: the AitbcDatabase drift checks, the AitbcNode re-checks.

Not a kopf timer or daemon per object: kopf keeps a timer's or daemon's object body - the whole parsed object,
managedFields and kopf's own annotations included, ~16 KiB for an AitbcDatabase - and its task for as long as the
object exists (measured with 200 AitbcDatabases: 3.2 MiB of bodies; at 2,000 they would be most of the operator's
memory). The schedule keeps a due time per object; each check reads the object afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Key = tuple[str, str]
#: The due time of an object whose check is running: the next one is scheduled when it ends.
_RUNNING = math.inf


class Schedule:
    """When each tracked object is checked next: ``interval`` seconds after it was first tracked, then
    ``interval`` after its previous check ended (as a kopf timer without ``sharp``) - or sooner, when a reconcile
    asked for it (``request``). At most ``concurrency`` checks run at once; objects due together are checked in the
    order they became due."""

    def __init__(self, interval: float, *, concurrency: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._due: dict[Key, float] = {}
        self._hints: dict[Key, float] = {}  # the delay last requested (``request``), for after each check
        self._heap: list[tuple[float, Key]] = []  # (due, key); entries whose due time changed are skipped
        self._changed = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._due)

    def start(self, check: Callable[[str, str], Awaitable[None]]) -> None:
        """Run the checks (``run``) in a task of their own, unless they run already (until ``stop``). The task takes
        the caller's context (contextvars)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(check), name="scheduled checks")

    def stop(self) -> None:
        """Cancel the task ``start`` made, and with it the running checks."""
        if self._task is not None:
            self._task.cancel()

    def keep(self, key: Key, check: Callable[[str, str], Awaitable[None]]) -> None:
        """Track ``key`` and run the checks with ``check`` (``start``)."""
        self.track(key)
        self.start(check)

    def track(self, key: Key) -> None:
        """Check ``key`` one interval from now, unless it is tracked already (then its time stays)."""
        if key not in self._due:
            self._at(key, self._clock() + self._interval)

    def request(self, key: Key, after: float | None) -> None:
        """Check ``key`` ``after`` seconds from now, and as long after every check that follows until the next request
        (None, or more than the interval: the interval); tracked from now on if it was not. Asked while its check
        runs (by that check's reconcile, or another one meanwhile): counted from the end of that check."""
        delay = self._interval if after is None else min(after, self._interval)
        self._hints[key] = delay
        if self._due.get(key) != _RUNNING:
            self._at(key, self._clock() + delay)

    def forget(self, key: Key) -> None:
        """No more checks of ``key`` (it is gone); a check already running ends normally."""
        self._due.pop(key, None)
        self._hints.pop(key, None)

    def _at(self, key: Key, when: float) -> None:
        self._due[key] = when
        heapq.heappush(self._heap, (when, key))
        self._changed.set()

    def _next_due(self) -> tuple[float, Key] | None:
        """The earliest entry still valid (stale ones are dropped)."""
        while self._heap:
            when, key = self._heap[0]
            if self._due.get(key) == when:
                return when, key
            heapq.heappop(self._heap)
        return None

    async def run(self, check: Callable[[str, str], Awaitable[None]]) -> None:
        """Run the checks as they fall due, until cancelled (then the running ones are cancelled too)."""
        try:
            while True:
                self._changed.clear()
                head = self._next_due()
                if head is None:
                    await self._wait(None)
                    continue
                if (delay := head[0] - self._clock()) > 0:
                    await self._wait(delay)
                    continue
                await self._slots.acquire()
                if self._next_due() != head:  # forgotten or moved while waiting for a slot
                    self._slots.release()
                    continue
                heapq.heappop(self._heap)
                self._due[head[1]] = _RUNNING
                task = asyncio.create_task(self._one(check, head[1]), name=f"check {head[1][0]}/{head[1][1]}")
                self._running.add(task)
                task.add_done_callback(self._running.discard)
        finally:
            for task in list(self._running):
                task.cancel()

    async def _wait(self, delay: float | None) -> None:
        """Until ``delay`` has passed (None: forever) or an entry was added."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), delay)

    async def _one(self, check: Callable[[str, str], Awaitable[None]], key: Key) -> None:
        try:
            await check(*key)
        except Exception:  # one object's failure must not end the schedule
            log.exception("check of %s/%s failed", *key)
        finally:
            self._slots.release()
            if self._due.get(key) == _RUNNING:
                self._at(key, self._clock() + self._hints.get(key, self._interval))
