"""kopf handlers for AitbcNode: spec changes, child changes (pods, StatefulSets, Deployments, Jobs, Secrets), and
scheduled re-checks.

Every trigger runs the same level-based reconcile (reconcilers.node) under the object's lock, on a fresh read of the
AitbcNode. Child events make rollouts proceed as soon as the node pod turns Ready (a burst of them makes one
reconcile after the running one: ``object_lock``'s coalescing); the re-checks, from one operator-wide schedule
(handlers/schedule.py, not a kopf daemon per node), are the safety net: they come when the latest reconcile asked
(a rollout step, its timeout) and every poll interval otherwise (RPC head heights).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

import kopf

from .. import GROUP, VERSION, errors, metrics
from ..builders.common import LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_OWNER, MANAGED_BY
from ..builders.database import COMPONENT_DATABASE
from ..k8s import resources as r
from ..k8s.client import Kube
from ..reconcilers.node import NodeOutcome, reconcile_node
from ..settings import Settings
from .common import event, guarded, now, object_lock, shared_schedule
from .schedule import Schedule

log = logging.getLogger(__name__)
KIND = "AitbcNode"
PLURAL = "aitbcnodes"
_RECHECKS = "node-rechecks"
_MEMPOOL_USERS = "mempool-users"


class MempoolUsers:
    """Which AitbcNodes use which AitbcDatabase for their mempool, as their latest reconciles read them.

    A connection Secret's event looks its users up here instead of listing the namespace's AitbcNodes and reading the
    AitbcDatabase of each (N x M requests at a restart with N Secrets and M such nodes). Not a kopf index: kopf runs
    no handler until every index is filled, which stalls a restart with more objects than workers. A node is
    recorded before its reconcile reads the Secret, so a later change of the Secret always finds it; one not yet
    recorded (before its resume ran) reads the current Secret in that resume.
    """

    def __init__(self) -> None:
        self._by_node: dict[tuple[str, str], str] = {}
        self._by_database: dict[tuple[str, str], set[str]] = {}

    def record(self, namespace: str, node: str, body: Mapping[str, Any] | None) -> None:
        """The node's mempool database as its body names it (none for a deleted or deleting node)."""
        self.forget(namespace, node)
        spec = (body or {}).get("spec") or {}
        database = ((spec.get("mempool") or {}).get("databaseRef") or {}).get("name")
        if not database or body is None or body["metadata"].get("deletionTimestamp"):
            return
        self._by_node[(namespace, node)] = database
        self._by_database.setdefault((namespace, database), set()).add(node)

    def forget(self, namespace: str, node: str) -> None:
        database = self._by_node.pop((namespace, node), None)
        if database is None:
            return
        users = self._by_database[(namespace, database)]
        users.discard(node)
        if not users:
            del self._by_database[(namespace, database)]

    def users(self, namespace: str, database: str) -> list[str]:
        """The AitbcNodes whose mempool uses ``database``, in name order."""
        return sorted(self._by_database.get((namespace, database), ()))


def mempool_users(memo: MutableMapping[str, Any]) -> MempoolUsers:
    """The operator's map of mempool users (one per operator)."""
    users: MempoolUsers = memo.setdefault(_MEMPOOL_USERS, MempoolUsers())
    return users


def rechecks(memo: MutableMapping[str, Any]) -> Schedule:
    """The re-checks of every AitbcNode: one operator-wide schedule, every poll interval or sooner on request."""
    return shared_schedule(memo, _RECHECKS, lambda cfg: cfg.node_poll_interval)


def track_rechecks(memo: MutableMapping[str, Any], namespace: str, name: str) -> None:
    """Re-check the AitbcNode every poll interval (or as its reconciles ask), failing ones included, and run the
    schedule until the operator stops. Started from a handler's context, like the drift schedule: kopf posts Events
    only from there."""
    rechecks(memo).keep((namespace, name), lambda ns, n: recheck(memo, ns, n))


async def recheck(memo: MutableMapping[str, Any], namespace: str, name: str) -> None:
    """A scheduled re-check: reconcile, probing the RPC head heights."""
    try:
        await reconcile(memo, namespace, name, probe=True)
    except (kopf.TemporaryError, kopf.PermanentError, errors.OperatorError) as exc:
        log.info("AitbcNode %s/%s: %s", namespace, name, exc)


