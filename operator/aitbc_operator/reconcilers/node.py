"""Reconcile one AitbcNode: gather the world, let the rollout decide, apply children, write status.

Before the first write every child name is checked: one held by an object this AitbcNode does not own (made by hand,
another resource's) stops the reconcile with NameConflict naming it and its owner, and nothing is written.
Order of writes: PVC, node ConfigMap and Services, then the node StatefulSet with the desired hash; the RPC's
ConfigMap and Deployment only as the rollout decision allows (see aitbc_operator.rollout). Every write is skipped
when the live object already matches, and status is patched only when it changed, so a steady node costs reads only.
A pod or controller that cannot run the workloads (workload_health.py) makes the AitbcNode Degraded at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from .. import conditions, errors, metrics, node_policy
from ..builders import node as b
from ..builders.database import CA_KEY
from ..builders.node_config import ANNOTATION_RPC_RESTARTS
from ..chain_health import RPC_STALE, HealthDecision, HealthInput, decide_health
from ..chainops import JobState, OpsDecision, decide_ops
from ..chainpaths import sqlite_url
from ..k8s import resources as r
from ..k8s.client import Kube, Obj
from ..k8s.ownership import ownership_conflict
from ..models.base import ConditionStatus
from ..models.chainops import HealthStatus
from ..models.database import AitbcDatabaseSpec
from ..models.node import AitbcNodeSpec, AitbcNodeStatus, ChainStatus
from ..models.volume_report import VolumeReport
from ..node_policy import NodePolicy
from ..rollout import (
    POLL_SECONDS,
    NodeObservation,
    RolloutDecision,
    RolloutSnapshot,
    RpcObservation,
    RpcTarget,
    decide,
    observe_node,
    observe_rpc,
)
from ..volume_expansion import (
    VOLUME_EXPANDED,
    VOLUME_EXPANSION_WARNING,
    ExpansionDecision,
    ExpansionInput,
    decide_expansion,
)
from ..workload_health import WorkloadProblem, node_pod_missing, workload_problem
from . import node_ops
from .common import record_failure, validate_spec
from .rpc_probe import Height, head_heights

log = logging.getLogger(__name__)

STORAGE_READY = "StorageReady"
#: Warning Event: env entries of the spec that the operator's own values replace (the CRD refuses them today; a spec
#: stored before that rule, or under an older CRD, still has them).
REASON_RESERVED_ENV = "ReservedEnvIgnored"
NODE_READY = "NodeReady"
RPC_READY = "RpcReady"
#: Seconds after which the health sidecar's last answer no longer counts (RpcStale and ChainHealthWarning Unknown).
HEALTH_MAX_AGE = 120.0


@dataclass
class NodeOutcome:
    """What a reconcile did (for handlers, events and tests)."""

    requeue_after: float | None
    phase: str = "Idle"
    written: list[str] = field(default_factory=list)
    status_written: bool = False
    status: AitbcNodeStatus | None = None
    """The status written (or found current)."""
    events: list[tuple[str, str, bool]] = field(default_factory=list)  # (reason, message, warning)


def parse_spec(body: Mapping[str, Any], policy: NodePolicy) -> AitbcNodeSpec:
    """The validated spec, or InvalidSpec naming the fields and the rules they break.

    The CRD should have refused a bad spec already, and the admission policy one the operator's node policy refuses;
    this is the same check where the policy is not installed (or was changed after the object was admitted).
    """
    spec = validate_spec(AitbcNodeSpec, body)
    problems = b.owner_name_problems(body["metadata"]["name"])
    if problems:
        raise errors.InvalidSpec("; ".join(problems))
    refused = node_policy.violations(spec, policy)
    if refused:
        raise errors.InvalidSpec("refused by the operator's node policy: " + "; ".join(map(str, refused)))
    return spec


async def resolve_mempool(kube: Kube, namespace: str, spec: AitbcNodeSpec) -> b.MempoolDatabase | None:
    """The referenced AitbcDatabase's Secret, when the mempool uses PostgreSQL."""
    ref = spec.mempool.database_ref
    if ref is None:
        return None
    db = await kube.get(r.AITBC_DATABASE, namespace, ref.name)
    if db is None:
        raise errors.NotFound(f"mempool.databaseRef: AitbcDatabase {ref.name} not found", reason="DatabaseNotFound")
    secret_name = (db.get("status") or {}).get("secretName")
    if not secret_name:
        try:
            secret_name = AitbcDatabaseSpec.model_validate(db.get("spec") or {}).secret_name(ref.name)
        except ValidationError:
            raise errors.NotFound(
                f"mempool.databaseRef: AitbcDatabase {ref.name} has an invalid spec", reason="DatabaseNotReady"
            ) from None
    return b.MempoolDatabase(secret_name=secret_name)


