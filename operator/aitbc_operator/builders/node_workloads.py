"""The AitbcNode's workloads: the node StatefulSet (with the volume-preparation init container) and the RPC Deployment.

Pure: the config hash, the RPC's node-restart marker and the operator image are inputs (the rollout decides the
first two, see :mod:`aitbc_operator.rollout`; settings give the third). Pod templates carry only fixed labels and
the operator's annotations, so editing the AitbcNode's labels never restarts a pod.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..models.base import parse_duration
from ..models.node import ENV_MEMPOOL_DB_URL, AitbcNodeSpec, ContainerSpec, Resources
from .common import LABEL_MANAGED_BY, LABEL_PART_OF, MANAGED_BY, selector_labels
from .database import ca_volume
from .node_config import (
    ANNOTATION_CONFIG_HASH,
    ANNOTATION_NODE_RESTART_MARKER,
    ANNOTATION_RPC_RESTARTS,
    COMPONENT_NODE,
    COMPONENT_RPC,
    MempoolDatabase,
    child_meta,
    names_of,
    reserved_env_names,
    user_env,
)

#: Name of the chain volume in both pods.
VOLUME_NAME = "chain-data"
#: Container names (the rollout reads the node container's restartCount by this name).
NODE_CONTAINER = "node"
RPC_CONTAINER = "rpc"
INIT_CONTAINER = "volume-prep"
HEALTH_CONTAINER = "chain-health"
#: The sidecar reads file sizes and runs a quick_check now and then.
HEALTH_RESOURCES: dict[str, Any] = {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"memory": "256Mi"}}
HOSTNAME_TOPOLOGY_KEY = "kubernetes.io/hostname"
#: Capabilities of the least-privilege init container: chown the tree, change flags on files it does not own,
#: read/write whatever is there, and set inode flags (chattr).
LEAST_PRIVILEGE_CAPABILITIES = ("CHOWN", "FOWNER", "DAC_OVERRIDE", "LINUX_IMMUTABLE")
#: Resources of the init container: it walks directories and runs a SQLite check, nothing more.
INIT_RESOURCES: dict[str, Any] = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}}
#: The node is the single SQLite writer: give it time to checkpoint the WAL and close on shutdown.
NODE_TERMINATION_GRACE_SECONDS = 60
REVISION_HISTORY_LIMIT = 5


def pod_labels(owner_name: str, component: str) -> dict[str, str]:
    """Labels of a pod template: the selector labels plus the fixed standard ones, nothing inherited."""
    return {**selector_labels(owner_name, component), LABEL_MANAGED_BY: MANAGED_BY, LABEL_PART_OF: "aitbc"}


def _resources(resources: Resources) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if resources.requests:
        out["requests"] = {k: str(v) for k, v in sorted(resources.requests.items())}
    if resources.limits:
        out["limits"] = {k: str(v) for k, v in sorted(resources.limits.items())}
    return out


def _readiness_probe(container: ContainerSpec, port_name: str) -> dict[str, Any]:
    """HTTP GET on readinessPath when set, else a TCP connect to the port."""
    check: dict[str, Any] = (
        {"httpGet": {"path": container.readiness_path, "port": port_name}}
        if container.readiness_path
        else {"tcpSocket": {"port": port_name}}
    )
    return {**check, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3, "successThreshold": 1}


def _app_security_context(spec: AitbcNodeSpec) -> dict[str, Any]:
    """Node and RPC containers: the data owner's uid/gid, non-root, no privilege escalation, no capabilities."""
    return {
        "runAsUser": spec.volume_prep.run_as_user,
        "runAsGroup": spec.volume_prep.run_as_group,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


def _app_container(
    spec: AitbcNodeSpec,
    container: ContainerSpec,
    *,
    name: str,
    configmap: str,
    extra_env: list[dict[str, Any]],
    reserved: frozenset[str],
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "image": container.image, "imagePullPolicy": container.image_pull_policy}
    if container.command:
        out["command"] = list(container.command)
    if container.args:
        out["args"] = list(container.args)
    out["ports"] = [{"name": name, "containerPort": container.port, "protocol": "TCP"}]
    out["envFrom"] = [{"configMapRef": {"name": configmap}}]
    env = user_env(container.env, reserved) + extra_env
    if env:
        out["env"] = env
    out["readinessProbe"] = _readiness_probe(container, name)
    resources = _resources(container.resources)
    if resources:
        out["resources"] = resources
    out["securityContext"] = _app_security_context(spec)
    out["volumeMounts"] = [{"name": VOLUME_NAME, "mountPath": spec.data_dir}]
    return out


def init_security_context(privileged: bool) -> dict[str, Any]:
    if privileged:
        return {"privileged": True, "runAsUser": 0}
    return {
        "runAsUser": 0,
        "runAsNonRoot": False,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], "add": list(LEAST_PRIVILEGE_CAPABILITIES)},
    }


def _flag(value: bool) -> str:
    return "true" if value else "false"