async def reconcile(memo: MutableMapping[str, Any], namespace: str, name: str, *, probe: bool = False,
                    coalesce: bool = False) -> None:
    """Reconcile one AitbcNode by name (fresh read, under its lock). Raises the operator's errors.

    ``coalesce``: not when another reconcile of it already waits (every one reads the node afresh): a child event's.
    """
    kube: Kube = memo["kube"]
    cfg: Settings = memo["settings"]
    async with object_lock(memo, KIND, namespace, name, coalesce=coalesce) as held:
        if not held:
            return
        body = await kube.get(r.AITBC_NODE, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            forget(memo, namespace, name)
            return
        mempool_users(memo).record(namespace, name, body)
        track_rechecks(memo, namespace, name)
        outcome: NodeOutcome = await guarded(
            KIND,
            lambda: reconcile_node(
                kube, body, operator_image=cfg.operator_image, now=now(), policy=cfg.node_policy, probe_heights=probe,
            ),
        )
        rechecks(memo).request((namespace, name), outcome.requeue_after)
        metrics.set_rollout_phase(namespace, name, outcome.phase)
        metrics.set_chain_figures(namespace, name, outcome.status)
        for reason, message, warning in outcome.events:
            event(body, reason, message, warning=warning)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def node_changed(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Spec (or metadata) changed, or the operator started: converge."""
    assert namespace is not None
    await reconcile(memo, namespace, name)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def node_event(type: str | None, namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """The AitbcNode is gone (its DELETED event: the operator puts no finalizer on it, so no delete handler would
    run). Its children go by garbage collection (a retained PVC and hostPath data stay); the operator forgets it."""
    if type != "DELETED" or namespace is None:
        return
    # Under the object's lock: a reconcile still running (it read the object before the deletion) would otherwise
    # set the series again after they were removed. Later ones find it gone and forget it too.
    async with object_lock(memo, KIND, namespace, name):
        forget(memo, namespace, name)


def forget(memo: MutableMapping[str, Any], namespace: str, name: str) -> None:
    """The AitbcNode is gone or going: no re-checks, no mempool use, no metrics series."""
    mempool_users(memo).forget(namespace, name)
    rechecks(memo).forget((namespace, name))
    metrics.set_rollout_phase(namespace, name, None)
    metrics.set_chain_figures(namespace, name, None)


@kopf.on.cleanup()
async def stop_rechecks(memo: kopf.Memo, **_: Any) -> None:
    """The operator stops: no re-check may act after it."""
    rechecks(memo).stop()


def listed(type: str | None) -> bool:
    """Whether a watch event is kopf's replay of the initial listing (``type`` None; also after a "410 Gone"), not a
    change: the owner's resume (or its re-check, after a 410) reads its children anyway. At a restart, acting on these
    reconciled every AitbcNode once per child (pod, StatefulSet, Deployment, Jobs) and per connection Secret."""
    return type is None


async def _from_child(memo: MutableMapping[str, Any], namespace: str | None, labels: dict[str, str],
                      type: str | None) -> None:
    owner = labels.get(LABEL_OWNER)
    if not namespace or not owner or "kube" not in memo or listed(type):
        return
    try:
        await reconcile(memo, namespace, owner, coalesce=True)
    except (kopf.TemporaryError, kopf.PermanentError, errors.OperatorError) as exc:
        log.info("AitbcNode %s/%s (child event): %s", namespace, owner, exc)


_CHILD_LABELS: dict[str, Any] = {LABEL_OWNER: kopf.PRESENT, LABEL_MANAGED_BY: MANAGED_BY}


@kopf.on.event("v1", "pods", labels={**_CHILD_LABELS, LABEL_COMPONENT: "node"})
async def node_pod_event(type: str | None, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo,
                        **_: Any) -> None:
    """The node pod changed (Ready, restarted, re-created): the rollout may proceed or the RPC must follow."""
    await _from_child(memo, namespace, dict(labels), type)


@kopf.on.event("apps", "v1", "statefulsets", labels=_CHILD_LABELS)
async def statefulset_event(type: str | None, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo,
                           **_: Any) -> None:
    """The node StatefulSet changed (revision, readiness, or someone edited it)."""
    await _from_child(memo, namespace, dict(labels), type)


@kopf.on.event("apps", "v1", "deployments", labels=_CHILD_LABELS)
async def deployment_event(type: str | None, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo,
                          **_: Any) -> None:
    """The RPC Deployment changed."""
    await _from_child(memo, namespace, dict(labels), type)


@kopf.on.event("batch", "v1", "jobs", labels=_CHILD_LABELS)
async def job_event(type: str | None, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo,
                   **_: Any) -> None:
    """A backup, restore or maintenance Job changed (finished): its result goes to status at once."""
    await _from_child(memo, namespace, dict(labels), type)


@kopf.on.event("v1", "secrets", labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: COMPONENT_DATABASE,
                                        LABEL_OWNER: kopf.PRESENT})
async def secret_event(type: str | None, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo,
                       **_: Any) -> None:
    """A connection Secret changed (e.g. password rotation): nodes whose mempool uses its AitbcDatabase roll, node
    first. The Secret's owner label names the AitbcDatabase (whatever the Secret's own name)."""
    if not namespace or "kube" not in memo or listed(type):
        return
    for node in mempool_users(memo).users(namespace, labels[LABEL_OWNER]):
        try:
            await reconcile(memo, namespace, node, coalesce=True)
        except (kopf.TemporaryError, kopf.PermanentError, errors.OperatorError) as exc:
            log.info("AitbcNode %s/%s (secret event): %s", namespace, node, exc)