def volume_report(pod: Mapping[str, Any] | None) -> VolumeReport | None:
    """The init container's report, from its termination message (current or last state)."""
    if not pod:
        return None
    for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if status.get("name") != b.INIT_CONTAINER:
            continue
        for state_key in ("state", "lastState"):
            message = ((status.get(state_key) or {}).get("terminated") or {}).get("message")
            if message:
                try:
                    return VolumeReport.model_validate(json.loads(message))
                except (ValueError, ValidationError):
                    log.warning("unparseable volume report in %s", pod["metadata"].get("name"))
    return None


def rpc_base_url(service: Mapping[str, Any] | None, port: int) -> str | None:
    """``http://<ClusterIP>:<port>`` of the RPC Service: by address, so no cluster DNS is needed (the operator may run
    in a pod of a cluster without DNS, or outside it on a host where kube-proxy routes Service IPs)."""
    ip = ((service or {}).get("spec") or {}).get("clusterIP")
    if not ip or ip == "None":
        return None
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}"


def _storage_condition(report: VolumeReport | None) -> tuple[ConditionStatus, str, str]:
    if report is None:
        return "Unknown", "NoReport", "the volume-preparation init container has not reported yet"
    if not report.ok:
        return "False", "PreparationFailed", report.error or "volume preparation failed"
    detail = f"{report.fs}, NOCOW {report.nocow}"
    return "True", "Prepared", detail


async def reconcile_node(
    kube: Kube,
    body: Mapping[str, Any],
    *,
    operator_image: str,
    now: datetime,
    policy: NodePolicy,
    probe_heights: bool = False,
) -> NodeOutcome:
    """One level-based reconcile of an AitbcNode; raises the operator's errors after recording them in status."""
    meta = body["metadata"]
    namespace = meta["namespace"]
    status = AitbcNodeStatus.model_validate(body.get("status") or {})
    try:
        spec = parse_spec(body, policy)
        mempool = await resolve_mempool(kube, namespace, spec)
        return await _converge(
            kube, body, spec, status, mempool, operator_image=operator_image, now=now,
            probe_heights=probe_heights,
        )
    except errors.OperatorError as exc:
        await record_failure(kube, r.AITBC_NODE, body, status.model_copy(deep=True), exc, now=now)
        raise


@dataclass
class _Observed:
    """What one reconcile read before deciding."""

    secrets: dict[str, Mapping[str, str] | None]
    statefulset: Obj | None
    pod: Obj | None
    deployment: Obj | None
    rpc_service: Obj | None
    pvc: Obj | None
    """The chain volume claim (pvc storage), read before deciding: its live request is never shrunk back."""


async def _observe(kube: Kube, namespace: str, names: b.NodeNames, spec: AitbcNodeSpec,
                   mempool: b.MempoolDatabase | None) -> _Observed:
    secrets: dict[str, Mapping[str, str] | None] = {}
    for secret_name in b.referenced_secret_names(spec, mempool):
        secret = await kube.get(r.SECRET, namespace, secret_name)
        secrets[secret_name] = None if secret is None else (secret.get("data") or {})
    if mempool is not None and secrets.get(mempool.secret_name) is None:
        raise errors.NotFound(
            f"Secret {mempool.secret_name} of the mempool database is not there yet", reason="DatabaseNotReady"
        )
    return _Observed(
        secrets=secrets,
        statefulset=await kube.get(r.STATEFULSET, namespace, names.statefulset),
        pod=await kube.get(r.POD, namespace, names.node_pod),
        deployment=await kube.get(r.DEPLOYMENT, namespace, names.deployment),
        rpc_service=await kube.get(r.SERVICE, namespace, names.rpc_service),
        pvc=await kube.get(r.PVC, namespace, names.pvc) if spec.storage.pvc is not None else None,
    )