def volume_prep_container(spec: AitbcNodeSpec, *, operator_image: str) -> dict[str, Any]:
    """The init container running ``aitbc-operator volume prepare`` before anything opens a database.

    Its report is the termination message (``File`` policy: the tool writes /dev/termination-log).
    """
    prep = spec.volume_prep
    env = {
        "AITBC_DATA_DIR": spec.data_dir,
        "AITBC_CHAINS": ",".join(spec.chains),
        "AITBC_UID": str(prep.run_as_user),
        "AITBC_GID": str(prep.run_as_group),
        "AITBC_DISABLE_COW": _flag(spec.storage.disable_cow),
        "AITBC_REQUIRE_NOCOW": _flag(spec.storage.require_no_cow),
        "AITBC_INTEGRITY_CHECK": prep.integrity_check,
    }
    return {
        "name": INIT_CONTAINER,
        "image": prep.image or operator_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["aitbc-operator", "volume", "prepare"],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "resources": INIT_RESOURCES,
        "securityContext": init_security_context(prep.privileged),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "volumeMounts": [{"name": VOLUME_NAME, "mountPath": spec.data_dir}],
    }


def health_sidecar(spec: AitbcNodeSpec, *, operator_image: str) -> dict[str, Any]:
    """The read-only chain-health sidecar, ``aitbc-operator volume serve`` (the operator reads GET /chains by the node
    pod's IP). It runs as the data owner, non-root, without capabilities, and opens the databases with mode=ro; the
    volume is mounted read-write only because SQLite's WAL readers need the -shm file."""
    port = spec.health.port
    return {
        "name": HEALTH_CONTAINER,
        "image": spec.volume_prep.image or operator_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["aitbc-operator", "volume", "serve", f"--port={port}"],
        "env": [{"name": "AITBC_DATA_DIR", "value": spec.data_dir}, {"name": "AITBC_CHAINS",
                                                                       "value": ",".join(spec.chains)}],
        "ports": [{"name": "chain-health", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "chain-health"}, "periodSeconds": 10,
                           "timeoutSeconds": 3, "failureThreshold": 3},
        "resources": HEALTH_RESOURCES,
        "securityContext": {**_app_security_context(spec), "readOnlyRootFilesystem": True},
        "volumeMounts": [{"name": VOLUME_NAME, "mountPath": spec.data_dir}],
    }


def chain_volume(owner: Mapping[str, Any], spec: AitbcNodeSpec) -> dict[str, Any]:
    """The chain volume both pods mount: the hostPath directory or the operator's PVC."""
    if spec.storage.host_path is not None:
        return {"name": VOLUME_NAME, "hostPath": {"path": spec.storage.host_path.path, "type": "DirectoryOrCreate"}}
    return {"name": VOLUME_NAME, "persistentVolumeClaim": {"claimName": names_of(owner).pvc}}


def host_affinity_to(node_name: str) -> dict[str, Any]:
    """Require the Kubernetes node of that name (matched by name, not by a label)."""
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}
    return {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}


def _host_affinity(spec: AitbcNodeSpec) -> dict[str, Any] | None:
    """With hostPath storage: require the Kubernetes node holding the data."""
    if spec.storage.host_path is None:
        return None
    return host_affinity_to(spec.storage.host_path.node_name)


