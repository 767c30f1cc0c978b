"""The coordinated rollout of an AitbcNode, as a pure decision: snapshot of the world in, what to write out.

No I/O, no clock (``now`` is in the snapshot). The handler gathers a :class:`RolloutSnapshot` (with
:func:`observe_node` and :func:`observe_rpc` from the objects it read), calls :func:`decide`, applies the
node StatefulSet with ``decision.node_hash`` and, when ``decision.rpc`` is set, the RPC Deployment with its hash
and marker, writes ``decision.status`` to ``status.rollout`` and re-checks after ``decision.requeue_after``.

The rules (everything is recomputed from observations each time; ``status.rollout`` only remembers the target
and when its rollout started):

* The node always carries the newest desired hash. A change arriving while the node is still rolling goes to
  the node at once (it never first waits for the intermediate configuration), so two quick changes cost the
  RPC one restart, not two.
* The RPC moves only to the hash the node is Ready on, and only when that is the desired hash: the node
  StatefulSet has observed its generation, its rollout is complete (currentRevision == updateRevision) and the
  node pod, of that revision and carrying that hash, is Ready. So the RPC is never on a configuration the node
  has not been Ready on. Until the node has been Ready once, the RPC is not created at all (it must not open
  the databases while the init container prepares them).
* The RPC follows node restarts: the RPC's template records the node pod incarnation (``<pod uid>/<restart
  count>`` of the node container) it was started after. When the Ready node pod is another incarnation
  (re-created or its container restarted), the RPC is rolled with the new marker: the runbook's stale-engine
  bug, fixed by construction.
* Holds (:class:`Holds`, decided by :mod:`aitbc_operator.chainops` for backups, restores and maintenance windows)
  come first: ``freeze_node`` keeps the node on the configuration it runs (a mempool migration waits for its
  backup); ``stop_rpc`` scales the RPC to 0; ``stop_node`` scales the node to 0 once the RPC has no pod left (and
  freezes both templates). Released, the node is scaled up first and the RPC only once the node is Ready. The phase
  is ``Held`` meanwhile; a rollout after a hold starts a new clock.
* If the node is not Ready on the target within the rollout timeout, the phase is ``Stalled`` and the AitbcNode
  ``Degraded``; the RPC stays where it is. A new desired hash starts a new rollout (and a new clock); the node
  becoming Ready resumes the rollout. An RPC whose Deployment exceeded its progress deadline (set to the same
  timeout) is ``Stalled`` too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .builders.node_config import ANNOTATION_CONFIG_HASH, ANNOTATION_NODE_RESTART_MARKER
from .builders.node_workloads import NODE_CONTAINER
from .models.node import RolloutPhase, RolloutStatus

#: Seconds between checks while a workload is rolling.
POLL_SECONDS = 5.0
#: Seconds between checks while Stalled (waiting for the node to recover or the spec to change).
STALLED_POLL_SECONDS = 30.0
REVISION_LABEL = "controller-revision-hash"

# Condition reasons.
REASON_COMPLETE = "RolloutComplete"
REASON_ROLLING_NODE = "RollingNode"
REASON_ROLLING_RPC = "RollingRpc"
REASON_RESTARTING_RPC = "RestartingRpc"
REASON_WAITING_FOR_NODE = "WaitingForNode"
REASON_WAITING_FOR_RPC = "WaitingForRpc"
REASON_NODE_TIMEOUT = "NodeRolloutTimeout"
REASON_RPC_STALLED = "RpcRolloutStalled"


@dataclass(frozen=True)
class Holds:
    """What a backup, restore or maintenance window asks of the rollout (see the module docstring)."""

    freeze_node: bool = False
    stop_rpc: bool = False
    stop_node: bool = False
    reason: str = ""
    """CamelCase condition reason while held, e.g. RestoreInProgress."""
    message: str = ""

    @property
    def active(self) -> bool:
        """Anything held."""
        return self.freeze_node or self.stop_rpc or self.stop_node


@dataclass(frozen=True)
class NodePod:
    """The node pod as observed."""

    uid: str
    restart_count: int
    ready: bool
    config_hash: str | None
    revision: str | None
    terminating: bool = False

    @property
    def marker(self) -> str:
        """Identity of this incarnation of the node process: pod uid and node-container restart count."""
        return f"{self.uid}/{self.restart_count}"


@dataclass(frozen=True)
class NodeObservation:
    """The node StatefulSet (and its pod) as observed."""

    template_hash: str | None
    generation: int
    observed_generation: int | None
    current_revision: str | None
    update_revision: str | None
    pod: NodePod | None
    replicas: int = 1
    """spec.replicas (0 while a hold stops the node)."""

    @property
    def settled(self) -> bool:
        """The controller has seen the latest template and finished rolling it out."""
        return (
            self.observed_generation is not None
            and self.observed_generation >= self.generation
            and self.update_revision is not None
            and self.current_revision == self.update_revision
        )

    def ready_on(self, config_hash: str) -> NodePod | None:
        """The node pod if it is Ready on ``config_hash`` with the current template, else None."""
        pod = self.pod
        if (
            self.template_hash == config_hash
            and self.settled
            and pod is not None
            and pod.ready
            and not pod.terminating
            and pod.config_hash == config_hash
            and pod.revision == self.update_revision
        ):
            return pod
        return None


@dataclass(frozen=True)
class RpcObservation:
    """The RPC Deployment as observed."""

    template_hash: str | None
    restart_marker: str | None
    generation: int
    observed_generation: int | None
    replicas: int
    updated_replicas: int
    available_replicas: int
    total_replicas: int
    progress_deadline_exceeded: bool = False

    @property
    def rollout_complete(self) -> bool:
        """The latest template is observed, every pod is updated and available, no old pod is left."""
        return (
            self.observed_generation is not None
            and self.observed_generation >= self.generation
            and self.updated_replicas >= self.replicas
            and self.available_replicas >= self.replicas
            and self.total_replicas == self.updated_replicas
        )

    @property
    def stalled(self) -> bool:
        """The controller reports the latest template exceeded its progress deadline."""
        return (
            self.progress_deadline_exceeded
            and self.observed_generation is not None
            and self.observed_generation >= self.generation
        )


@dataclass(frozen=True)
class RolloutSnapshot:
    """Everything :func:`decide` looks at."""

    desired_hash: str
    """The config hash of the current spec and referenced Secrets."""
    status: RolloutStatus
    """``status.rollout`` as last written."""
    node: NodeObservation | None
    """None when the StatefulSet does not exist."""
    rpc: RpcObservation | None
    """None when the Deployment does not exist."""
    timeout: float
    """``spec.rolloutTimeout`` in seconds."""
    now: datetime
    holds: Holds = Holds()
    """What backups, restores and maintenance windows hold."""


@dataclass(frozen=True)
class RpcTarget:
    """What the RPC pod template must carry."""

    config_hash: str
    node_restart_marker: str


@dataclass(frozen=True)
class RolloutDecision:
    """What to write. Apply the node before the RPC."""

    node_hash: str
    """Hash for the node pod template (always the desired hash)."""
    write_node: bool
    """The node template's hash differs from ``node_hash`` (or the StatefulSet is missing)."""
    rpc: RpcTarget | None
    """Hash and marker for the RPC pod template. None: do not create or apply the RPC Deployment (it does not
    exist yet, or its template is unreadable, and the node is not Ready)."""
    write_rpc: bool
    """The RPC template differs from ``rpc`` (or the Deployment is missing): applying it restarts the RPC."""
    status: RolloutStatus
    """The new ``status.rollout``."""
    status_changed: bool
    """Whether ``status`` differs from the snapshot's (skip the patch otherwise)."""
    reason: str
    """CamelCase condition reason."""
    message: str
    """Human-readable detail (deterministic: equal states give equal messages)."""
    progressing: bool
    degraded: bool
    ready: bool
    """Node and RPC are Ready on the desired hash and nothing is pending."""
    requeue_after: float | None
    """Check again after this many seconds (None: no rollout in progress)."""
    node_replicas: int = 1
    """spec.replicas of the node StatefulSet (0 while held stopped)."""
    rpc_replicas: int = 1
    """spec.replicas of the RPC Deployment (0 while held stopped, and after that until the node is Ready)."""

    @property
    def rpc_config_current(self) -> bool:
        """The RPC is (being) put on the desired hash: its ConfigMap and Deployment must follow the current spec.

        Apply the RPC ConfigMap and then the RPC Deployment exactly when this is true, never otherwise. While the
        RPC stays on an older hash, its Deployment is left exactly as it is: rebuilt from the current spec it would
        already carry parts of the new configuration (the hostPath directory and node, the mount path, placement)
        under the old hash, i.e. be ahead of the node in substance, and restart although the node is not Ready.
        (The desired hash, not the node's: a hold that freezes the node keeps the RPC where it is too.)
        """
        return self.rpc is not None and self.rpc.config_hash == self.status.target_hash


