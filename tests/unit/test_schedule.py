"""The operator-wide schedule of periodic checks (handlers/schedule.py): real asyncio with short intervals; every
wait is bounded, and what is asserted is which checks ran, never how long they took."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from aitbc_operator.handlers.schedule import Schedule

DEADLINE = 3.0
INTERVAL = 0.02


async def until(predicate: Callable[[], bool], what: str) -> None:
    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110 (the schedule offers no event to await)
            await asyncio.sleep(0.005)

    try:
        await asyncio.wait_for(poll(), DEADLINE)
    except TimeoutError:
        pytest.fail(f"not within {DEADLINE} s: {what}")


@contextlib.asynccontextmanager
async def running(schedule: Schedule, check: Callable[[str, str], Awaitable[None]]) -> AsyncIterator[None]:
    """The schedule started (twice: the second start is a no-op) until the block ends, then stopped."""
    schedule.start(check)
    schedule.start(check)
    tasks = [t for t in asyncio.all_tasks() if t.get_name() == "scheduled checks"]
    assert len(tasks) == 1
    try:
        yield
    finally:
        schedule.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[0]


def test_tracked_objects_are_checked_again_and_again_and_a_forgotten_one_no_more() -> None:
    checked: Counter[tuple[str, str]] = Counter()

    async def check(namespace: str, name: str) -> None:
        checked[(namespace, name)] += 1

    async def main() -> None:
        schedule = Schedule(INTERVAL, concurrency=4)
        async with running(schedule, check):
            schedule.track(("ns", "a"))
            schedule.track(("ns", "b"))
            await until(lambda: checked[("ns", "a")] >= 3 and checked[("ns", "b")] >= 3, "three checks of each")
            schedule.forget(("ns", "a"))
            seen = checked[("ns", "a")]
            later = checked[("ns", "b")] + 3
            await until(lambda: checked[("ns", "b")] >= later, "more checks of b")
            assert checked[("ns", "a")] <= seen + 1  # at most the one already running when it was forgotten
            assert len(schedule) == 1

    asyncio.run(main())


def test_tracking_again_keeps_the_time_and_nothing_is_checked_before_its_interval() -> None:
    checked: list[str] = []

    async def check(namespace: str, name: str) -> None:
        checked.append(name)

    async def main() -> None:
        schedule = Schedule(3600.0, concurrency=4)
        async with running(schedule, check):
            for _ in range(3):
                schedule.track(("ns", "a"))
            await asyncio.sleep(0.05)
            assert checked == []
            assert len(schedule) == 1

    asyncio.run(main())


def test_a_request_brings_the_next_check_forward_and_holds_for_the_checks_after_it() -> None:
    """With an hour's interval: a request for 20 ms is checked then, and again 20 ms after each check, until a request
    for None puts it back to the interval; one made during its check counts from the end of that check."""
    checked: list[str] = []
    during: list[float | None] = []

    async def check(namespace: str, name: str) -> None:
        checked.append(name)
        if during:
            schedule.request((namespace, name), during.pop())

    schedule = Schedule(3600.0, concurrency=4)

    async def main() -> None:
        async with running(schedule, check):
            schedule.request(("ns", "a"), 0.02)
            await until(lambda: len(checked) >= 3, "three checks 20 ms apart")
            during.append(None)
            count = len(checked)
            await until(lambda: not during, "the request made during a check")
            await asyncio.sleep(0.1)
            assert len(checked) == count + 1  # the interval again: no check after the one that asked
            schedule.request(("ns", "b"), 7200.0)  # capped at the interval, and tracked
            assert len(schedule) == 2
            schedule.forget(("ns", "a"))
            schedule.request(("ns", "b"), 0.02)
            await until(lambda: "b" in checked, "b brought forward")

    asyncio.run(main())


def test_at_most_concurrency_checks_run_at_once_and_a_failing_check_does_not_end_the_schedule() -> None:
    running_now = 0
    most = 0
    done: Counter[str] = Counter()
    release = asyncio.Event()

    async def check(namespace: str, name: str) -> None:
        nonlocal running_now, most
        running_now += 1
        most = max(most, running_now)
        try:
            await release.wait()
            if name == "bad":
                raise RuntimeError("boom")
            done[name] += 1
        finally:
            running_now -= 1

    async def main() -> None:
        schedule = Schedule(INTERVAL, concurrency=2)
        async with running(schedule, check):
            for name in ("bad", "a", "b", "c", "d"):
                schedule.track(("ns", name))
            await until(lambda: running_now == 2, "two checks running")
            await asyncio.sleep(0.05)
            assert running_now == 2  # the others wait for a slot
            release.set()
            await until(lambda: all(done[n] >= 2 for n in "abcd"), "every good object checked twice")
        assert most == 2

    asyncio.run(main())


def test_stopping_the_schedule_cancels_the_running_checks() -> None:
    started = asyncio.Event()
    cancelled: list[str] = []

    async def check(namespace: str, name: str) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    async def main() -> None:
        schedule = Schedule(INTERVAL, concurrency=2)
        async with running(schedule, check):
            schedule.track(("ns", "a"))
            await asyncio.wait_for(started.wait(), DEADLINE)
        await until(lambda: cancelled == ["a"], "the running check cancelled")

    asyncio.run(main())