def placement(spec: AitbcNodeSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if spec.placement.node_selector:
        out["nodeSelector"] = dict(sorted(spec.placement.node_selector.items()))
    if spec.placement.tolerations:
        out["tolerations"] = [t.model_dump(mode="json", by_alias=True, exclude_none=True)
                              for t in spec.placement.tolerations]
    return out


def _pod_spec_common(spec: AitbcNodeSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if spec.service_account_name:
        out["serviceAccountName"] = spec.service_account_name
    out["automountServiceAccountToken"] = False  # neither process talks to the Kubernetes API
    out["enableServiceLinks"] = False  # no injected *_PORT/*_HOST variables next to REDIS_URL and friends
    out["securityContext"] = {
        "fsGroup": spec.volume_prep.run_as_group,
        "fsGroupChangePolicy": "OnRootMismatch",  # never a recursive chown of the chain data on every start
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return out


def node_statefulset(
    owner: Mapping[str, Any],
    spec: AitbcNodeSpec,
    *,
    config_hash: str,
    operator_image: str,
    mempool: MempoolDatabase | None = None,
    replicas: int = 1,
) -> dict[str, Any]:
    """The node: a one-replica StatefulSet (a single SQLite writer) with the volume-preparation init container.

    ``config_hash`` is what the rollout decided the node runs (always the desired hash). ``mempool`` is the
    resolved AitbcDatabase Secret when ``spec.mempool.databaseRef`` is set: MEMPOOL_DB_URL then comes from it by
    secretKeyRef (never copied into a ConfigMap); without it MEMPOOL_DB_URL stays unset and the node keeps its
    mempool in SQLite. ``podManagementPolicy: Parallel`` lets the controller replace a pod that never became
    Ready when the template changes again (with OrderedReady a broken revision blocks the fix).
    """
    if (spec.mempool.database_ref is None) != (mempool is None):
        raise ValueError("pass mempool exactly when spec.mempool.databaseRef is set")
    names = names_of(owner)
    owner_name = names.owner
    extra_env: list[dict[str, Any]] = []
    if mempool is not None:
        extra_env.append(
            {"name": ENV_MEMPOOL_DB_URL,
             "valueFrom": {"secretKeyRef": {"name": mempool.secret_name, "key": mempool.key}}}
        )
    container = _app_container(
        spec, spec.node, name=NODE_CONTAINER, configmap=names.node_configmap, extra_env=extra_env,
        reserved=reserved_env_names(spec, mempool),
    )
    pod_spec: dict[str, Any] = _pod_spec_common(spec)
    affinity = _host_affinity(spec)
    if affinity:
        pod_spec["affinity"] = {"nodeAffinity": affinity}
    pod_spec |= placement(spec)
    pod_spec |= {
        "terminationGracePeriodSeconds": NODE_TERMINATION_GRACE_SECONDS,
        "initContainers": [volume_prep_container(spec, operator_image=operator_image)],
        "containers": [container, *([health_sidecar(spec, operator_image=operator_image)] if spec.health.enabled
                                    else [])],
        "volumes": [chain_volume(owner, spec)],
    }
    if mempool is not None and mempool.ca:
        mount, volume = ca_volume(mempool.secret_name)
        container["volumeMounts"].append(mount)
        pod_spec["volumes"].append(volume)
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": child_meta(owner, names.statefulset, COMPONENT_NODE),
        "spec": {
            "replicas": replicas,
            "serviceName": names.node_service,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
            "selector": {"matchLabels": selector_labels(owner_name, COMPONENT_NODE)},
            "template": {
                "metadata": {
                    "labels": pod_labels(owner_name, COMPONENT_NODE),
                    "annotations": {ANNOTATION_CONFIG_HASH: config_hash},
                },
                "spec": pod_spec,
            },
        },
    }


def rollout_timeout_seconds(spec: AitbcNodeSpec) -> int:
    """``spec.rolloutTimeout`` in whole seconds (at least 1)."""
    return max(1, math.ceil(parse_duration(spec.rollout_timeout)))


def rpc_deployment(
    owner: Mapping[str, Any],
    spec: AitbcNodeSpec,
    *,
    config_hash: str,
    node_restart_marker: str,
    mempool: MempoolDatabase | None = None,
    replicas: int = 1,
    rpc_restarts: int = 0,
) -> dict[str, Any]:
    """The RPC: a one-replica Deployment on the node's Kubernetes node, mounting the chain volume read-write.

    Read-write because SQLite WAL readers need write access to the ``-shm`` file. ``Recreate``: the old RPC pod
    is gone before the new one opens the databases. ``config_hash`` and ``node_restart_marker`` are what the
    rollout decided (the hash the node is Ready on, the node pod incarnation the RPC follows); changing either
    restarts the RPC. ``progressDeadlineSeconds`` is the rollout timeout, so a stuck RPC is reported as such.
    ``mempool`` only decides which user env names are reserved (the RPC does not get MEMPOOL_DB_URL).
    ``replicas`` is 0 while held stopped; ``rpc_restarts`` (chain_health.py), when above 0, is stamped on the template:
    raising it restarts a stale RPC.
    """
    names = names_of(owner)
    owner_name = names.owner
    container = _app_container(
        spec, spec.rpc, name=RPC_CONTAINER, configmap=names.rpc_configmap, extra_env=[],
        reserved=reserved_env_names(spec, mempool),
    )
    node_pod_term = {
        "labelSelector": {"matchLabels": selector_labels(owner_name, COMPONENT_NODE)},
        "topologyKey": HOSTNAME_TOPOLOGY_KEY,
    }
    affinity: dict[str, Any] = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [node_pod_term]}}
    host = _host_affinity(spec)
    if host:
        affinity["nodeAffinity"] = host
    pod_spec: dict[str, Any] = _pod_spec_common(spec)
    pod_spec["affinity"] = affinity
    pod_spec |= placement(spec)
    pod_spec |= {"containers": [container], "volumes": [chain_volume(owner, spec)]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_meta(owner, names.deployment, COMPONENT_RPC),
        "spec": {
            "replicas": replicas,
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
            "progressDeadlineSeconds": rollout_timeout_seconds(spec),
            "selector": {"matchLabels": selector_labels(owner_name, COMPONENT_RPC)},
            "template": {
                "metadata": {
                    "labels": pod_labels(owner_name, COMPONENT_RPC),
                    "annotations": {
                        ANNOTATION_CONFIG_HASH: config_hash,
                        ANNOTATION_NODE_RESTART_MARKER: node_restart_marker,
                        **({ANNOTATION_RPC_RESTARTS: str(rpc_restarts)} if rpc_restarts else {}),
                    },
                },
                "spec": pod_spec,
            },
        },
    }