def _key(manifest: Mapping[str, Any]) -> tuple[str, str]:
    return str(manifest["kind"]), str(manifest["metadata"]["name"])


async def _live_children(kube: Kube, namespace: str, children: b.NodeChildren,
                         seen: _Observed) -> dict[tuple[str, str], Obj | None]:
    """The live object of every child (None: absent); the workloads were read already."""
    live: dict[tuple[str, str], Obj | None] = {
        _key(children.statefulset): seen.statefulset, _key(children.deployment): seen.deployment,
        _key(children.rpc_service): seen.rpc_service,
    }
    if children.pvc is not None:
        live[_key(children.pvc)] = seen.pvc
    for manifest in children.in_apply_order():
        if _key(manifest) not in live:
            live[_key(manifest)] = await kube.get(r.kind_of(manifest), namespace, manifest["metadata"]["name"])
    return live


def _refuse_foreign(children: b.NodeChildren, live: Mapping[tuple[str, str], Obj | None]) -> None:
    """NameConflict naming every child whose name is held by an object this AitbcNode does not own (before any
    write, so nothing is half-made)."""
    conflicts = [c for m in children.in_apply_order() if (c := ownership_conflict(m, live[_key(m)])) is not None]
    if conflicts:
        raise errors.NameConflict("; ".join(conflicts))


async def _workload_problem(kube: Kube, namespace: str, seen: _Observed,
                            rpc: RpcObservation | None) -> WorkloadProblem | None:
    """Why node or RPC cannot run; Events and RPC pods are read only when something is missing or unavailable."""
    events: list[Obj] = []
    if node_pod_missing(seen.statefulset, seen.pod) and seen.statefulset is not None:
        name = seen.statefulset["metadata"]["name"]
        events = await kube.list(r.EVENT, namespace,
                                 field_selector=f"involvedObject.kind=StatefulSet,involvedObject.name={name}")
    rpc_pods: list[Obj] = []
    if rpc is not None and seen.deployment is not None and not (rpc.rollout_complete and rpc.available_replicas):
        selector = seen.deployment["spec"]["selector"]["matchLabels"]
        rpc_pods = await kube.list(r.POD, namespace, label_selector=",".join(f"{k}={v}" for k, v in selector.items()))
    return workload_problem(statefulset=seen.statefulset, node_pod=seen.pod, statefulset_events=events,
                            deployment=seen.deployment, rpc_pods=rpc_pods)


@dataclass
class _Day2:
    """The day-2 decisions of one reconcile."""

    ops: OpsDecision
    health: HealthDecision
    jobs: Mapping[str, JobState]
    expansion: ExpansionDecision | None
    """The chain volume claim's request (pvc storage)."""


