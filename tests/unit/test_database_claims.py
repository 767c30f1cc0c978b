"""ClaimBook: shared, single-flight LISTs that still give every first reconcile a view taken after its resource was
created; step_events: one Event per reason and reconcile."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from aitbc_operator import postgres
from aitbc_operator.k8s.client import Kube
from aitbc_operator.k8s.resources import Kind
from aitbc_operator.reconcilers.claims import ClaimBook
from aitbc_operator.reconcilers.database import EVENT_MESSAGE_LIMIT, step_events
from tests.factories import make_database

Obj = dict[str, Any]


def database(name: str, uid: str) -> Obj:
    obj = make_database(name, service="mempool")
    obj["metadata"].update(namespace="apps", uid=uid, creationTimestamp="2026-01-01T00:00:00Z")
    return obj


class ListingKube:
    """A cluster of AitbcDatabases whose LISTs can be held open (``gate``) to make callers overlap."""

    def __init__(self) -> None:
        self.objects: list[Obj] = []
        self.lists = 0
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def list(self, kind: Kind, namespace: str | None = None, **_: Any) -> list[Obj]:
        self.lists += 1
        snapshot = list(self.objects)  # what the apiserver saw when the LIST arrived
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return snapshot


async def settle() -> None:
    """Let every ready task run up to its next real wait."""
    for _ in range(5):
        await asyncio.sleep(0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def book(kube: ListingKube, clock: Clock | None = None, max_age: float = 5.0) -> ClaimBook:
    return ClaimBook(cast(Kube, kube), max_age=max_age, clock=clock or Clock())


def names(claims: tuple[Any, ...]) -> list[str]:
    return sorted(c.name for c in claims)


def test_concurrent_first_reconciles_share_one_list() -> None:
    kube = ListingKube()
    kube.objects = [database(f"db{i}", f"u{i}") for i in range(20)]
    claims = book(kube)

    async def main() -> list[tuple[Any, ...]]:
        kube.gate = asyncio.Event()
        waiting = [asyncio.ensure_future(claims.including(f"u{i}")) for i in range(20)]
        await settle()
        kube.gate.set()
        return list(await asyncio.gather(*waiting))

    results = asyncio.run(main())
    assert kube.lists == 1
    assert all(names(r) == names(results[0]) for r in results)
    assert len(results[0]) == 20
    # Later callers within max_age reuse the snapshot too.
    asyncio.run(claims.including("u3"))
    assert kube.lists == 1


def test_a_resource_created_after_the_list_in_flight_started_waits_for_the_next_one() -> None:
    kube = ListingKube()
    kube.objects = [database("old", "u-old")]
    claims = book(kube)

    async def main() -> tuple[Any, ...]:
        kube.gate = asyncio.Event()
        early = asyncio.ensure_future(claims.including("u-old"))
        await settle()  # that LIST is in flight, without the new resource
        kube.objects.append(database("new", "u-new"))
        late = asyncio.ensure_future(claims.including("u-new"))
        await settle()
        kube.gate.set()
        await early
        return await late

    late = asyncio.run(main())
    assert names(late) == ["new", "old"]
    assert kube.lists == 2


def test_a_snapshot_older_than_max_age_is_not_reused() -> None:
    kube = ListingKube()
    kube.objects = [database("a", "u-a"), database("b", "u-b")]
    clock = Clock()
    claims = book(kube, clock, max_age=5.0)
    asyncio.run(claims.including("u-a"))
    kube.objects.pop()  # b is deleted: its claim must not block names for long
    clock.now += 4.0
    assert names(asyncio.run(claims.including("u-a"))) == ["a", "b"]
    assert kube.lists == 1
    clock.now += 2.0
    assert names(asyncio.run(claims.including("u-a"))) == ["a"]
    assert kube.lists == 2


def test_fresh_always_lists_and_errors_reach_every_waiter() -> None:
    kube = ListingKube()
    kube.objects = [database("a", "u-a")]
    claims = book(kube)
    asyncio.run(claims.including("u-a"))
    asyncio.run(claims.fresh())
    assert kube.lists == 2

    kube.fail = RuntimeError("apiserver down")
    other = book(kube)

    async def main() -> list[BaseException | tuple[Any, ...]]:
        kube.gate = asyncio.Event()
        waiting = [asyncio.ensure_future(other.including("u-a")) for _ in range(3)]
        await settle()
        kube.gate.set()
        return list(await asyncio.gather(*waiting, return_exceptions=True))

    outcomes = asyncio.run(main())
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert kube.lists == 3  # one shared failing LIST
    kube.fail, kube.gate = None, None
    assert names(asyncio.run(other.including("u-a"))) == ["a"]  # the next call lists again


def test_invalid_specs_claim_nothing() -> None:
    kube = ListingKube()
    bad = database("bad", "u-bad")
    bad["spec"]["databaseName"] = 'x"; DROP'
    kube.objects = [database("a", "u-a"), bad]
    assert names(asyncio.run(book(kube).including("u-a"))) == ["a"]


# --- Events of a reconcile ----------------------------------------------------------------------------------------


def step(action: postgres.Action, message: str, *, drift: bool = False) -> postgres.Step:
    return postgres.Step(action, message, drift=drift)


def test_one_event_per_reason_with_the_messages_in_order() -> None:
    events = step_events((
        step(postgres.Action.CREATE_ROLE, "role r created"),
        step(postgres.Action.MARK_ROLE, "role r marked"),
        step(postgres.Action.CREATE_DATABASE, "database d created"),
    ))
    assert events == [("Reconciled", "role r created; role r marked; database d created", False)]


def test_drift_is_a_warning_and_a_recreated_database_has_its_own_reason() -> None:
    events = step_events((
        step(postgres.Action.CREATE_ROLE, "role r recreated", drift=True),
        step(postgres.Action.MARK_ROLE, "role r marked"),
        step(postgres.Action.CREATE_DATABASE, "database d recreated EMPTY", drift=True),
        step(postgres.Action.SET_CONNECTION_LIMIT, "limit restored", drift=True),
    ))
    assert events == [
        ("DriftRepaired", "role r recreated; limit restored", True),
        ("Reconciled", "role r marked", False),
        ("DatabaseRecreated", "database d recreated EMPTY", True),
    ]
    assert step_events(()) == []


@pytest.mark.parametrize("count", [1, 200])
def test_event_messages_are_bounded(count: int) -> None:
    steps = tuple(step(postgres.Action.MARK_ROLE, f"role r{i:04d} marked as managed by apps/x") for i in range(count))
    ((_, message, _),) = step_events(steps)
    assert len(message) <= EVENT_MESSAGE_LIMIT
    assert message.startswith("role r0000 marked")
    assert message.endswith("...") == (count > 1)
