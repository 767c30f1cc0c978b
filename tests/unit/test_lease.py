"""Leader election's decisions (k8s/lease.py) against an in-memory Lease and a hand-driven monotonic clock.

client-go's semantics: the holder's renewTime is never compared with the local clock; a candidate takes over only
after leaseDuration without seeing the record change; the leader gives up at its renew deadline, each request bounded
by the request timeout and by that deadline.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aitbc_operator import errors
from aitbc_operator.k8s import lease as lease_mod
from aitbc_operator.k8s.lease import Election, LeaderLock
from aitbc_operator.settings import LeaseTimings

PATH = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/leader"


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeApi:
    """One Lease behind `request`, with resourceVersion checks; `down` makes every request hang for its timeout."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.down = False
        self.timeouts: list[float] = []
        self.before_put: Callable[[], Awaitable[object]] | None = None
        self.closed = False

    async def request(self, method: str, path: str, *, body: Any = None, content_type: str | None = None,
                      seconds: float | None = None, query: Any = None) -> Any:
        assert seconds is not None
        self.timeouts.append(seconds)
        if self.down:
            self.clock.now += seconds
            raise errors.ApiUnavailable(f"{method} {path}: timed out")
        if method == "GET":
            if self.lease is None:
                raise errors.NotFound(path)
            return copy.deepcopy(self.lease)
        if method == "POST":
            if self.lease is not None:
                raise errors.ApiConflict(path)
            return self._store(body)
        assert method == "PUT"
        assert self.lease is not None
        if self.before_put is not None:  # another replica writes between this one's read and write
            race, self.before_put = self.before_put, None
            await race()
        if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise errors.ApiConflict(path)
        return self._store(body)

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)

    async def aclose(self) -> None:
        self.closed = True

    def holder(self) -> str | None:
        return None if self.lease is None else self.lease["spec"]["holderIdentity"]


def run(step: Awaitable[Any]) -> Any:
    """One step of the election (its methods are coroutines), in an event loop of its own."""
    return asyncio.run(step)  # type: ignore[arg-type]


def lock(api: FakeApi, identity: str, clock: Clock, timings: LeaseTimings | None = None) -> LeaderLock:
    return LeaderLock(api, "ops", "leader", identity, timings=timings or LeaseTimings(),  # type: ignore[arg-type]
                      monotonic=clock)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api(clock: Clock) -> FakeApi:
    return FakeApi(clock)


