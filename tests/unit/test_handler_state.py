"""The handlers' per-object state: locks that are forgotten when released (and coalesce bursts of child events),
re-checks that honour the requeue hint of any reconcile (a child event's included) and go with the node, the
operator-wide registries. Real asyncio, no kopf operator: the reconcile itself is replaced, the handlers and the
schedule are the operator's."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from aitbc_operator.builders.common import LABEL_OWNER
from aitbc_operator.handlers import database as database_handlers
from aitbc_operator.handlers import node as node_handlers
from aitbc_operator.handlers import share_registries
from aitbc_operator.handlers.common import object_lock
from aitbc_operator.k8s.resources import AITBC_NODE, Kind
from aitbc_operator.reconcilers.node import NodeOutcome
from aitbc_operator.settings import Settings
from tests.factories import make_database, make_node

#: Every wait below is bounded by this; the poll interval of the re-checks is ten times longer.
DEADLINE = 3.0


def per_object(base: dict[str, Any]) -> dict[str, Any]:
    """The memo kopf hands an object's handlers: a shallow copy of the operator's memo, made at its first event."""
    return copy.copy(base)


def operator_memo(**entries: Any) -> dict[str, Any]:
    """The operator's memo as its startup leaves it (what the tests need of it, and the shared registries)."""
    memo = dict(entries)
    share_registries(memo)
    return memo


async def eventually(predicate: Any, what: str) -> None:
    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110 (state of the code under test, which offers no event to await)
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), DEADLINE)
    except TimeoutError:
        pytest.fail(f"not within {DEADLINE} s: {what}")


def test_object_locks_exclude_each_other_and_are_forgotten() -> None:
    memo: dict[str, Any] = {}
    inside: list[int] = []
    most = 0

    async def user(name: str) -> None:
        nonlocal most
        async with object_lock(memo, "AitbcNode", "ns", name):
            inside.append(1)
            most = max(most, len(inside))
            await asyncio.sleep(0.01)
            inside.pop()

    async def main() -> None:
        await asyncio.gather(*(user("a") for _ in range(5)), user("b"))

    asyncio.run(main())
    assert most == 2  # never two holders of "a" at once, but "a" and "b" side by side
    assert memo["locks"] == {}


def test_a_burst_of_child_events_makes_one_reconcile_after_the_running_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Five child events while a reconcile runs: one more reconcile, which reads the node after all five; a spec
    change waiting meanwhile is never skipped, and serves the events that arrive while it waits."""
    body = make_node("n1", "ns")
    release = asyncio.Event()
    reads: list[int] = []

    class CountingKube(OneNodeKube):
        async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
            reads.append(len(arrived))
            return await super().get(kind, namespace, name)

    arrived: list[int] = []

    async def fake_reconcile(kube: Any, obj: Any, **_: Any) -> NodeOutcome:
        if len(reads) == 1:
            await release.wait()
        return NodeOutcome(requeue_after=None)

    monkeypatch.setattr(node_handlers, "reconcile_node", fake_reconcile)
    memo = operator_memo(kube=CountingKube(body), settings=Settings())

    async def child() -> None:
        arrived.append(1)
        await node_handlers._from_child(per_object(memo), "ns", {LABEL_OWNER: "n1"}, "MODIFIED")

    async def main() -> None:
        first = asyncio.ensure_future(node_handlers.node_changed(namespace="ns", name="n1", memo=per_object(memo)))
        await eventually(lambda: reads == [0], "the first reconcile to read the node")
        events = [asyncio.ensure_future(child()) for _ in range(5)]
        await eventually(lambda: len(arrived) == 5 and sum(t.done() for t in events) == 4, "four events coalesced")
        release.set()
        await asyncio.wait_for(asyncio.gather(first, *events), DEADLINE)
        assert reads == [0, 5]  # one reconcile for the five, reading after the last of them
        assert memo["locks"] == {}

        release.clear()
        reads.clear()
        arrived.clear()
        first = asyncio.ensure_future(child())
        await eventually(lambda: reads == [1], "a child event's reconcile to read the node")
        spec_change = asyncio.ensure_future(node_handlers.node_changed(namespace="ns", name="n1",
                                                                       memo=per_object(memo)))
        await asyncio.sleep(0)
        late = asyncio.ensure_future(child())
        await asyncio.wait_for(late, DEADLINE)  # served by the waiting spec change
        release.set()
        await asyncio.wait_for(asyncio.gather(first, spec_change), DEADLINE)
        assert reads == [1, 2]
        assert memo["locks"] == {}

    asyncio.run(main())


class OneNodeKube:
    """Enough Kube for handlers.node.reconcile: the AitbcNode can be read."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        return self.body if kind == AITBC_NODE and name == self.body["metadata"]["name"] else None


