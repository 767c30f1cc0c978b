"""Pure builders for an AitbcNode's children: Services, the chain PVC, and the whole set at once.

The configuration (ConfigMaps, config hash) lives in :mod:`.node_config`, the workloads in :mod:`.node_workloads`;
both are re-exported here so callers import one module.

Children of AitbcNode ``<name>`` (all with explicit names and an owner reference, except a retained PVC):

====================  ===================================================================
``<name>-config``     ConfigMap, the node's environment (desired configuration)
``<name>-rpc-config``  ConfigMap, the RPC's environment (configuration on the RPC's template)
``<name>-node``       StatefulSet (one replica) and its headless Service
``<name>-rpc``        Deployment (one replica, Recreate) and its Service
``<name>-data``       PersistentVolumeClaim (pvc storage only)
``<name>-backups``    PersistentVolumeClaim of the backups (``backup.destination: Volume``), never owned
``<name>-backup-*``   Jobs of backups, restores (``-restore-*``) and maintenance windows (``-maint-*``): node_jobs.py
====================  ===================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..models.node import AitbcNodeSpec
from .common import selector_labels
from .node_config import (
    ANNOTATION_CONFIG_HASH,
    ANNOTATION_NODE_RESTART_MARKER,
    COMPONENT_DATA,
    COMPONENT_NODE,
    COMPONENT_RPC,
    MempoolDatabase,
    NodeNames,
    chain_env_name,
    child_meta,
    config_hash,
    names_of,
    node_configmap,
    node_environment,
    owner_name_problems,
    referenced_secret_names,
    reserved_env_names,
    rpc_configmap,
    shadowed_env_names,
)
from .node_jobs import backup_pvc
from .node_workloads import (
    INIT_CONTAINER,
    NODE_CONTAINER,
    RPC_CONTAINER,
    node_statefulset,
    rollout_timeout_seconds,
    rpc_deployment,
    volume_prep_container,
)

__all__ = [
    "ANNOTATION_CONFIG_HASH",
    "ANNOTATION_NODE_RESTART_MARKER",
    "ANNOTATION_RETAINED",
    "INIT_CONTAINER",
    "NODE_CONTAINER",
    "RPC_CONTAINER",
    "MempoolDatabase",
    "NodeChildren",
    "NodeNames",
    "chain_env_name",
    "chain_pvc",
    "config_hash",
    "names_of",
    "node_children",
    "node_configmap",
    "node_environment",
    "node_service",
    "node_statefulset",
    "owner_name_problems",
    "referenced_secret_names",
    "reserved_env_names",
    "rollout_timeout_seconds",
    "rpc_configmap",
    "rpc_deployment",
    "rpc_service",
    "shadowed_env_names",
    "volume_prep_container",
]

#: On a retained PVC (no owner reference, so garbage collection keeps it): the uid of the AitbcNode it was made for.
ANNOTATION_RETAINED = "aitbc.io/retained-from-uid"


def node_service(owner: Mapping[str, Any], spec: AitbcNodeSpec) -> dict[str, Any]:
    """``<name>-node``: the headless Service of the node StatefulSet (stable DNS ``<name>-node-0.<name>-node``)."""
    owner_name = names_of(owner).owner
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_meta(owner, names_of(owner).node_service, COMPONENT_NODE),
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(owner_name, COMPONENT_NODE),
            "ports": [{"name": "node", "port": spec.node.port, "targetPort": "node", "protocol": "TCP"}],
        },
    }


def rpc_service(owner: Mapping[str, Any], spec: AitbcNodeSpec) -> dict[str, Any]:
    """``<name>-rpc``: a ClusterIP Service for the RPC (``GET /rpc/head?chain_id=...`` on port 8006 by default)."""
    owner_name = names_of(owner).owner
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_meta(owner, names_of(owner).rpc_service, COMPONENT_RPC),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner_name, COMPONENT_RPC),
            "ports": [{"name": "rpc", "port": spec.rpc.port, "targetPort": "rpc", "protocol": "TCP"}],
        },
    }


def chain_pvc(owner: Mapping[str, Any], spec: AitbcNodeSpec, request: str | None = None) -> dict[str, Any] | None:
    """``<name>-data``: the chain volume claim, or None with hostPath storage.

    ``request`` is the storage request to apply (volume_expansion: never below the live one); storage.pvc.size when
    None.

    Retained by default (``retainOnDelete``): then it carries no owner reference, so deleting the AitbcNode never
    garbage-collects the chain data; an annotation records which AitbcNode it was made for. The labels still
    name the owner, so a re-created AitbcNode of the same name picks the claim up again.
    """
    pvc = spec.storage.pvc
    if pvc is None:
        return None
    meta = child_meta(owner, names_of(owner).pvc, COMPONENT_DATA, owned=not pvc.retain_on_delete)
    if pvc.retain_on_delete:
        meta["annotations"] = {**meta.get("annotations", {}), ANNOTATION_RETAINED: str(owner["metadata"]["uid"])}
    claim: dict[str, Any] = {
        "accessModes": [pvc.access_mode],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": request or str(pvc.size)}},
    }
    if pvc.storage_class_name:
        claim["storageClassName"] = pvc.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": claim}


@dataclass(frozen=True)
class NodeChildren:
    """Every child manifest of one AitbcNode, in the order to apply them (volume and config before workloads)."""

    pvc: dict[str, Any] | None
    node_configmap: dict[str, Any]
    rpc_configmap: dict[str, Any]
    node_service: dict[str, Any]
    rpc_service: dict[str, Any]
    statefulset: dict[str, Any]
    deployment: dict[str, Any]
    backup_pvc: dict[str, Any] | None = None

    def in_apply_order(self) -> list[dict[str, Any]]:
        """All manifests, PVCs and ConfigMaps first, the RPC last."""
        items = [self.pvc, self.backup_pvc, self.node_configmap, self.rpc_configmap, self.node_service,
                 self.rpc_service, self.statefulset, self.deployment]
        return [m for m in items if m is not None]


def node_children(
    owner: Mapping[str, Any],
    spec: AitbcNodeSpec,
    *,
    node_hash: str,
    rpc_hash: str,
    node_restart_marker: str,
    operator_image: str,
    mempool: MempoolDatabase | None = None,
    node_replicas: int = 1,
    rpc_replicas: int = 1,
    rpc_restarts: int = 0,
    pvc_request: str | None = None,
) -> NodeChildren:
    """All children at once, for a fresh AitbcNode or a golden test.

    The handler applies them one by one as the rollout allows (the RPC's ConfigMap and Deployment only once the
    rollout puts the RPC on a hash); this function is the complete picture for given hashes.
    """
    return NodeChildren(
        pvc=chain_pvc(owner, spec, pvc_request),
        backup_pvc=backup_pvc(owner, spec),
        node_configmap=node_configmap(owner, spec),
        rpc_configmap=rpc_configmap(owner, spec),
        node_service=node_service(owner, spec),
        rpc_service=rpc_service(owner, spec),
        statefulset=node_statefulset(
            owner, spec, config_hash=node_hash, operator_image=operator_image, mempool=mempool, replicas=node_replicas,
        ),
        deployment=rpc_deployment(
            owner, spec, config_hash=rpc_hash, node_restart_marker=node_restart_marker, mempool=mempool,
            replicas=rpc_replicas, rpc_restarts=rpc_restarts,
        ),
    )