async def _decide_day2(kube: Kube, body: Mapping[str, Any], spec: AitbcNodeSpec, status: AitbcNodeStatus,
                       seen: _Observed, desired_hash: str, now: datetime, probe: bool) -> _Day2:
    """Backups, restores, maintenance windows (chainops) and chain health (chain_health): read, then decide."""
    namespace, owner = body["metadata"]["namespace"], body["metadata"]["name"]
    node_obs, rpc_obs = observe_node(seen.statefulset, seen.pod), observe_rpc(seen.deployment)
    jobs = await node_ops.read_jobs(kube, namespace, owner, status)
    facts = await node_ops.workloads(kube, namespace, spec, node_ops.Seen(seen.statefulset, seen.pod, seen.deployment),
                                     node_obs, rpc_obs, status.rollout.phase)
    migration = node_ops.migration_target(seen.statefulset, spec, desired_hash)
    ops = decide_ops(node_ops.snapshot(body, spec, status, jobs, facts, migration, now))
    base_url = rpc_base_url(seen.rpc_service, spec.rpc.port)
    chains = await _chains(spec, status, probe=probe and _rpc_ready(rpc_obs), base_url=base_url)
    report = await node_ops.health_report(seen.pod, spec) if probe else None
    live_restarts = int((((seen.deployment or {}).get("spec") or {}).get("template", {}).get("metadata", {})
                         .get("annotations") or {}).get(ANNOTATION_RPC_RESTARTS, 0) or 0)
    may_restart = (status.rollout.phase == "Idle" and not ops.holds.active and facts.rpc_available
                   and facts.node_ready)
    health = decide_health(HealthInput(spec=spec.health, chains=chains, report=report,
                                       status=status.health or HealthStatus(), live_restarts=live_restarts,
                                       may_restart=may_restart, now=now, max_age=HEALTH_MAX_AGE))
    expansion = None
    if spec.storage.pvc is not None:
        claim = await node_ops.read_claim(kube, body, spec, seen.pvc)
        expansion = decide_expansion(ExpansionInput(spec=spec.storage.pvc, claim=claim, report=report,
                                                    last=status.volume_expansion, now=now))
    return _Day2(ops, health, jobs, expansion)


async def _converge(
    kube: Kube,
    body: Mapping[str, Any],
    spec: AitbcNodeSpec,
    status: AitbcNodeStatus,
    mempool: b.MempoolDatabase | None,
    *,
    operator_image: str,
    now: datetime,
    probe_heights: bool,
) -> NodeOutcome:
    meta = body["metadata"]
    namespace = meta["namespace"]
    outcome = NodeOutcome(requeue_after=None)

    # --- gather -------------------------------------------------------------------------------------------------------
    seen = await _observe(kube, namespace, b.names_of(body), spec, mempool)
    if mempool is not None and CA_KEY in (seen.secrets.get(mempool.secret_name) or {}):
        mempool = dataclasses.replace(mempool, ca=True)
    desired_hash = b.config_hash(spec, b.node_environment(spec), seen.secrets, mempool=mempool)
    node_obs, rpc_obs = observe_node(seen.statefulset, seen.pod), observe_rpc(seen.deployment)

    # --- decide -------------------------------------------------------------------------------------------------------
    day2 = await _decide_day2(kube, body, spec, status, seen, desired_hash, now, probe_heights)
    decision = decide(
        RolloutSnapshot(
            desired_hash=desired_hash,
            status=status.rollout,
            node=node_obs,
            rpc=rpc_obs,
            timeout=float(b.rollout_timeout_seconds(spec)),
            now=now,
            holds=day2.ops.holds,
        )
    )
    rpc_target = decision.rpc or RpcTarget(desired_hash, "")  # without a target the RPC's manifest is only checked
    children = b.node_children(
        body, spec, node_hash=decision.node_hash, rpc_hash=rpc_target.config_hash,
        node_restart_marker=rpc_target.node_restart_marker, operator_image=operator_image, mempool=mempool,
        node_replicas=decision.node_replicas, rpc_replicas=decision.rpc_replicas,
        rpc_restarts=day2.health.rpc_restarts,
        pvc_request=day2.expansion.request if day2.expansion else None,
    )
    live = await _live_children(kube, namespace, children, seen)
    _refuse_foreign(children, live)

    # --- act ----------------------------------------------------------------------------------------------------------
    outcome.written += await _write_children(kube, children, live, decision, desired_hash, seen)
    if day2.expansion is not None and day2.expansion.expanded:
        metrics.VOLUME_EXPANSIONS.inc()
    if day2.ops.create is not None:
        refused = await node_ops.create_job(kube, body, spec, day2.ops.create, day2.jobs,
                                            operator_image=operator_image)
        if refused:
            outcome.events.append(("JobNameConflict", refused, True))
    outcome.events += _events(status, decision, day2)
    shadowed = b.shadowed_env_names(spec, mempool)
    if shadowed and status.observed_generation != meta.get("generation"):
        outcome.events.append((REASON_RESERVED_ENV, reserved_env_message(shadowed), True))

    # --- status -------------------------------------------------------------------------------------------------------
    problem = await _workload_problem(kube, namespace, seen, rpc_obs)
    if problem is None and day2.ops.degraded is not None:
        problem = WorkloadProblem(*day2.ops.degraded)
    new = _status(body, status, decision, problem, seen.pod, node_obs, rpc_obs, now=now)
    _day2_status(new, day2, now=now, generation=meta.get("generation"))
    outcome.status_written = await kube.patch_status(r.AITBC_NODE, body, new.to_wire())
    hints = [h for h in (decision.requeue_after, day2.ops.requeue_after) if h is not None]
    outcome.requeue_after = min(hints) if hints else None
    if problem is not None:
        outcome.requeue_after = min(outcome.requeue_after or POLL_SECONDS, POLL_SECONDS)
    outcome.phase = decision.status.phase
    outcome.status = new
    return outcome


