"""Reconcile one AitbcNode: gather the world, let the rollout decide, apply children, write status.

Order of writes: PVC, node ConfigMap and Services, then the node StatefulSet with the desired hash; the RPC's
ConfigMap and Deployment only as the rollout decision allows (see aitbc_operator.rollout). Every write is skipped
when the live object already matches, and status is patched only when it changed, so a steady node costs reads only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from .. import conditions, errors, node_policy
from ..builders import node as b
from ..chainpaths import sqlite_url
from ..k8s import resources as r
from ..k8s.client import Kube
from ..models.base import ConditionStatus
from ..models.database import AitbcDatabaseSpec
from ..models.node import AitbcNodeSpec, AitbcNodeStatus, ChainStatus
from ..models.volume_report import VolumeReport
from ..node_policy import NodePolicy
from ..rollout import RolloutSnapshot, decide, observe_node, observe_rpc
from .common import record_failure, validate_spec
from .rpc_probe import Height, head_heights

log = logging.getLogger(__name__)

STORAGE_READY = "StorageReady"
NODE_READY = "NodeReady"
RPC_READY = "RpcReady"


@dataclass
class NodeOutcome:
    """What a reconcile did (for handlers, events and tests)."""

    requeue_after: float | None
    phase: str = "Idle"
    written: list[str] = field(default_factory=list)
    status_written: bool = False
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
    rpc_base_url: str | None = None,
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
            probe_heights=probe_heights, rpc_base_url=rpc_base_url,
        )
    except errors.OperatorError as exc:
        await record_failure(kube, r.AITBC_NODE, body, status.model_copy(deep=True), exc, now=now)
        raise


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
    rpc_base_url: str | None,
) -> NodeOutcome:
    meta = body["metadata"]
    namespace = meta["namespace"]
    names = b.names_of(body)
    outcome = NodeOutcome(requeue_after=None)

    # --- gather -------------------------------------------------------------------------------------------------------
    secrets: dict[str, Mapping[str, str] | None] = {}
    for secret_name in b.referenced_secret_names(spec, mempool):
        secret = await kube.get(r.SECRET, namespace, secret_name)
        secrets[secret_name] = None if secret is None else (secret.get("data") or {})
    if mempool is not None and secrets.get(mempool.secret_name) is None:
        raise errors.NotFound(
            f"Secret {mempool.secret_name} of the mempool database is not there yet", reason="DatabaseNotReady"
        )
    node_cm = b.node_configmap(body, spec)
    desired_hash = b.config_hash(spec, node_cm["data"], secrets, mempool=mempool)
    sts = await kube.get(r.STATEFULSET, namespace, names.statefulset)
    pod = await kube.get(r.POD, namespace, names.node_pod)
    deployment = await kube.get(r.DEPLOYMENT, namespace, names.deployment)
    node_obs, rpc_obs = observe_node(sts, pod), observe_rpc(deployment)

    # --- decide -------------------------------------------------------------------------------------------------------
    decision = decide(
        RolloutSnapshot(
            desired_hash=desired_hash,
            status=status.rollout,
            node=node_obs,
            rpc=rpc_obs,
            timeout=float(b.rollout_timeout_seconds(spec)),
            now=now,
        )
    )

    # --- act ----------------------------------------------------------------------------------------------------------
    async def ensure(manifest: Mapping[str, Any] | None, live: Mapping[str, Any] | None = None,
                     *, fetch: bool = True) -> None:
        if manifest is None:
            return
        desired = dict(manifest)
        kind = r.kind_of(desired)
        current = live
        if current is None and fetch:
            current = await kube.get(kind, namespace, desired["metadata"]["name"])
        _, written = await kube.apply_if_changed(desired, dict(current) if current is not None else None)
        if written:
            outcome.written.append(f"{kind.kind}/{desired['metadata']['name']}")

    await ensure(b.chain_pvc(body, spec))
    await ensure(node_cm)
    await ensure(b.node_service(body, spec))
    await ensure(b.rpc_service(body, spec))
    await ensure(
        b.node_statefulset(body, spec, config_hash=decision.node_hash, operator_image=operator_image, mempool=mempool),
        sts, fetch=False,
    )
    if decision.rpc is not None and decision.rpc_config_current:
        # Only onto the desired hash: an RPC left on an older one keeps its Deployment untouched (see the property).
        await ensure(b.rpc_configmap(body, spec))
        await ensure(
            b.rpc_deployment(
                body, spec, config_hash=decision.rpc.config_hash,
                node_restart_marker=decision.rpc.node_restart_marker, mempool=mempool,
            ),
            deployment, fetch=False,
        )
    restarted = (
        decision.write_rpc
        and decision.rpc is not None
        and status.rollout.node_restart_marker is not None
        and decision.rpc.node_restart_marker != status.rollout.node_restart_marker
    )
    if restarted:
        outcome.events.append(("RestartingRpc", "the node restarted: restarting the RPC after it", False))

    # --- status -------------------------------------------------------------------------------------------------------
    new = status.model_copy(deep=True)
    new.observed_generation = meta.get("generation")
    new.rollout = decision.status
    new.config_hash = decision.status.rpc_hash if decision.ready else status.config_hash
    report = volume_report(pod)
    if report is not None:
        new.volume = report
    gen = meta.get("generation")
    conds = conditions.summary(
        status.conditions, ready=decision.ready, progressing=decision.progressing, degraded=decision.degraded,
        reason=decision.reason, message=decision.message, now=now, generation=gen,
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
    rpc_ready = bool(rpc_obs and rpc_obs.available_replicas > 0)
    conds = conditions.set_condition(
        conds, RPC_READY, "True" if rpc_ready else "False",
        "Available" if rpc_ready else ("NotCreated" if rpc_obs is None else "Unavailable"),
        f"Deployment {names.deployment} {'is available' if rpc_ready else 'is not available'}",
        now=now, generation=gen,
    )
    new.conditions = conds
    new.chains = await _chains(spec, status, probe=probe_heights and rpc_ready, base_url=rpc_base_url)
    outcome.status_written = await kube.patch_status(r.AITBC_NODE, body, new.to_wire())
    outcome.requeue_after = decision.requeue_after
    outcome.phase = decision.status.phase
    return outcome


async def _chains(
    spec: AitbcNodeSpec, status: AitbcNodeStatus, *, probe: bool, base_url: str | None
) -> list[ChainStatus]:
    previous = {c.chain_id: c for c in status.chains}
    heights: dict[str, Height] = {}
    if probe and base_url:
        heights = await head_heights(base_url, list(spec.chains))
    out = []
    for chain in spec.chains:
        old = previous.get(chain)
        h = heights.get(chain)
        out.append(
            ChainStatus(
                chain_id=chain,
                database_url=sqlite_url(spec.data_dir, chain),
                height=h.height if h else (old.height if old else None),
                height_error=h.error if h else (old.height_error if old else None),
            )
        )
    return out