def _annotations(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("annotations") or {}


def observe_node(statefulset: Mapping[str, Any] | None, pod: Mapping[str, Any] | None) -> NodeObservation | None:
    """A :class:`NodeObservation` from the StatefulSet and its pod as read from the API (camelCase dicts)."""
    if statefulset is None:
        return None
    meta = statefulset.get("metadata") or {}
    spec = statefulset.get("spec") or {}
    status = statefulset.get("status") or {}
    template_meta = (spec.get("template") or {}).get("metadata")
    return NodeObservation(
        template_hash=_annotations(template_meta).get(ANNOTATION_CONFIG_HASH),
        generation=int(meta.get("generation") or 0),
        observed_generation=status.get("observedGeneration"),
        current_revision=status.get("currentRevision"),
        update_revision=status.get("updateRevision"),
        pod=_observe_pod(pod),
        replicas=int(spec.get("replicas", 1)),
    )


def _observe_pod(pod: Mapping[str, Any] | None) -> NodePod | None:
    if pod is None:
        return None
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    containers = status.get("containerStatuses") or []
    restarts = next((int(c.get("restartCount") or 0) for c in containers if c.get("name") == NODE_CONTAINER), 0)
    return NodePod(
        uid=str(meta.get("uid") or ""),
        restart_count=restarts,
        ready=ready,
        config_hash=_annotations(meta).get(ANNOTATION_CONFIG_HASH),
        revision=(meta.get("labels") or {}).get(REVISION_LABEL),
        terminating=meta.get("deletionTimestamp") is not None,
    )


def observe_rpc(deployment: Mapping[str, Any] | None) -> RpcObservation | None:
    """An :class:`RpcObservation` from the RPC Deployment as read from the API (camelCase dict)."""
    if deployment is None:
        return None
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    annotations = _annotations((spec.get("template") or {}).get("metadata"))
    deadline = any(
        c.get("type") == "Progressing" and c.get("status") == "False" and c.get("reason") == "ProgressDeadlineExceeded"
        for c in status.get("conditions") or []
    )
    return RpcObservation(
        template_hash=annotations.get(ANNOTATION_CONFIG_HASH),
        restart_marker=annotations.get(ANNOTATION_NODE_RESTART_MARKER),
        generation=int(meta.get("generation") or 0),
        observed_generation=status.get("observedGeneration"),
        replicas=int(spec.get("replicas", 1)),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        available_replicas=int(status.get("availableReplicas") or 0),
        total_replicas=int(status.get("replicas") or 0),
        progress_deadline_exceeded=deadline,
    )


@dataclass(frozen=True)
class _Outcome:
    phase: RolloutPhase
    reason: str
    message: str
    progressing: bool
    degraded: bool
    ready: bool
    requeue_after: float | None


def _rpc_target(snap: RolloutSnapshot) -> tuple[RpcTarget | None, bool]:
    """Where the RPC template must be, and whether that is a change."""
    node_pod = snap.node.ready_on(snap.desired_hash) if snap.node is not None else None
    current = snap.rpc
    if node_pod is not None:
        target = RpcTarget(snap.desired_hash, node_pod.marker)
        changed = current is None or (current.template_hash, current.restart_marker) != (
            target.config_hash, target.node_restart_marker)
        return target, changed
    if current is None or current.template_hash is None or current.restart_marker is None:
        # No RPC yet, or one whose template we cannot read: leave it alone until the node is Ready.
        return None, False
    return RpcTarget(current.template_hash, current.restart_marker), False


def _node_rolling(snap: RolloutSnapshot) -> bool:
    """The node is being moved to the desired configuration (as opposed to merely restarting on it)."""
    node = snap.node
    if node is None or node.template_hash != snap.desired_hash or not node.settled:
        return True
    return node.pod is not None and node.pod.config_hash != snap.desired_hash


def _node_replicas(snap: RolloutSnapshot) -> int:
    """0 once a stop hold has the RPC down (and for as long as it holds), else 1."""
    if not snap.holds.stop_node:
        return 1
    rpc_down = snap.rpc is None or (snap.rpc.replicas == 0 and snap.rpc.total_replicas == 0)
    already = snap.node is not None and snap.node.replicas == 0
    return 0 if rpc_down or already else 1


def _rpc_replicas(snap: RolloutSnapshot) -> int:
    """0 while held; an RPC left at 0 stays there until the node is Ready on the desired configuration."""
    if snap.holds.stop_rpc or snap.holds.stop_node:
        return 0
    if snap.rpc is not None and snap.rpc.replicas == 0:
        return 1 if snap.node is not None and snap.node.ready_on(snap.desired_hash) is not None else 0
    return 1


def _outcome(snap: RolloutSnapshot, rpc: RpcTarget | None, write_rpc: bool, started_at: datetime) -> _Outcome:
    desired = snap.desired_hash
    if snap.holds.active:
        return _Outcome("Held", snap.holds.reason, snap.holds.message, True, False, False, POLL_SECONDS)
    node_pod = snap.node.ready_on(desired) if snap.node is not None else None
    if node_pod is None:
        rpc_on_desired = rpc is not None and rpc.config_hash == desired
        if rpc_on_desired and not _node_rolling(snap):
            # No configuration change pending: the node is merely (re)starting; the RPC follows once it is Ready.
            return _Outcome("Idle", REASON_WAITING_FOR_NODE,
                            f"node not Ready on configuration {desired}; the RPC restarts once it is",
                            False, False, False, POLL_SECONDS)
        old = f"configuration {rpc.config_hash}" if rpc is not None else "no RPC yet"
        remaining = snap.timeout - (snap.now - started_at).total_seconds()
        if remaining <= 0:
            return _Outcome("Stalled", REASON_NODE_TIMEOUT,
                            f"node not Ready on configuration {desired} within {snap.timeout:g}s;"
                            f" the RPC stays on {old}", False, True, False, STALLED_POLL_SECONDS)
        return _Outcome("RollingNode", REASON_ROLLING_NODE,
                        f"rolling the node to configuration {desired}; the RPC stays on {old} until the node is Ready",
                        True, False, False, max(1.0, min(POLL_SECONDS, remaining)))
    current = snap.rpc
    scaling_up = current is not None and current.replicas == 0
    if write_rpc or current is None or not current.rollout_complete or scaling_up:
        if current is not None and not write_rpc and current.stalled:
            return _Outcome("Stalled", REASON_RPC_STALLED,
                            f"the RPC did not become available on configuration {desired} within its deadline",
                            False, True, False, STALLED_POLL_SECONDS)
        if not write_rpc:
            return _Outcome("RollingRpc", REASON_WAITING_FOR_RPC,
                            f"node Ready on configuration {desired}; waiting for the RPC to be available",
                            True, False, False, POLL_SECONDS)
        if current is not None and current.template_hash == desired:
            return _Outcome("RollingRpc", REASON_RESTARTING_RPC,
                            f"node restarted ({node_pod.marker}); restarting the RPC",
                            True, False, False, POLL_SECONDS)
        return _Outcome("RollingRpc", REASON_ROLLING_RPC,
                        f"node Ready on configuration {desired}; rolling the RPC",
                        True, False, False, POLL_SECONDS)
    return _Outcome("Idle", REASON_COMPLETE, f"node and RPC on configuration {desired}",
                    False, False, True, None)


def decide(snap: RolloutSnapshot) -> RolloutDecision:
    """The next step of the coordinated rollout (see the module docstring for the rules).

    ``startedAt`` is set when a rollout starts (leaving Idle, or a new target hash: coalesced changes restart
    the clock) and kept while it runs and once Idle again, so a steady state rewrites nothing.
    """
    prev = snap.status
    desired = snap.desired_hash
    new_target = prev.target_hash != desired
    fresh_start = new_target or prev.started_at is None or prev.phase in ("Idle", "Held")
    started_at = snap.now if fresh_start else prev.started_at
    assert started_at is not None
    holds = snap.holds
    node_hash = desired
    frozen = holds.freeze_node or holds.stop_rpc or holds.stop_node
    if frozen and snap.node is not None and snap.node.template_hash:
        node_hash = snap.node.template_hash
    write_node = snap.node is None or snap.node.template_hash != node_hash
    rpc, write_rpc = _rpc_target(snap)
    outcome = _outcome(snap, rpc, write_rpc, started_at)
    if outcome.phase == "Idle" and not new_target and prev.started_at is not None:
        started_at = prev.started_at
    status = RolloutStatus(
        phase=outcome.phase,
        target_hash=desired,
        node_hash=node_hash,
        rpc_hash=rpc.config_hash if rpc is not None else None,
        node_restart_marker=rpc.node_restart_marker if rpc is not None else None,
        started_at=started_at,
        message=outcome.message,
    )
    return RolloutDecision(
        node_hash=node_hash,
        write_node=write_node,
        rpc=rpc,
        write_rpc=write_rpc,
        status=status,
        status_changed=status.to_wire() != prev.to_wire(),
        reason=outcome.reason,
        message=outcome.message,
        progressing=outcome.progressing,
        degraded=outcome.degraded,
        ready=outcome.ready,
        requeue_after=outcome.requeue_after,
        node_replicas=_node_replicas(snap),
        rpc_replicas=_rpc_replicas(snap),
    )