def skew(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Move the wall clock the election writes into renewTime."""
    monkeypatch.setattr(lease_mod, "wall_clock", lambda: datetime.now(UTC) + timedelta(seconds=seconds))


def test_a_candidate_whose_clock_is_ahead_never_takes_a_lease_being_renewed(
    api: FakeApi, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """renewTime is an hour old by the candidate's clock; it changes every retry period, so it is not taken."""
    skew(monkeypatch, -3600)
    leader = lock(api, "a", clock)
    assert run(leader.try_acquire_or_renew())
    candidate = lock(api, "b", clock)
    for _ in range(30):  # 60 s of renewals every 2 s
        with pytest.raises(lease_mod.LeaseLost, match="held by a"):
            run(candidate.try_acquire_or_renew())
        clock.now += 2
        assert run(leader.renew()) is None
    assert api.holder() == "a"


def test_a_candidate_takes_over_only_after_the_lease_duration_without_a_change_it_observed(
    api: FakeApi, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader's clock is a day ahead (renewTime in the future): irrelevant, only the observed time counts."""
    skew(monkeypatch, 86400)
    assert run(lock(api, "a", clock).try_acquire_or_renew())  # then it dies: no more renewals
    skew(monkeypatch, 0)
    candidate = lock(api, "b", clock)
    with pytest.raises(lease_mod.LeaseLost):
        run(candidate.try_acquire_or_renew())  # first sight: observed now
    clock.now += 14.9
    with pytest.raises(lease_mod.LeaseLost):
        run(candidate.try_acquire_or_renew())
    clock.now += 0.2
    assert run(candidate.try_acquire_or_renew())
    assert api.lease is not None
    assert api.lease["spec"]["holderIdentity"] == "b"
    assert api.lease["spec"]["leaseTransitions"] == 1


def test_a_new_candidate_waits_a_whole_lease_duration_however_old_the_record_looks(
    api: FakeApi, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    skew(monkeypatch, -3600)  # the holder's renewTime an hour ago
    assert run(lock(api, "a", clock).try_acquire_or_renew())
    skew(monkeypatch, 0)
    candidate = lock(api, "b", clock)
    for _ in range(7):
        with pytest.raises(lease_mod.LeaseLost):
            run(candidate.try_acquire_or_renew())
        clock.now += 2
    clock.now += 1.1
    assert run(candidate.try_acquire_or_renew())


def test_a_released_lease_is_taken_at_once(api: FakeApi, clock: Clock) -> None:
    leader = lock(api, "a", clock)
    assert run(leader.try_acquire_or_renew())
    candidate = lock(api, "b", clock)
    with pytest.raises(lease_mod.LeaseLost):
        run(candidate.try_acquire_or_renew())
    run(leader.release())
    assert api.holder() is None
    assert run(candidate.try_acquire_or_renew())
    assert api.holder() == "b"


def test_the_leader_gives_up_at_its_renew_deadline_with_requests_bounded_by_it(api: FakeApi, clock: Clock) -> None:
    """A stalled apiserver: every request hangs until its timeout. Renewal stops trying at the deadline (10 s after
    the start of the last success), never sending a request that could outlast it. (A short real wait between tries
    keeps the test fast; the hung requests move the test's clock.)"""
    leader = lock(api, "a", clock, LeaseTimings(retry_period=0.05))
    assert run(leader.try_acquire_or_renew())
    last_success = leader.renewed_at
    clock.now += 2
    api.down, api.timeouts = True, []
    assert run(leader.renew()) == "not renewed within 10 s"
    assert clock.now <= last_success + 10
    assert api.timeouts
    assert max(api.timeouts) <= 5
    assert sum(api.timeouts) <= 8  # 10 s deadline minus the 2 s before the first try; the waits in between


def test_the_leader_that_sees_another_holder_has_lost_at_once(api: FakeApi, clock: Clock) -> None:
    leader = lock(api, "a", clock)
    assert run(leader.try_acquire_or_renew())
    assert api.lease is not None
    api.lease["spec"]["holderIdentity"] = "b"  # taken (e.g. after a long pause of this process)
    assert run(leader.renew()) == "lease held by b"
    api.lease = None
    assert run(leader.renew()) == "lease deleted"


def test_a_write_conflict_is_not_leadership(api: FakeApi, clock: Clock) -> None:
    """Two candidates race for a released lease: both read it, the second one's write wins, the first gets a
    conflict (resourceVersion), not the lease."""
    first, second = lock(api, "a", clock), lock(api, "b", clock)
    assert run(first.try_acquire_or_renew())
    run(first.release())
    api.before_put = lambda: second.try_acquire_or_renew()
    assert not run(first.try_acquire_or_renew())
    assert api.holder() == "b"


FAST = LeaseTimings(lease_duration=3, renew_deadline=2, retry_period=0.05, request_timeout=1)


def test_the_election_renews_on_its_own_thread_and_reports_a_loss_from_there(api: FakeApi) -> None:
    election = Election(LeaderLock(api, "ops", "leader", "a", timings=FAST))  # type: ignore[arg-type]
    lost: list[tuple[str, str]] = []
    reported = threading.Event()

    def on_lost(why: str) -> None:
        lost.append((why, threading.current_thread().name))
        reported.set()

    assert election.acquire()
    election.keep(on_lost)
    renewed, deadline = api.version, time.monotonic() + 5
    while api.version < renewed + 3:  # renewals go on while this thread does nothing
        assert time.monotonic() < deadline, "no renewals"
        time.sleep(0.02)
    assert api.lease is not None
    api.lease["spec"]["holderIdentity"] = "b"
    assert reported.wait(5)
    election.release()
    assert lost == [("lease held by b", "leader-lease")]
    assert api.holder() == "b"  # not ours any more: not released
    assert api.closed


def test_a_released_election_gives_the_lease_up_and_reports_nothing(api: FakeApi) -> None:
    election = Election(LeaderLock(api, "ops", "leader", "a", timings=FAST))  # type: ignore[arg-type]
    lost: list[str] = []
    assert election.acquire()
    election.keep(lost.append)
    election.release()
    assert api.holder() is None
    assert lost == []
    assert not any(t.name == "leader-lease" and t.is_alive() for t in threading.enumerate())


@pytest.mark.parametrize(("timings", "complaint"), [
    ({"lease_duration": 10, "renew_deadline": 10}, "AITBC_LEASE_DURATION"),
    ({"retry_period": 12}, "AITBC_LEASE_RETRY_PERIOD"),
    ({"request_timeout": 10}, "AITBC_LEASE_REQUEST_TIMEOUT"),
])
def test_inconsistent_timings_are_refused_by_name(timings: dict[str, float], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        LeaseTimings(**timings)
