"""ClaimBook: one LIST and a watch give every first reconcile a view of the claims taken after its resource was
created; step_events: one Event per reason and reconcile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from aitbc_operator import errors, postgres
from aitbc_operator.k8s.client import Kube
from aitbc_operator.k8s.resources import Kind
from aitbc_operator.reconcilers.claims import ClaimBook
from aitbc_operator.reconcilers.database import EVENT_MESSAGE_LIMIT, step_events
from aitbc_operator.reconcilers.database_policy import Claim, claim_of
from tests.factories import make_database

Obj = dict[str, Any]


def database(name: str, uid: str) -> Obj:
    obj = make_database(name, service="mempool")
    obj["metadata"].update(namespace="apps", uid=uid, creationTimestamp="2026-01-01T00:00:00Z")
    return obj


class WatchedKube:
    """AitbcDatabases behind a LIST and a watch the test drives: ``send`` puts an event on the open stream,
    ``expire`` ends it with 410 Gone, ``fail`` breaks the next LISTs."""

    def __init__(self, *objects: Obj) -> None:
        self.objects: dict[str, Obj] = {o["metadata"]["uid"]: o for o in objects}
        self.lists = self.watches = 0
        self.fail: Exception | None = None
        self.stream: asyncio.Queue[tuple[str, Obj] | Exception] = asyncio.Queue()

    async def list(self, kind: Kind, namespace: str | None = None, **_: Any) -> list[Obj]:
        return (await self.list_versioned(kind, namespace))[0]

    async def list_versioned(self, kind: Kind, namespace: str | None = None, **_: Any) -> tuple[list[Obj], str]:
        self.lists += 1
        if self.fail is not None:
            raise self.fail
        return list(self.objects.values()), "10"

    async def watch(self, kind: Kind, since: str, *, seconds: int) -> AsyncIterator[tuple[str, Obj]]:
        self.watches += 1
        while True:
            item = await self.stream.get()
            if isinstance(item, Exception):
                raise item
            yield item

    def send(self, kind: str, obj: Obj) -> None:
        """A change made at the apiserver: the LISTs see it, and the open watch delivers it."""
        if kind == "DELETED":
            self.objects.pop(obj["metadata"]["uid"], None)
        else:
            self.objects[obj["metadata"]["uid"]] = obj
        self.stream.put_nowait((kind, obj))

    def expire(self) -> None:
        self.stream.put_nowait(errors.Expired("too old"))


async def settle() -> None:
    """Let every ready task run up to its next real wait."""
    for _ in range(10):
        await asyncio.sleep(0)


def follower(kube: WatchedKube, wait: float = 5.0) -> ClaimBook:
    return ClaimBook(cast(Kube, kube), follow=True, wait=wait, retry=0.01)


def claim(name: str, uid: str | None = None) -> Claim:
    """The claim a first reconcile of ``database(name, uid)`` asks about."""
    found = claim_of(database(name, uid or f"u-{name}"))
    assert found is not None
    return found


def names(claims: tuple[Any, ...]) -> list[str]:
    return sorted(c.name for c in claims)


def test_without_following_every_question_lists() -> None:
    kube = WatchedKube(database("a", "u-a"))
    claims = ClaimBook(cast(Kube, kube))

    async def main() -> None:
        assert names(await claims.overlapping(claim("a"))) == ["a"]
        assert names(await claims.overlapping(claim("a"))) == ["a"]

    asyncio.run(main())
    assert (kube.lists, kube.watches) == (2, 0)


def test_concurrent_first_reconciles_are_answered_from_one_list_and_the_watch() -> None:
    kube = WatchedKube(*(database(f"db{i}", f"u{i}") for i in range(20)))
    claims = follower(kube)

    async def main() -> list[tuple[Any, ...]]:
        first = await asyncio.gather(*(claims.overlapping(claim(f"db{i}", f"u{i}")) for i in range(20)))
        kube.send("ADDED", database("late", "u-late"))  # created after the LIST: the watch brings it
        later = await claims.overlapping(claim("late"))
        await claims.stop()
        return [*first, later]

    results = asyncio.run(main())
    assert all(len(r) == 20 for r in results[:20])
    assert "late" in names(results[20])
    assert len(results[20]) == 21
    assert (kube.lists, kube.watches) == (1, 1)


def test_a_question_waits_until_the_watch_holds_its_resource_and_then_sees_every_earlier_change() -> None:
    kube = WatchedKube(database("old", "u-old"))
    claims = follower(kube)

    async def main() -> tuple[Any, ...]:
        await claims.overlapping(claim("old"))
        asking = asyncio.ensure_future(claims.overlapping(claim("new")))  # kopf delivered it before our watch did
        await settle()
        assert not asking.done()
        kube.send("DELETED", database("old", "u-old"))
        kube.send("ADDED", database("other", "u-other"))
        kube.send("ADDED", database("new", "u-new"))
        result = await asking
        await claims.stop()
        return result

    assert names(asyncio.run(main())) == ["new", "other"]  # the deletion before it is applied too
    assert kube.lists == 1


def test_a_claim_changed_by_an_update_is_the_updated_one() -> None:
    kube = WatchedKube(database("a", "u-a"))
    claims = follower(kube)

    async def main() -> tuple[Any, ...]:
        await claims.overlapping(claim("a"))
        changed = database("a", "u-a")
        changed["spec"]["databaseName"] = "renamed"
        kube.send("MODIFIED", changed)
        kube.send("ADDED", database("b", "u-b"))
        result = await claims.overlapping(claim("b"))
        await claims.stop()
        return result

    claimed = {c.name: c.database for c in asyncio.run(main())}
    assert claimed["a"] == "renamed"


def distinct(name: str, database_name: str, role_name: str) -> Obj:
    obj = database(name, f"u-{name}")
    obj["spec"].update(databaseName=database_name, roleName=role_name)
    return obj


@pytest.mark.parametrize("follow", [True, False])
def test_a_question_gets_only_the_claims_sharing_a_name_and_a_rename_moves_a_claim(follow: bool) -> None:
    kube = WatchedKube(distinct("a", "d1", "r1"), distinct("b", "d1", "r2"), distinct("c", "d3", "r1"),
                       distinct("z", "d9", "r9"))
    claims = ClaimBook(cast(Kube, kube), follow=follow, wait=5.0, retry=0.01)
    asking = claim_of(distinct("a", "d1", "r1"))
    assert asking is not None

    async def main() -> tuple[list[str], list[str]]:
        before = names(await claims.overlapping(asking))
        kube.send("MODIFIED", distinct("b", "d2", "r2"))
        kube.send("ADDED", distinct("y", "d8", "r1"))
        await settle()
        after = names(await claims.overlapping(asking))
        await claims.stop()
        return before, after

    assert asyncio.run(main()) == (["a", "b", "c"], ["a", "c", "y"])


def test_an_expired_watch_lists_again() -> None:
    kube = WatchedKube(database("a", "u-a"))
    claims = follower(kube)

    async def main() -> tuple[Any, ...]:
        await claims.overlapping(claim("a"))
        kube.objects["u-b"] = database("b", "u-b")  # missed by the watch
        kube.expire()
        result = await claims.overlapping(claim("b"))
        await claims.stop()
        return result

    assert names(asyncio.run(main())) == ["a", "b"]
    assert kube.lists == 2


def test_while_the_apiserver_cannot_be_listed_questions_fail_and_then_recover() -> None:
    kube = WatchedKube(database("a", "u-a"))
    kube.fail = errors.ApiUnavailable("apiserver down")
    claims = follower(kube, wait=0.05)

    async def main() -> tuple[Any, ...]:
        with pytest.raises(errors.ApiUnavailable):
            await claims.overlapping(claim("a"))  # waited for the watch, then its own LIST failed too
        kube.fail = None
        result = await claims.overlapping(claim("a"))
        await claims.stop()
        return result

    assert names(asyncio.run(main())) == ["a"]


def test_a_resource_the_watch_never_delivers_is_answered_by_a_list_of_its_own() -> None:
    kube = WatchedKube(database("a", "u-a"))
    claims = follower(kube, wait=0.05)

    async def main() -> tuple[Any, ...]:
        await claims.overlapping(claim("a"))
        result = await claims.overlapping(claim("gone"))  # deleted before the watch delivered it
        await claims.stop()
        return result

    assert names(asyncio.run(main())) == ["a"]
    assert kube.lists == 2


def test_invalid_specs_claim_nothing() -> None:
    bad = database("bad", "u-bad")
    bad["spec"]["databaseName"] = 'x"; DROP'
    kube = WatchedKube(database("a", "u-a"), bad)

    async def main() -> tuple[Any, ...]:
        claims = follower(kube)
        result = await claims.overlapping(claim("a"))
        await claims.stop()
        return result

    assert names(asyncio.run(main())) == ["a"]


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
