"""The AitbcNode's day-2 side of a reconcile: read what the deciders need (Jobs and their reports, workload facts,
the health sidecar), and create the Job a decision asks for. The decisions themselves are pure: chainops.py,
chain_health.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from .. import errors
from ..builders import node as b
from ..builders import node_jobs
from ..builders.common import LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_OWNER, MANAGED_BY
from ..builders.node_config import ANNOTATION_CONFIG_HASH
from ..builders.node_jobs import JobRequest
from ..builders.node_workloads import NODE_CONTAINER
from ..chainops import JobState, OpsSnapshot, Workloads
from ..k8s import resources as r
from ..k8s.client import Kube, Obj
from ..k8s.ownership import ownership_conflict
from ..models.chain_reports import ChainHealthReport
from ..models.chainops import BackupStatus, MaintenanceStatus
from ..models.node import ENV_MEMPOOL_DB_URL, AitbcNodeSpec, AitbcNodeStatus
from ..rollout import NodeObservation, RpcObservation
from ..volume_expansion import Claim
from .common import job_pods
from .rpc_probe import get_json

log = logging.getLogger(__name__)
#: The sidecar reads every chain database per request: on a busy host that takes longer than an RPC head lookup.
HEALTH_TIMEOUT_SECONDS = 4.0


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or []
                 if c.get("type") == kind and c.get("status") == "True"), None)


def termination_message(pod: Mapping[str, Any], container: str) -> str | None:
    """The termination message of a container that ended (current or last state)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != container:
            continue
        for key in ("state", "lastState"):
            message = ((status.get(key) or {}).get("terminated") or {}).get("message")
            if message:
                return str(message)
    return None


async def _job_state(kube: Kube, namespace: str, job: Obj, wanted: set[str]) -> JobState:
    name = job["metadata"]["name"]
    failed, complete = _condition(job, "Failed"), _condition(job, "Complete")
    state = JobState(name=name, finished=bool(failed or complete), succeeded=complete is not None,
                     reason=str(failed.get("reason")) if failed else None)
    if not state.finished or name not in wanted:
        return state
    pods = await job_pods(kube, namespace, job)
    report = next((m for p in pods if (m := termination_message(p, node_jobs.JOB_CONTAINER))), None)
    return JobState(name=name, finished=True, succeeded=state.succeeded, reason=state.reason, report=report)


async def read_jobs(kube: Kube, namespace: str, owner: str, status: AitbcNodeStatus) -> dict[str, JobState]:
    """The AitbcNode's day-2 Jobs (not someone else's: our labels and a controller reference to it), with the
    report of those status is waiting for."""
    wanted = {n for n in ((status.backup.running.job if status.backup and status.backup.running else None),
                          status.restore.job if status.restore else None,
                          status.maintenance.window.job if status.maintenance and status.maintenance.window
                          else None) if n}
    selector = f"{LABEL_OWNER}={owner},{LABEL_MANAGED_BY}={MANAGED_BY}"
    jobs = await kube.list(r.JOB, namespace, label_selector=selector)
    ours = [j for j in jobs if (j["metadata"].get("labels") or {}).get(LABEL_COMPONENT) in node_jobs.JOB_COMPONENTS]
    return {j["metadata"]["name"]: await _job_state(kube, namespace, j, wanted) for j in ours}


def migration_target(statefulset: Obj | None, spec: AitbcNodeSpec, desired_hash: str) -> str | None:
    """The desired hash when it moves the mempool between SQLite and PostgreSQL (the node's template has
    MEMPOOL_DB_URL and the spec no databaseRef, or the other way round); None otherwise (or for a new node, or with
    backup.beforeMigration off)."""
    if statefulset is None or (spec.backup is not None and not spec.backup.before_migration):
        return None
    template = statefulset["spec"]["template"]
    hash_now = (template["metadata"].get("annotations") or {}).get(ANNOTATION_CONFIG_HASH)
    container: Mapping[str, Any] = next(
        (c for c in template["spec"].get("containers") or [] if c.get("name") == NODE_CONTAINER), {})
    has_mempool = any(e.get("name") == ENV_MEMPOOL_DB_URL for e in container.get("env") or [])
    if hash_now == desired_hash or has_mempool == (spec.mempool.database_ref is not None):
        return None
    return desired_hash


@dataclass(frozen=True)
class Seen:
    """The workloads as read by the node reconciler."""

    statefulset: Obj | None
    pod: Obj | None
    deployment: Obj | None


