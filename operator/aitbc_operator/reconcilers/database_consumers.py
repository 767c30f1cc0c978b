"""The consumers of a connection Secret (``spec.consumers``): Deployments and StatefulSets rolled when it changes.

The Secret's canonical hash (builders/database.py ``secret_hash``) is stamped on each consumer's pod template as
``aitbc.io/secret-hash-<name>``. Every pass compares the template with the desired hash - nothing else, no timestamp
(Reloader's ``ObservedAt`` made every pass a change) - so a consumer is written once per Secret change, never when
nothing changed, and never because the operator restarted. The workloads are not owned and nothing else of them is
written (but their replicas during a restore that stops them). Pure decisions first, then the reads and writes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..k8s import resources as r
from ..k8s.client import Kube
from ..models.database import AitbcDatabaseSpec, ConsumerKind, ConsumerStatus

ANNOTATION_PREFIX = "aitbc.io/secret-hash-"
_KINDS = {ConsumerKind.DEPLOYMENT: r.DEPLOYMENT, ConsumerKind.STATEFULSET: r.STATEFULSET}


def annotation_key(resource: str) -> str:
    """The pod-template annotation of one AitbcDatabase (a name part of at most 63 characters)."""
    name = f"secret-hash-{resource}"
    if len(name) > 63:
        name = f"secret-hash-{resource[:38].rstrip('-.')}-{hashlib.sha256(resource.encode()).hexdigest()[:8]}"
    return f"aitbc.io/{name}"


@dataclass(frozen=True)
class Consumer:
    """A consuming workload as read (``obj`` None: a named one that does not exist)."""

    kind: ConsumerKind
    name: str
    obj: Mapping[str, Any] | None


def stamped(obj: Mapping[str, Any], key: str) -> str | None:
    """The hash on the workload's pod template."""
    template = (obj.get("spec") or {}).get("template") or {}
    return ((template.get("metadata") or {}).get("annotations") or {}).get(key)


def rollout_complete(kind: ConsumerKind, obj: Mapping[str, Any]) -> bool:
    """Every pod runs the current template and is ready; no pod of an older template is left."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return False
    replicas = spec.get("replicas", 1)
    if kind is ConsumerKind.STATEFULSET:
        return bool(status.get("currentRevision") == status.get("updateRevision")
                    and status.get("updatedReplicas", 0) == replicas and status.get("readyReplicas", 0) == replicas
                    and status.get("replicas", 0) == replicas)
    return bool(status.get("updatedReplicas", 0) == replicas and status.get("replicas", 0) == replicas
                and status.get("availableReplicas", 0) == replicas)


def consumer_status(consumer: Consumer, key: str, secret_hash: str) -> ConsumerStatus:
    """Whether it runs on the Secret of ``secret_hash``: stamped with it and rolled out."""
    if consumer.obj is None:
        return ConsumerStatus(kind=consumer.kind.value, name=consumer.name, found=False)
    applied = stamped(consumer.obj, key)
    current = applied == secret_hash and rollout_complete(consumer.kind, consumer.obj)
    return ConsumerStatus(kind=consumer.kind.value, name=consumer.name, applied_hash=applied, current=current)


def all_current(statuses: Sequence[ConsumerStatus]) -> bool:
    """There are consumers, and every one that exists runs on the current Secret."""
    found = [s for s in statuses if s.found]
    return bool(found) and all(s.current for s in found)


def stamp_patch(key: str, secret_hash: str) -> dict[str, Any]:
    """The merge patch that stamps the hash on a pod template (nothing else)."""
    return {"spec": {"template": {"metadata": {"annotations": {key: secret_hash}}}}}


# --- reads and writes -------------------------------------------------------------------------------------------------

async def find_consumers(kube: Kube, namespace: str, spec: AitbcDatabaseSpec) -> list[Consumer]:
    """The consuming workloads (by name, or every one matching a selector), each once, in a stable order."""
    found: dict[tuple[ConsumerKind, str], Consumer] = {}
    for ref in spec.consumers:
        kind = _KINDS[ref.kind]
        if ref.name is not None:
            found.setdefault((ref.kind, ref.name), Consumer(ref.kind, ref.name, await kube.get(kind, namespace,
                                                                                              ref.name)))
        elif ref.selector is not None:
            for obj in await kube.list(kind, namespace, label_selector=ref.selector.as_selector()):
                name = obj["metadata"]["name"]
                found[(ref.kind, name)] = Consumer(ref.kind, name, obj)
    return [found[k] for k in sorted(found)]


async def stamp(kube: Kube, namespace: str, consumers: Sequence[Consumer], key: str, secret_hash: str) -> list[str]:
    """Stamp the hash on every existing consumer that lacks it; returns ``Kind/name`` of those written (rolled)."""
    rolled = []
    for consumer in consumers:
        if consumer.obj is None or stamped(consumer.obj, key) == secret_hash:
            continue
        await kube.merge_patch(_KINDS[consumer.kind], namespace, consumer.name, stamp_patch(key, secret_hash))
        rolled.append(f"{consumer.kind.value}/{consumer.name}")
    return rolled


async def scale(kube: Kube, namespace: str, kind: str, name: str, replicas: int) -> None:
    """Set a consumer's replicas (restore: to zero, and back)."""
    await kube.merge_patch(_KINDS[ConsumerKind(kind)], namespace, name, {"spec": {"replicas": replicas}})