async def _write_children(kube: Kube, children: b.NodeChildren, live: Mapping[tuple[str, str], Obj | None],
                          decision: RolloutDecision, desired_hash: str, seen: _Observed) -> list[str]:
    """Apply what the rollout decision allows; what it does not is still scaled as the holds say. The writes made."""
    written: list[str] = []
    # A hold that freezes the node (a migration waiting for its backup) keeps its StatefulSet and ConfigMap exactly as
    # they are: rebuilt from the current spec they would carry the new configuration under the old hash.
    node_frozen = decision.node_hash != desired_hash
    writes = [children.pvc, children.backup_pvc, children.node_service, children.rpc_service]
    if not node_frozen:
        writes += [children.node_configmap, children.statefulset]
    rpc_current = decision.rpc is not None and decision.rpc_config_current
    if rpc_current:
        # Only onto the desired hash: an RPC left on an older one keeps its Deployment untouched (see the property).
        writes += [children.rpc_configmap, children.deployment]
    for manifest in writes:
        if manifest is not None and (await kube.apply_if_changed(manifest, live[_key(manifest)]))[1]:
            written.append("/".join(_key(manifest)))
    # Replicas alone (a merge patch of that field), the template untouched.
    if node_frozen and await kube.scale(r.STATEFULSET, seen.statefulset, decision.node_replicas):
        written.append("StatefulSet/replicas")
    if not rpc_current and await kube.scale(r.DEPLOYMENT, seen.deployment, decision.rpc_replicas):
        written.append("Deployment/replicas")
    return written


def _events(status: AitbcNodeStatus, decision: RolloutDecision, day2: _Day2) -> list[tuple[str, str, bool]]:
    """The rollout's RPC restart, the day-2 Events, and RpcStale once per stale episode (or restart)."""
    events: list[tuple[str, str, bool]] = []
    restarted = (
        decision.write_rpc
        and decision.rpc is not None
        and status.rollout.node_restart_marker is not None
        and decision.rpc.node_restart_marker != status.rollout.node_restart_marker
    )
    if restarted:
        events.append(("RestartingRpc", "the node restarted: restarting the RPC after it", False))
    events += day2.ops.events
    was_stale = any(c.type == RPC_STALE and c.status == "True" for c in status.conditions)
    restarting = day2.health.rpc_restarts > (status.health.rpc_restarts if status.health else 0)
    events += [e for e in day2.health.events if restarting or not was_stale]
    return events + _expansion_events(status, day2.expansion)


def _expansion_events(status: AitbcNodeStatus, expansion: ExpansionDecision | None) -> list[tuple[str, str, bool]]:
    """VolumeExpanded; a Warning when VolumeExpansionWarning turns True or changes its reason."""
    if expansion is None or expansion.condition is None:
        return []
    cond_status, reason, message = expansion.condition
    if expansion.expanded:
        return [(VOLUME_EXPANDED, message, False)]
    before = next((c for c in status.conditions if c.type == VOLUME_EXPANSION_WARNING), None)
    if cond_status == "True" and (before is None or before.status != "True" or before.reason != reason):
        return [(reason, message, True)]
    return []


