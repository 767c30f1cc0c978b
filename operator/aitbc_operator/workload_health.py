"""Why the node's or the RPC's pods cannot run, from what the API shows: a pure decision (no I/O, no clock).

The rollout (rollout.py) waits for readiness and reports a stall only after ``rolloutTimeout``; a pod that can never
start (a bad image, a missing Secret key, a crashing process, a failed volume preparation) or a controller that
cannot create it (admission refused the pod, a quota) is known at once. :func:`workload_problem` finds the first such
fact and words it as a condition reason (the kubelet's or controller's own reason) and message, so the AitbcNode goes
``Degraded`` within a reconcile, whatever the rollout phase.

Sources, in order: the node pod, its StatefulSet's Events (a StatefulSet has no ReplicaFailure condition: its
controller only posts ``FailedCreate`` Events), the RPC Deployment's ``ReplicaFailure`` condition (copied from its
ReplicaSet), the RPC pods.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .models.volume_report import VolumeReport

#: Waiting reasons of a container that will not get better by waiting (the kubelet's reasons).
STUCK_WAITING_REASONS = frozenset({
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError",
    "CreateContainerError", "CrashLoopBackOff", "RunContainerError",
})
REASON_INIT_FAILED = "InitContainerFailed"
REASON_POD_FAILED = "PodFailed"
REASON_FAILED_CREATE = "FailedCreate"
#: Longest piece of a kubelet/controller message quoted in a condition.
MAX_DETAIL = 400

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class WorkloadProblem:
    """A reason (CamelCase, as the kubelet or controller says it) and a message naming the object."""

    reason: str
    message: str


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


def _termination_detail(terminated: Obj) -> str:
    """Exit code, reason and message of a terminated container (a volume report's error, when it is one)."""
    message = str(terminated.get("message") or "")
    with contextlib.suppress(ValueError):  # not a volume report: the message as it is
        message = VolumeReport.model_validate(json.loads(message)).error or message
    parts = [f"exit code {terminated.get('exitCode')}"]
    if terminated.get("reason"):
        parts.append(str(terminated["reason"]))
    detail = ", ".join(parts)
    return f"{detail}: {_clip(message)}" if message else detail


def _container_problem(pod_name: str, status: Obj, *, init: bool) -> WorkloadProblem | None:
    what = f"pod {pod_name}: {'init container' if init else 'container'} {status.get('name')}"
    state = status.get("state") or {}
    waiting = state.get("waiting") or {}
    if waiting.get("reason") in STUCK_WAITING_REASONS:
        message = f"{what} {waiting['reason']}"
        if waiting.get("message"):
            message += f": {_clip(str(waiting['message']))}"
        last = (status.get("lastState") or {}).get("terminated")
        if last and last.get("exitCode"):
            message += f" (last run: {_termination_detail(last)})"
        return WorkloadProblem(str(waiting["reason"]), message)
    terminated = state.get("terminated") or {}
    if init and terminated and terminated.get("exitCode"):
        return WorkloadProblem(REASON_INIT_FAILED, f"{what} failed: {_termination_detail(terminated)}")
    return None


def pod_problem(pod: Obj | None) -> WorkloadProblem | None:
    """Why a (not terminating) pod cannot run: its first stuck or failed container, or the pod failed."""
    if not pod or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return None
    name = str((pod.get("metadata") or {}).get("name"))
    status = pod.get("status") or {}
    for key, init in (("initContainerStatuses", True), ("containerStatuses", False)):
        for container in status.get(key) or []:
            problem = _container_problem(name, container, init=init)
            if problem is not None:
                return problem
    if status.get("phase") == "Failed":
        detail = " ".join(str(status.get(k)) for k in ("reason", "message") if status.get(k))
        return WorkloadProblem(REASON_POD_FAILED, f"pod {name} failed" + (f": {_clip(detail)}" if detail else ""))
    return None


def _event_time(event: Obj) -> datetime:
    """When an Event last happened (legacy lastTimestamp, events.k8s.io series/eventTime, else its creation)."""
    stamp = (event.get("lastTimestamp") or (event.get("series") or {}).get("lastObservedTime")
             or event.get("eventTime") or (event.get("metadata") or {}).get("creationTimestamp") or "")
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) if stamp else datetime.min.replace(tzinfo=UTC)


def create_failure(kind: str, name: str, events: Iterable[Obj]) -> WorkloadProblem | None:
    """A controller's latest ``FailedCreate`` Event on ``kind/name``, unless a ``SuccessfulCreate`` came after it."""
    relevant = [e for e in events
                if (e.get("involvedObject") or {}).get("kind") == kind
                and (e.get("involvedObject") or {}).get("name") == name
                and e.get("reason") in (REASON_FAILED_CREATE, "SuccessfulCreate")]
    if not relevant:
        return None
    latest = max(relevant, key=_event_time)
    if latest.get("reason") != REASON_FAILED_CREATE:
        return None
    return WorkloadProblem(REASON_FAILED_CREATE, f"{kind} {name}: {_clip(str(latest.get('message') or ''))}")


def replica_failure(deployment: Obj | None) -> WorkloadProblem | None:
    """The Deployment's ``ReplicaFailure`` condition (e.g. FailedCreate: the ReplicaSet cannot create its pod)."""
    if not deployment:
        return None
    for cond in (deployment.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            name = (deployment.get("metadata") or {}).get("name")
            reason = str(cond.get("reason") or REASON_FAILED_CREATE)
            return WorkloadProblem(reason, f"Deployment {name}: {_clip(str(cond.get('message') or reason))}")
    return None


def node_pod_missing(statefulset: Obj | None, pod: Obj | None) -> bool:
    """The StatefulSet exists but its pod does not: the only time its Events are worth reading."""
    return statefulset is not None and pod is None


def workload_problem(
    *,
    statefulset: Obj | None,
    node_pod: Obj | None,
    statefulset_events: Sequence[Obj],
    deployment: Obj | None,
    rpc_pods: Sequence[Obj],
) -> WorkloadProblem | None:
    """The first reason the node or the RPC cannot run (see the module docstring), or None."""
    problem = pod_problem(node_pod)
    if problem is None and node_pod_missing(statefulset, node_pod):
        name = str(((statefulset or {}).get("metadata") or {}).get("name"))
        problem = create_failure("StatefulSet", name, statefulset_events)
    if problem is None:
        problem = replica_failure(deployment)
    if problem is None:
        problem = next((p for p in map(pod_problem, rpc_pods) if p is not None), None)
    return problem
