"""The coordinated rollout as a pure decision: scenarios, timeouts, node restarts and a randomized invariant check.

`World` is a tiny model of the StatefulSet and Deployment controllers and of the node pod, so each scenario reads as
the sequence of things that happen in a cluster; `decide` is only ever given what an observer could see.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from aitbc_operator.models.node import RolloutStatus
from aitbc_operator.rollout import (
    REASON_COMPLETE,
    REASON_NODE_TIMEOUT,
    REASON_RESTARTING_RPC,
    REASON_ROLLING_NODE,
    REASON_ROLLING_RPC,
    REASON_RPC_STALLED,
    REASON_WAITING_FOR_NODE,
    REASON_WAITING_FOR_RPC,
    Holds,
    NodeObservation,
    NodePod,
    RolloutDecision,
    RolloutSnapshot,
    RpcObservation,
    decide,
    observe_node,
    observe_rpc,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TIMEOUT = 600.0


@dataclass
class RpcWrite:
    """An RPC template write and what the node looked like at that moment."""

    config_hash: str
    marker: str
    node_pod: NodePod | None


@dataclass
class World:
    """Controllers and pods, reduced to what the rollout observes."""

    desired: str = "A"
    now: datetime = T0
    sts: NodeObservation | None = None
    rpc: RpcObservation | None = None
    status: RolloutStatus = field(default_factory=RolloutStatus)
    broken: set[str] = field(default_factory=set)  # hashes the node never becomes Ready on
    pods_made: int = 0
    node_writes: list[str] = field(default_factory=list)
    rpc_writes: list[RpcWrite] = field(default_factory=list)
    ready_on: set[str] = field(default_factory=set)  # hashes the node has been seen Ready on (with current template)
    last: RolloutDecision | None = None
    phases_seen: set[str] = field(default_factory=set)

    # --- the operator ---
    def snapshot(self) -> RolloutSnapshot:
        return RolloutSnapshot(self.desired, self.status, self.sts, self.rpc, TIMEOUT, self.now)

    def reconcile(self) -> RolloutDecision:
        d = decide(self.snapshot())
        if d.write_node:
            gen = self.sts.generation + 1 if self.sts else 1
            base = self.sts or NodeObservation(None, 0, None, None, None, None)
            self.sts = replace(base, template_hash=d.node_hash, generation=gen)
            self.node_writes.append(d.node_hash)
        if d.write_rpc:
            assert d.rpc is not None
            self.rpc_writes.append(RpcWrite(d.rpc.config_hash, d.rpc.node_restart_marker, self.node_pod))
            # A new template: the controller has not observed it, no pod of it exists yet.
            base = self.rpc or RpcObservation(None, None, 0, None, 1, 0, 0, 0)
            self.rpc = replace(base, template_hash=d.rpc.config_hash, restart_marker=d.rpc.node_restart_marker,
                               generation=base.generation + 1, updated_replicas=0)
        self.status = d.status
        self.last = d
        self.phases_seen.add(d.status.phase)
        return d

    # --- the cluster ---
    def sts_controller(self) -> None:
        """One pass of the StatefulSet controller: replace an outdated pod, create a missing one, finish a rollout."""
        if self.sts is None:
            return
        rev = f"rev-{self.sts.template_hash}"
        sts = replace(self.sts, observed_generation=self.sts.generation, update_revision=rev)
        pod = sts.pod
        if pod is not None and pod.revision != rev:
            pod = None
        if pod is None:
            self.pods_made += 1
            pod = NodePod(f"pod{self.pods_made}", 0, False, sts.template_hash, rev)
        if pod.ready and pod.revision == rev:
            sts = replace(sts, current_revision=rev)
        self.sts = replace(sts, pod=pod)

    def node_becomes_ready(self) -> None:
        if self.sts and self.sts.pod and self.sts.pod.config_hash not in self.broken:
            self.sts = replace(self.sts, pod=replace(self.sts.pod, ready=True))
            self.sts_controller()
            template = self.sts.template_hash or ""
            if self.sts.ready_on(template) is not None:
                self.ready_on.add(template)

    def node_container_restarts(self) -> None:
        if self.sts and self.sts.pod:
            pod = self.sts.pod
            self.sts = replace(self.sts, pod=replace(pod, restart_count=pod.restart_count + 1, ready=False))

    def node_pod_deleted(self) -> None:
        if self.sts:
            self.sts = replace(self.sts, pod=None)

    def rpc_controller(self) -> None:
        if self.rpc:
            self.rpc = replace(self.rpc, observed_generation=self.rpc.generation, updated_replicas=1,
                               available_replicas=1, total_replicas=1)

    def settle(self, rounds: int = 6) -> RolloutDecision:
        """Let everything happen (controllers, readiness) and reconcile, a few times."""
        d = self.reconcile()
        for _ in range(rounds):
            self.sts_controller()
            self.node_becomes_ready()
            self.rpc_controller()
            self.now += timedelta(seconds=5)
            d = self.reconcile()
        return d

    @property
    def node_pod(self) -> NodePod | None:
        return self.sts.pod if self.sts else None


def steady(desired: str = "A") -> World:
    w = World(desired=desired)
    d = w.settle()
    assert d.reason == REASON_COMPLETE
    return w


# --- scenarios ---


def test_creation_creates_the_node_first_and_the_rpc_only_once_the_node_is_ready() -> None:
    w = World()
    d = w.reconcile()
    assert (d.write_node, d.write_rpc, d.rpc, d.status.phase) == (True, False, None, "RollingNode")
    assert d.status.started_at == T0
    w.sts_controller()
    d = w.reconcile()
    assert (d.write_node, d.rpc, d.reason) == (False, None, REASON_ROLLING_NODE)
    w.node_becomes_ready()
    d = w.reconcile()
    assert d.write_rpc
    assert d.rpc is not None
    assert (d.rpc.config_hash, d.rpc.node_restart_marker) == ("A", "pod1/0")
    assert d.status.phase == "RollingRpc"
    assert d.reason == REASON_ROLLING_RPC
    assert d.rpc_config_current
    w.rpc_controller()
    d = w.reconcile()
    assert (d.status.phase, d.reason, d.ready, d.requeue_after) == ("Idle", REASON_COMPLETE, True, None)


def test_idle_steady_state_writes_nothing() -> None:
    w = steady()
    for _ in range(3):
        w.now += timedelta(hours=1)
        d = w.reconcile()
        assert not d.write_node
        assert not d.write_rpc
        assert not d.status_changed
        assert d.status.phase == "Idle"
        assert not d.progressing
        assert not d.degraded
        assert d.requeue_after is None


def test_hash_change_rolls_only_the_node_first() -> None:
    w = steady()
    w.desired = "B"
    d = w.reconcile()
    assert d.write_node
    assert d.node_hash == "B"
    assert not d.write_rpc
    assert d.rpc is not None
    assert d.rpc.config_hash == "A"
    assert not d.rpc_config_current  # the RPC's ConfigMap must not be touched
    assert (d.status.phase, d.status.target_hash, d.status.node_hash, d.status.rpc_hash) == (
        "RollingNode", "B", "B", "A")
    assert d.status.started_at == w.now
    assert d.progressing
    assert d.requeue_after == 5.0


def test_node_not_yet_ready_means_wait_with_rpc_untouched() -> None:
    w = steady()
    w.desired = "B"
    w.reconcile()
    w.sts_controller()  # old pod replaced, new one starting
    for _ in range(5):
        w.now += timedelta(seconds=5)
        d = w.reconcile()
        assert not d.write_node
        assert not d.write_rpc
        assert d.rpc is not None
        assert d.rpc.config_hash == "A"
        assert d.status.phase == "RollingNode"


def test_pod_ready_but_statefulset_rollout_not_observed_is_not_enough() -> None:
    w = steady()
    w.desired = "B"
    w.reconcile()
    assert w.sts is not None
    # The pod is still the old one and Ready; the controller has not even seen the new template.
    d = w.reconcile()
    assert not d.write_rpc
    assert d.status.phase == "RollingNode"


def test_node_ready_on_new_revision_rolls_the_rpc_then_idle() -> None:
    w = steady()
    w.desired = "B"
    w.reconcile()
    w.sts_controller()
    w.node_becomes_ready()
    d = w.reconcile()
    assert d.write_rpc
    assert d.rpc is not None
    assert (d.rpc.config_hash, d.rpc.node_restart_marker) == ("B", "pod2/0")
    assert d.rpc_config_current
    assert d.status.phase == "RollingRpc"
    d = w.reconcile()  # the Deployment controller has not caught up yet
    assert not d.write_rpc
    assert d.status.phase == "RollingRpc"
    assert d.reason == REASON_WAITING_FOR_RPC
    w.rpc_controller()
    d = w.reconcile()
    assert d.status.phase == "Idle"
    assert d.ready
    assert (d.status.node_hash, d.status.rpc_hash) == ("B", "B")


def test_changes_mid_rollout_coalesce_into_one_rpc_restart() -> None:
    """B then C while the node rolls: the node goes straight to C, the RPC moves once, from A to C."""
    w = steady()
    w.desired = "B"
    w.reconcile()
    w.now += timedelta(seconds=3)
    w.desired = "C"  # arrives before the StatefulSet controller even acted on B
    d = w.reconcile()
    assert d.write_node
    assert d.node_hash == "C"
    assert d.status.target_hash == "C"
    assert d.status.started_at == w.now  # a new target restarts the clock
    w.settle()
    assert w.node_writes == ["A", "B", "C"]
    assert [x.config_hash for x in w.rpc_writes] == ["A", "C"]
    assert w.pods_made == 2  # pod1 (A) and pod2 (C): the B revision never got a pod


def test_change_while_rpc_is_rolling_keeps_the_rpc_behind_the_node() -> None:
    w = steady()
    w.desired = "B"
    w.reconcile()
    w.sts_controller()
    w.node_becomes_ready()
    w.reconcile()  # RPC -> B
    w.desired = "C"
    d = w.reconcile()
    assert d.write_node
    assert not d.write_rpc
    assert d.rpc is not None
    assert d.rpc.config_hash == "B"
    assert d.status.phase == "RollingNode"
    w.settle()
    assert [x.config_hash for x in w.rpc_writes] == ["A", "B", "C"]


def test_timeout_stalls_and_degrades_with_the_rpc_untouched() -> None:
    w = steady()
    w.broken = {"B"}
    w.desired = "B"
    w.reconcile()
    start = w.now
    w.sts_controller()
    w.node_becomes_ready()  # never, on B
    w.now = start + timedelta(seconds=TIMEOUT - 1)
    d = w.reconcile()
    assert d.status.phase == "RollingNode"
    assert d.requeue_after == 1.0
    w.now = start + timedelta(seconds=TIMEOUT)
    d = w.reconcile()
    assert (d.status.phase, d.reason, d.degraded, d.progressing) == ("Stalled", REASON_NODE_TIMEOUT, True, False)
    assert not d.write_rpc
    assert d.rpc is not None
    assert d.rpc.config_hash == "A"
    assert d.status.started_at == start
    assert "configuration A" in d.message
    assert [x.config_hash for x in w.rpc_writes] == ["A"]


def test_recovery_after_stalled_when_a_new_hash_arrives() -> None:
    w = steady()
    w.broken = {"B"}
    w.desired = "B"
    w.reconcile()
    w.sts_controller()
    w.now += timedelta(seconds=TIMEOUT + 1)
    assert w.reconcile().status.phase == "Stalled"
    w.desired = "C"  # the fix
    d = w.reconcile()
    assert d.status.phase == "RollingNode"
    assert d.write_node
    assert not d.degraded
    assert d.status.started_at == w.now
    d = w.settle()
    assert d.status.phase == "Idle"
    assert w.rpc is not None
    assert w.rpc.template_hash == "C"


def test_recovery_after_stalled_when_the_node_becomes_ready() -> None:
    w = steady()
    w.broken = {"B"}
    w.desired = "B"
    w.reconcile()
    w.sts_controller()
    w.now += timedelta(seconds=TIMEOUT + 1)
    assert w.reconcile().status.phase == "Stalled"
    w.broken = set()  # e.g. the database came back
    w.node_becomes_ready()
    d = w.reconcile()
    assert d.status.phase == "RollingRpc"
    assert d.write_rpc
    assert not d.degraded


@pytest.mark.parametrize("event", ["container_restart", "pod_recreated"])
def test_rpc_restarts_after_the_node_restarted_once_it_is_ready(event: str) -> None:
    w = steady()
    if event == "container_restart":
        w.node_container_restarts()
        expected_marker = "pod1/1"
    else:
        w.node_pod_deleted()
        w.sts_controller()
        expected_marker = "pod2/0"
    d = w.reconcile()
    assert not d.write_rpc
    assert d.reason == REASON_WAITING_FOR_NODE
    assert d.status.phase == "Idle"
    assert not d.degraded
    w.node_becomes_ready()
    d = w.reconcile()
    assert d.write_rpc
    assert d.rpc is not None
    assert (d.rpc.config_hash, d.rpc.node_restart_marker) == ("A", expected_marker)
    assert d.reason == REASON_RESTARTING_RPC
    assert d.status.phase == "RollingRpc"
    assert d.rpc_config_current
    w.rpc_controller()
    d = w.reconcile()
    assert d.status.phase == "Idle"
    assert d.status.node_restart_marker == expected_marker
    assert len(w.rpc_writes) == 2  # creation and exactly one restart


def test_rpc_progress_deadline_exceeded_is_stalled() -> None:
    w = steady()
    assert w.rpc is not None
    w.rpc = replace(w.rpc, available_replicas=0, progress_deadline_exceeded=True)
    d = w.reconcile()
    assert (d.status.phase, d.reason, d.degraded) == ("Stalled", REASON_RPC_STALLED, True)
    assert not d.write_rpc


def test_a_deleted_rpc_is_recreated_on_the_nodes_hash() -> None:
    w = steady()
    w.rpc = None
    d = w.reconcile()
    assert d.write_rpc
    assert d.rpc is not None
    assert d.rpc.config_hash == "A"
    assert d.status.phase == "RollingRpc"


def test_returning_to_the_rpcs_hash_still_waits_for_the_node() -> None:
    """A -> B -> A quickly: the RPC never moved, the node rolls back to A; the RPC restarts after it is Ready."""
    w = steady()
    w.desired = "B"
    w.reconcile()
    w.sts_controller()
    w.desired = "A"
    d = w.reconcile()
    assert d.write_node
    assert d.node_hash == "A"
    assert d.status.phase == "RollingNode"
    assert not d.write_rpc
    d = w.settle()
    assert d.status.phase == "Idle"
    assert [x.config_hash for x in w.rpc_writes] == ["A", "A"]  # same hash, restarted after the new node pod


# --- observation parsing ---


def test_observe_node_from_api_objects() -> None:
    sts = {
        "metadata": {"generation": 4},
        "spec": {"template": {"metadata": {"annotations": {"aitbc.io/config-hash": "h1"}}}},
        "status": {"observedGeneration": 4, "currentRevision": "n-1", "updateRevision": "n-1", "readyReplicas": 1},
    }
    pod = {
        "metadata": {"uid": "u1", "labels": {"controller-revision-hash": "n-1"},
                     "annotations": {"aitbc.io/config-hash": "h1"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "node", "restartCount": 2}, {"name": "x", "restartCount": 9}]},
    }
    obs = observe_node(sts, pod)
    assert obs is not None
    assert obs.settled
    assert obs.ready_on("h1") == NodePod("u1", 2, True, "h1", "n-1")
    assert obs.ready_on("h2") is None
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    terminating = observe_node(sts, pod)
    assert terminating is not None
    assert terminating.ready_on("h1") is None
    assert observe_node(None, pod) is None
    rolling = observe_node({**sts, "status": {**sts["status"], "currentRevision": "n-0"}}, pod)
    assert rolling is not None
    assert not rolling.settled
    fresh = observe_node({"metadata": {"generation": 1}, "spec": {}}, None)
    assert fresh is not None
    assert not fresh.settled
    assert fresh.pod is None


def test_observe_rpc_from_api_object() -> None:
    dep = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 1, "template": {"metadata": {"annotations": {
            "aitbc.io/config-hash": "h1", "aitbc.io/node-restart-marker": "u1/0"}}}},
        "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1},
    }
    obs = observe_rpc(dep)
    assert obs is not None
    assert obs.rollout_complete
    assert not obs.stalled
    assert (obs.template_hash, obs.restart_marker) == ("h1", "u1/0")
    dep["status"] = {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1,
                     "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}
    obs = observe_rpc(dep)
    assert obs is not None
    assert not obs.rollout_complete
    assert obs.stalled
    assert observe_rpc(None) is None


# --- the invariant, over random event sequences ---

#: Events and their weights: mostly the cluster and the operator doing their work, sometimes a change or a failure.
EVENTS = {"reconcile": 8, "sts_controller": 5, "node_ready": 5, "rpc_controller": 5, "container_restart": 1,
          "pod_deleted": 1, "new_hash": 2, "time": 2, "break_hash": 1, "fix": 1}


def run_random(seed: int, steps: int = 300) -> World:
    rng = random.Random(seed)
    w = World()
    hashes = iter(f"H{i}" for i in range(10_000))
    for _ in range(steps):
        event = rng.choices(list(EVENTS), weights=list(EVENTS.values()))[0]
        if event == "reconcile":
            w.reconcile()
        elif event == "sts_controller":
            w.sts_controller()
        elif event == "node_ready":
            w.node_becomes_ready()
        elif event == "container_restart":
            w.node_container_restarts()
        elif event == "pod_deleted":
            w.node_pod_deleted()
        elif event == "rpc_controller":
            w.rpc_controller()
        elif event == "new_hash":
            w.desired = next(hashes)
        elif event == "time":
            w.now += timedelta(seconds=rng.choice((1, 30, 200, 700)))
        elif event == "break_hash":
            w.broken.add(w.desired)
        elif event == "fix":
            w.broken.clear()
        check_invariants(w)
    return w


def check_invariants(w: World) -> None:
    for write in w.rpc_writes:
        # Every RPC (re)start happened right after the node was seen Ready on that very hash and incarnation.
        pod = write.node_pod
        assert pod is not None
        assert pod.ready
        assert pod.config_hash == write.config_hash
        assert pod.marker == write.marker
    if w.rpc is not None:
        assert w.rpc.template_hash in w.ready_on  # the RPC is never on a configuration the node was not Ready on
    d = w.last
    if d is not None:
        assert d.node_hash == w.status.target_hash
        assert not (d.degraded and d.ready)
        assert d.status.phase != "Idle" or not d.write_node


@pytest.mark.parametrize("seed", range(40))
def test_rpc_is_never_ahead_of_the_node_over_random_events(seed: int) -> None:
    w = run_random(seed)
    # Once the world calms down, everything converges on the last desired hash.
    w.broken.clear()
    d = w.settle(rounds=8)
    assert d.status.phase == "Idle"
    assert d.ready
    assert w.sts is not None
    assert w.rpc is not None
    assert w.sts.template_hash == w.rpc.template_hash == w.desired
    assert w.node_pod is not None
    assert w.rpc.restart_marker == w.node_pod.marker


def test_random_runs_exercise_every_phase() -> None:
    """Guard against a vacuous property test: the random runs reach every phase and restart the RPC often."""
    worlds = [run_random(seed) for seed in range(40)]
    assert set().union(*(w.phases_seen for w in worlds)) == {"Idle", "RollingNode", "RollingRpc", "Stalled"}
    assert sum(len(w.rpc_writes) for w in worlds) > 200
    assert all(len({x.marker for x in w.rpc_writes}) == len(w.rpc_writes) for w in worlds)  # one per incarnation


def test_an_unavailable_rpc_is_waited_for_not_restarted() -> None:
    w = steady()
    assert w.rpc is not None
    w.rpc = replace(w.rpc, available_replicas=0)  # e.g. the RPC pod crashed; the node did not restart
    d = w.reconcile()
    assert not d.write_rpc
    assert not d.write_node
    assert (d.status.phase, d.reason, d.ready) == ("RollingRpc", REASON_WAITING_FOR_RPC, False)
    w.rpc_controller()
    assert w.reconcile().status.phase == "Idle"
    assert len(w.rpc_writes) == 1


# --- holds (backups, restores, maintenance windows: chainops.py decides them) -----------------------------------------

def _steady(replicas_rpc: int = 1, rpc_pods: int = 1, node_replicas: int = 1,
            node_pod: NodePod | None = None) -> tuple[NodeObservation, RpcObservation]:
    pod = node_pod if node_pod is not None else NodePod("uid-1", 0, True, "A", "rev-1")
    node = NodeObservation("A", 1, 1, "rev-1", "rev-1", pod if node_replicas else None, replicas=node_replicas)
    rpc = RpcObservation("A", pod.marker, 1, 1, replicas_rpc, rpc_pods, rpc_pods, rpc_pods)
    return node, rpc


def _decide_held(holds: Holds, node: NodeObservation, rpc: RpcObservation, desired: str = "A") -> RolloutDecision:
    status = RolloutStatus(phase="Idle", target_hash="A", node_hash="A", rpc_hash="A", started_at=T0)
    return decide(RolloutSnapshot(desired, status, node, rpc, TIMEOUT, T0, holds=holds))


def test_stop_holds_take_the_rpc_down_first_and_the_node_only_once_the_rpc_has_no_pod() -> None:
    node, rpc = _steady()
    held = Holds(stop_rpc=True, stop_node=True, reason="RestoreInProgress")
    first = _decide_held(held, node, rpc)
    assert (first.rpc_replicas, first.node_replicas) == (0, 1)  # the RPC still has its pod: the node stays
    assert first.status.phase == "Held"
    assert first.reason == "RestoreInProgress"
    node, rpc = _steady(replicas_rpc=0, rpc_pods=0)
    second = _decide_held(held, node, rpc)
    assert (second.rpc_replicas, second.node_replicas) == (0, 0)


def test_on_release_the_node_comes_back_first_and_the_rpc_only_when_the_node_is_ready() -> None:
    node, rpc = _steady(replicas_rpc=0, rpc_pods=0, node_replicas=0)
    starting = _decide_held(Holds(stop_rpc=True), node, rpc)
    assert (starting.node_replicas, starting.rpc_replicas) == (1, 0)
    not_ready = replace(node, replicas=1, pod=NodePod("uid-2", 0, False, "A", "rev-1"))
    released = _decide_held(Holds(), not_ready, rpc)
    assert (released.node_replicas, released.rpc_replicas) == (1, 0)  # RPC waits for the node
    ready = replace(not_ready, pod=NodePod("uid-2", 0, True, "A", "rev-1"))
    back = _decide_held(Holds(), ready, rpc)
    assert back.rpc_replicas == 1
    assert back.rpc is not None
    assert back.rpc.node_restart_marker == "uid-2/0"  # and it restarts after the new node incarnation
    assert back.status.phase == "RollingRpc"


def test_a_frozen_node_keeps_its_configuration_and_the_rpc_stays_put() -> None:
    node, rpc = _steady()
    d = _decide_held(Holds(freeze_node=True, reason="BackupBeforeMigration"), node, rpc, desired="B")
    assert d.node_hash == "A"
    assert not d.write_node
    assert not d.write_rpc
    assert not d.rpc_config_current  # the RPC's ConfigMap and Deployment are not rewritten from the new spec
    assert d.status.phase == "Held"
    released = decide(RolloutSnapshot("B", d.status, node, rpc, TIMEOUT, T0 + timedelta(hours=2)))
    assert released.node_hash == "B"
    assert released.status.started_at == T0 + timedelta(hours=2), "a rollout after a hold starts a new clock"
    assert released.status.phase == "RollingNode"