def test_the_recheck_takes_the_step_a_child_events_reconcile_asks_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child event's reconcile asks to be re-checked in 50 ms (a rollout step); the schedule, polling every 30 s,
    re-checks then (probing heights). Once the node is gone, nothing of it is left: no entry, no lock."""
    body = make_node("n1", "ns")
    calls: list[bool] = []

    async def fake_reconcile(kube: Any, obj: Any, *, probe_heights: bool, **_: Any) -> NodeOutcome:
        calls.append(probe_heights)  # the re-check probes heights, child events do not
        return NodeOutcome(requeue_after=None if probe_heights else 0.05)

    monkeypatch.setattr(node_handlers, "reconcile_node", fake_reconcile)
    kube = OneNodeKube(body)
    memo = operator_memo(kube=kube, settings=Settings(node_poll_interval=30.0))

    async def main() -> None:
        await node_handlers._from_child(per_object(memo), "ns", {LABEL_OWNER: "n1"}, None)  # listed: no reconcile
        assert calls == []
        await node_handlers._from_child(per_object(memo), "ns", {LABEL_OWNER: "n1"}, "MODIFIED")  # the pod's memo
        await eventually(lambda: calls == [False, True], "the re-check after the child event's hint")
        assert len(node_handlers.rechecks(memo)) == 1
        kube.body = make_node("other", "ns")  # n1 is gone
        await node_handlers.recheck(per_object(memo), "ns", "n1")
        assert len(node_handlers.rechecks(memo)) == 0
        assert memo["locks"] == {}
        await node_handlers.stop_rechecks(memo=per_object(memo))

    asyncio.run(main())


class NodesKube:
    """Enough Kube for handlers.node.reconcile of several AitbcNodes (read by name; a missing one is None)."""

    def __init__(self, *bodies: dict[str, Any]) -> None:
        self.bodies = {b["metadata"]["name"]: b for b in bodies}

    async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        return self.bodies.get(name) if kind == AITBC_NODE else None


def test_a_connection_secret_event_reconciles_exactly_the_nodes_whose_mempool_uses_its_database(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The map of mempool users follows the nodes' reconciles: a node that moved to another database, a deleted
    node and a node without a PostgreSQL mempool are not reconciled for the Secret; no API read is needed for it."""
    uses_a = make_node("a1", "ns", mempool={"backend": "postgres", "databaseRef": {"name": "db-a"}})
    moves = make_node("a2", "ns", mempool={"backend": "postgres", "databaseRef": {"name": "db-a"}})
    deleted = make_node("a3", "ns", mempool={"backend": "postgres", "databaseRef": {"name": "db-a"}})
    plain = make_node("p1", "ns")
    kube = NodesKube(uses_a, moves, deleted, plain)
    reconciled: list[str] = []

    async def fake_reconcile(kube: Any, obj: Any, **_: Any) -> NodeOutcome:
        reconciled.append(obj["metadata"]["name"])
        return NodeOutcome(requeue_after=None)

    monkeypatch.setattr(node_handlers, "reconcile_node", fake_reconcile)
    memo = operator_memo(kube=kube, settings=Settings())
    node_memos = {node: per_object(memo) for node in kube.bodies}
    secret_memo = per_object(memo)
    secret_labels = {LABEL_OWNER: "db-a"}

    async def main() -> None:
        for node, own in node_memos.items():
            await node_handlers.node_changed(namespace="ns", name=node, memo=own)
        assert node_handlers.mempool_users(memo).users("ns", "db-a") == ["a1", "a2", "a3"]
        moves["spec"]["mempool"]["databaseRef"]["name"] = "db-b"
        await node_handlers.node_changed(namespace="ns", name="a2", memo=node_memos["a2"])
        await node_handlers.node_event(type="DELETED", namespace="ns", name="a3", memo=node_memos["a3"])
        reconciled.clear()
        await node_handlers.secret_event(type=None, namespace="ns", labels=secret_labels, memo=secret_memo)
        assert reconciled == []  # kopf's replay of the listing at a restart: the nodes' resumes read the Secret
        await node_handlers.secret_event(type="MODIFIED", namespace="ns", labels=secret_labels, memo=secret_memo)
        assert reconciled == ["a1"]
        await node_handlers.secret_event(type="MODIFIED", namespace="other", labels=secret_labels, memo=secret_memo)
        assert reconciled == ["a1"]
        del kube.bodies["a1"]  # gone without a delete handler run (e.g. while the operator was down)
        await node_handlers.secret_event(type="MODIFIED", namespace="ns", labels=secret_labels, memo=secret_memo)
        assert node_handlers.mempool_users(memo).users("ns", "db-a") == []

    asyncio.run(main())