async def workloads(kube: Kube, namespace: str, spec: AitbcNodeSpec, seen: Seen, node: NodeObservation | None,
                    rpc: RpcObservation | None, rollout_phase: str) -> Workloads:
    """The facts the phases wait for (RPC pods are listed only while the RPC is scaled to 0)."""
    rpc_pods: list[Obj] = []
    if rpc is not None and rpc.replicas == 0 and seen.deployment is not None:
        selector = seen.deployment["spec"]["selector"]["matchLabels"]
        rpc_pods = await kube.list(r.POD, namespace, label_selector=",".join(f"{k}={v}" for k, v in selector.items()))
    pod = node.pod if node is not None else None
    host = spec.storage.host_path.node_name if spec.storage.host_path else (
        ((seen.pod or {}).get("spec") or {}).get("nodeName"))
    return Workloads(
        rpc_stopped=rpc is None or (rpc.replicas == 0 and rpc.total_replicas == 0 and not rpc_pods),
        node_stopped=node is not None and node.replicas == 0 and seen.pod is None,
        node_ready=pod is not None and pod.ready and not pod.terminating,
        rpc_available=rpc is not None and rpc.replicas >= 1 and rpc.rollout_complete and rpc.available_replicas >= 1,
        node_host=host,
        rollout_idle=rollout_phase in ("Idle", "Held"),
    )


def snapshot(body: Mapping[str, Any], spec: AitbcNodeSpec, status: AitbcNodeStatus, jobs: Mapping[str, JobState],
             facts: Workloads, migration: str | None, now: datetime) -> OpsSnapshot:
    """The chainops snapshot of one reconcile."""
    return OpsSnapshot(
        owner=body["metadata"]["name"], spec=spec, backup=status.backup or BackupStatus(), restore=status.restore,
        maintenance=status.maintenance or MaintenanceStatus(), jobs=jobs, workloads=facts,
        annotations=body["metadata"].get("annotations") or {}, migration_target=migration, now=now,
    )


async def create_job(kube: Kube, owner: Mapping[str, Any], spec: AitbcNodeSpec, request: JobRequest,
                     jobs: Mapping[str, JobState], *, operator_image: str) -> str | None:
    """Create the Job unless it is among the AitbcNode's Jobs already (a Job is never applied again: its template is
    immutable). A name taken by a Job that is not the AitbcNode's is refused by the apiserver (AlreadyExists) and
    left alone; the returned message becomes a Warning Event (the decider, seeing no Job of ours, asks again)."""
    if request.name in jobs:
        return None
    try:
        await kube.create(node_jobs.day2_job(owner, spec, request, operator_image=operator_image))
    except errors.ApiConflict:
        return (f"Job {request.name} already exists and was not made by AitbcNode {owner['metadata']['name']}:"
                " refusing to take it over; the run waits until the name is free")
    return None


async def health_report(pod: Obj | None, spec: AitbcNodeSpec) -> ChainHealthReport | None:
    """The sidecar's GET /chains, by the node pod's IP (no cluster DNS needed); None when it does not answer."""
    ip = ((pod or {}).get("status") or {}).get("podIP")
    if not spec.health.enabled or not ip:
        return None
    host = f"[{ip}]" if ":" in ip else ip
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            payload, error = await get_json(f"http://{host}:{spec.health.port}/chains", 262144)
    except TimeoutError:
        payload, error = None, "timeout"
    if error is not None:
        log.debug("chain-health sidecar of %s: %s", (pod or {}).get("metadata", {}).get("name"), error)
        return None
    try:
        return ChainHealthReport.model_validate(payload)
    except ValidationError:
        return None



async def read_claim(kube: Kube, owner: Mapping[str, Any], spec: AitbcNodeSpec, live: Obj | None) -> Claim | None:
    """The chain volume claim as the expansion decider needs it, with its StorageClass; None when there is none, or
    when it is not this AitbcNode's (k8s/ownership.py): a claim the AitbcNode does not own is never expanded (the
    reconcile refuses it with NameConflict before any write). The StorageClass is read only with autoExpand."""
    desired = b.chain_pvc(owner, spec)
    if live is None or desired is None or ownership_conflict(desired, live) is not None:
        return None
    claim_spec, claim_status = live.get("spec") or {}, live.get("status") or {}
    class_name = claim_spec.get("storageClassName") or None
    storage_class = None
    if class_name and spec.storage.pvc is not None and spec.storage.pvc.auto_expand is not None:
        storage_class = await kube.get_storage_class(class_name)
    return Claim(
        name=live["metadata"]["name"],
        request=str(((claim_spec.get("resources") or {}).get("requests") or {}).get("storage", "0")),
        capacity=(claim_status.get("capacity") or {}).get("storage"),
        bound=claim_status.get("phase") == "Bound",
        conditions=frozenset(c.get("type") for c in claim_status.get("conditions") or [] if c.get("status") == "True"),
        storage_class=class_name,
        expandable=bool((storage_class or {}).get("allowVolumeExpansion")),
    )