def _day2_status(new: AitbcNodeStatus, day2: _Day2, *, now: datetime, generation: int | None) -> None:
    """Backup, restore, maintenance, health and chains into the new status, with the health conditions."""
    new.backup, new.restore, new.maintenance = day2.ops.backup, day2.ops.restore, day2.ops.maintenance
    new.health = day2.health.status
    new.chains = day2.health.chains
    for type_, cond_status, reason, message in day2.health.conditions:
        new.conditions = conditions.set_condition(new.conditions, type_, cond_status, reason,  # type: ignore[arg-type]
                                                  message, now=now, generation=generation)
    if day2.expansion is not None:
        new.volume_expansion = day2.expansion.status
        if day2.expansion.condition is not None:
            new.conditions = conditions.set_condition(new.conditions, VOLUME_EXPANSION_WARNING,
                                                      *day2.expansion.condition, now=now, generation=generation)


def reserved_env_message(names: list[str]) -> str:
    """The Warning Event for env entries the operator's own values replace."""
    return (f"env {', '.join(names)} ignored: the operator sets these itself (DATA_DIR, the chain URLs, ...);"
            " remove them from spec.node.env / spec.rpc.env")


def _rpc_ready(rpc: RpcObservation | None) -> bool:
    return bool(rpc and rpc.available_replicas > 0)


def _status(
    body: Mapping[str, Any],
    status: AitbcNodeStatus,
    decision: RolloutDecision,
    problem: WorkloadProblem | None,
    pod: Obj | None,
    node_obs: NodeObservation | None,
    rpc_obs: RpcObservation | None,
    *,
    now: datetime,
) -> AitbcNodeStatus:
    """The new status: rollout, volume report and conditions (a workload problem makes it Degraded at once)."""
    names = b.names_of(body)
    gen = body["metadata"].get("generation")
    new = status.model_copy(deep=True)
    new.observed_generation = gen
    new.rollout = decision.status
    new.config_hash = decision.status.rpc_hash if decision.ready else status.config_hash
    report = volume_report(pod)
    if report is not None:
        new.volume = report
    reason, message = (problem.reason, problem.message) if problem else (decision.reason, decision.message)
    conds = conditions.summary(
        status.conditions, ready=decision.ready and problem is None, progressing=decision.progressing,
        degraded=decision.degraded or problem is not None, reason=reason, message=message, now=now, generation=gen,
    )
    storage_status, storage_reason, storage_message = _storage_condition(new.volume)
    conds = conditions.set_condition(
        conds, STORAGE_READY, storage_status, storage_reason, storage_message, now=now, generation=gen
    )
    node_ready = bool(node_obs and node_obs.pod and node_obs.pod.ready)
    conds = conditions.set_condition(
        conds, NODE_READY, "True" if node_ready else "False", "PodReady" if node_ready else "PodNotReady",
        f"pod {names.node_pod} {'is' if node_ready else 'is not'} Ready", now=now, generation=gen,
    )
    rpc_ready = _rpc_ready(rpc_obs)
    conds = conditions.set_condition(
        conds, RPC_READY, "True" if rpc_ready else "False",
        "Available" if rpc_ready else ("NotCreated" if rpc_obs is None else "Unavailable"),
        f"Deployment {names.deployment} {'is available' if rpc_ready else 'is not available'}",
        now=now, generation=gen,
    )
    new.conditions = conds
    return new


async def _chains(
    spec: AitbcNodeSpec, status: AitbcNodeStatus, *, probe: bool, base_url: str | None
) -> list[ChainStatus]:
    previous = {c.chain_id: c for c in status.chains}
    heights: dict[str, Height] = {}
    if probe and base_url:
        heights = await head_heights(base_url, list(spec.chains))
    out = []
    for chain in spec.chains:
        old = previous.get(chain) or ChainStatus(chain_id=chain)
        h = heights.get(chain)
        fresh: dict[str, object] = {"database_url": sqlite_url(spec.data_dir, chain)}
        if h is not None:
            fresh |= {"height": h.height, "height_error": h.error}
        out.append(old.model_copy(update=fresh))  # the sidecar's figures and staleSince carry over
    return out