def test_a_retry_scheduled_from_one_objects_handler_is_cancelled_when_the_operator_stops() -> None:
    """A dump Job's event schedules its AitbcDatabase's retry in the Job's own memo; the cleanup handler, given the
    operator's memo, still cancels it."""
    memo = operator_memo()

    async def main() -> None:
        database_handlers.recheck_later(per_object(memo), "ns", "db", 30.0)
        (task,) = database_handlers.retries(memo).values()
        await database_handlers.cancel_retries(memo=memo)
        await asyncio.sleep(0)
        assert task.cancelled()

    asyncio.run(main())


def test_a_resume_converges_without_logging_in_as_the_role_and_a_creation_or_change_logs_in(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart opens no server connection per AitbcDatabase to check its password (the drift check does)."""
    body = make_database("db", "ns")
    body["metadata"]["resourceVersion"] = "1"
    checks: list[bool] = []

    async def fake_reconcile(kube: Any, pool: Any, obj: Any, *, verify_password: bool, **_: Any) -> Any:
        checks.append(verify_password)
        return database_handlers.DatabaseOutcome()

    class TrackingKube:
        async def current(self, kind: Kind, seen: dict[str, Any]) -> dict[str, Any]:
            return seen

    monkeypatch.setattr(database_handlers, "reconcile_database", fake_reconcile)
    memo = operator_memo(kube=TrackingKube(), pg=None)

    async def main() -> None:
        await database_handlers.database_resumed(namespace="ns", name="db", body=body, memo=per_object(memo))
        await database_handlers.database_changed(namespace="ns", name="db", body=body, memo=per_object(memo))
        await database_handlers.cancel_retries(memo=memo)

    asyncio.run(main())
    assert checks == [False, True]


def test_a_reconciled_database_is_drift_checked_from_the_operators_schedule_until_it_is_gone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever reconciled it (here a Secret's handler, with its own memo), the object is on the one schedule; a
    reconcile that finds it gone or being deleted takes it off."""
    body = make_database("db", "ns")
    bodies: dict[str, dict[str, Any]] = {"db": body}

    async def fake_reconcile(kube: Any, pool: Any, obj: Any, **_: Any) -> Any:
        return database_handlers.DatabaseOutcome()

    class ReadingKube:
        async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
            return bodies.get(name)

    monkeypatch.setattr(database_handlers, "reconcile_database", fake_reconcile)
    memo = operator_memo(kube=ReadingKube(), pg=None)
    schedule = database_handlers.drift_schedule(memo)

    async def main() -> None:
        await database_handlers.reconcile(per_object(memo), "ns", "db")
        assert len(schedule) == 1
        body["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z"
        await database_handlers.drift_check(per_object(memo), "ns", "db")
        assert len(schedule) == 0
        del body["metadata"]["deletionTimestamp"]
        await database_handlers.reconcile(per_object(memo), "ns", "db")
        del bodies["db"]
        await database_handlers.drift_check(per_object(memo), "ns", "db")
        assert len(schedule) == 0
        await database_handlers.cancel_retries(memo=memo)

    asyncio.run(main())
