"""The AitbcNode's configuration: child names, the environment ConfigMaps, reserved env names and the config hash.

Pure: no I/O, no clock. The config hash covers exactly what is database-related (see :func:`config_hash`); it is
stamped on both pod templates and drives the coordinated rollout (see :mod:`aitbc_operator.rollout`).

Two ConfigMaps carry the same environment: ``<name>-config`` (the node's, always the desired configuration) and
``<name>-rpc-config`` (the RPC's, rewritten only when the RPC rolls to the configuration the node is Ready on).
With a single shared ConfigMap an RPC pod that restarts mid-rollout (eviction, crash) would read a configuration
the node has not been prepared for (e.g. a new chain whose directory the init container has not yet created with
NOCOW): the RPC would be ahead of the node in substance, whatever its hash annotation said.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..chainpaths import sqlite_url
from ..models.node import CHAIN_DB_URL_PREFIX, ENV_MEMPOOL_DB_URL, ENV_REDIS_URL, AitbcNodeSpec, EnvVar
from .common import child_metadata, strip_framework_metadata

#: Pod-template annotation carrying the configuration hash (on the node and the RPC pod templates).
ANNOTATION_CONFIG_HASH = "aitbc.io/config-hash"
#: RPC pod-template annotation: the node pod incarnation (uid/restartCount) the RPC was last (re)started after.
ANNOTATION_NODE_RESTART_MARKER = "aitbc.io/node-restart-marker"
#: RPC pod-template annotation: restarts for staleness so far (chain_health.py); raising it restarts the RPC.
ANNOTATION_RPC_RESTARTS = "aitbc.io/rpc-restarts"
#: The operator's own annotation prefix: control annotations on the AitbcNode are not copied to its children.
OWN_PREFIX = "aitbc.io/"

COMPONENT_NODE = "node"
COMPONENT_RPC = "rpc"
COMPONENT_CONFIG = "config"
COMPONENT_DATA = "data"

#: Environment keys the operator sets (never taken from the user's env).
ENV_DATA_DIR = "DATA_DIR"
ENV_CHAIN_ID = "CHAIN_ID"
ENV_CHAINS = "CHAINS"
ENV_CHAIN_DB_URL = "CHAIN_DB_URL"
ENV_CHAIN_DB_URL_PREFIX = CHAIN_DB_URL_PREFIX
#: The node's "use PostgreSQL for chain data" switch in the runbook: never passed through from the user's env.
ENV_DATABASE_URL = "DATABASE_URL"
#: Length of the config hash (hex characters of a SHA-256 digest): 64 bits, plenty to tell configurations apart.
HASH_LENGTH = 16
_HASH_VERSION = 1


@dataclass(frozen=True)
class NodeNames:
    """Names of every child of one AitbcNode (all explicit; never generateName)."""

    owner: str

    @property
    def statefulset(self) -> str:
        """The node StatefulSet, ``<name>-node`` (its pod is ``<name>-node-0``)."""
        return f"{self.owner}-node"

    @property
    def node_service(self) -> str:
        """The node's headless Service (the StatefulSet's serviceName), ``<name>-node``."""
        return f"{self.owner}-node"

    @property
    def node_pod(self) -> str:
        """The node pod, ``<name>-node-0``."""
        return f"{self.statefulset}-0"

    @property
    def deployment(self) -> str:
        """The RPC Deployment, ``<name>-rpc``."""
        return f"{self.owner}-rpc"

    @property
    def rpc_service(self) -> str:
        """The RPC Service, ``<name>-rpc``."""
        return f"{self.owner}-rpc"

    @property
    def node_configmap(self) -> str:
        """The node's environment (the desired configuration), ``<name>-config``."""
        return f"{self.owner}-config"

    @property
    def rpc_configmap(self) -> str:
        """The RPC's environment (the configuration the RPC runs with), ``<name>-rpc-config``."""
        return f"{self.owner}-rpc-config"

    @property
    def pvc(self) -> str:
        """The chain-data PersistentVolumeClaim (pvc storage only), ``<name>-data``."""
        return f"{self.owner}-data"

    @property
    def backup_pvc(self) -> str:
        """The backup volume claim (``backup.destination: Volume``), ``<name>-backups``."""
        return f"{self.owner}-backups"


#: Longest AitbcNode name whose children are all valid: the StatefulSet's pods get the label
#: ``controller-revision-hash: <name>-node-<10 characters>``, which must fit in 63.
MAX_OWNER_NAME_LENGTH = 47
_SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def owner_name_problems(name: str) -> list[str]:
    """Why children of an AitbcNode with this name could not be created (empty when they can).

    Service names are DNS-1035 labels (start with a letter); the revision label limits the length.
    """
    problems = []
    if len(name) > MAX_OWNER_NAME_LENGTH:
        problems.append(f"name {name!r} is longer than {MAX_OWNER_NAME_LENGTH} characters")
    if not _SERVICE_NAME.fullmatch(name):
        problems.append(f"name {name!r} must start with a lower-case letter and contain only a-z, 0-9 and '-'")
    return problems


def names_of(owner: Mapping[str, Any]) -> NodeNames:
    """The child names of an AitbcNode object."""
    return NodeNames(str(owner["metadata"]["name"]))


@dataclass(frozen=True)
class MempoolDatabase:
    """The resolved mempool database: the Secret of the AitbcDatabase named by ``spec.mempool.databaseRef``.

    The caller resolves it (the AitbcDatabase's ``status.secretName``, else its spec's secret name) because it
    needs a read of another object. The node gets ``MEMPOOL_DB_URL`` from ``secretKeyRef`` to ``key``:
    ``DATABASE_URL`` by default, which every AitbcDatabase Secret carries whatever its ``service``.
    """

    secret_name: str
    key: str = "DATABASE_URL"
    #: The Secret carries ``ca.crt`` (the AitbcDatabase has ``server.caSecretRef``): its URL names
    #: ``sslrootcert=/etc/aitbc/postgres-ca/ca.crt``, so the node mounts it there.
    ca: bool = False


def chain_env_name(chain: str) -> str:
    """The ConfigMap key of a chain's SQLite URL: ``ait-mainnet`` -> ``CHAIN_DB_URL_AIT_MAINNET``.

    Chain ids are DNS labels (no ``_``), so the mapping is one-to-one.
    """
    return ENV_CHAIN_DB_URL_PREFIX + chain.upper().replace("-", "_")


def node_environment(spec: AitbcNodeSpec) -> dict[str, str]:
    """The environment the operator owns, as ConfigMap data (no secret in it, ever).

    ``DATA_DIR``, ``CHAIN_ID`` (the default chain), ``CHAINS`` (comma-separated), ``CHAIN_DB_URL`` (the default
    chain's SQLite URL), ``CHAIN_DB_URL_<CHAIN>`` for every chain and ``REDIS_URL`` when set. ``DATABASE_URL`` is
    deliberately absent: unset, the node uses its per-chain SQLite databases under ``DATA_DIR`` (the runbook's
    "comment out to use SQLite"). ``MEMPOOL_DB_URL`` is not here either: it is a secretKeyRef when the mempool uses
    PostgreSQL, and unset (the node's SQLite default) otherwise.
    """
    data = {
        ENV_DATA_DIR: spec.data_dir,
        ENV_CHAIN_ID: spec.default_chain,
        ENV_CHAINS: ",".join(spec.chains),
        ENV_CHAIN_DB_URL: sqlite_url(spec.data_dir, spec.default_chain),
    }
    for chain in spec.chains:
        data[chain_env_name(chain)] = sqlite_url(spec.data_dir, chain)
    if spec.redis_url:
        data[ENV_REDIS_URL] = spec.redis_url
    return data


def reserved_env_names(spec: AitbcNodeSpec, mempool: MempoolDatabase | None) -> frozenset[str]:
    """Environment names the operator sets for the node: user env entries with these names are dropped.

    Kubernetes lets ``env`` override ``envFrom``; without this a user entry could silently replace DATA_DIR or a
    chain URL. ``DATABASE_URL`` is always reserved: chain data are SQLite, and a PostgreSQL URL could otherwise
    arrive through ``valueFrom`` (a literal one is already refused by the CRD). ``REDIS_URL`` is reserved only
    when ``spec.redisUrl`` is set (else the user may provide it, e.g. from a Secret), ``MEMPOOL_DB_URL`` only
    when the mempool uses an AitbcDatabase.
    """
    names = set(node_environment(spec)) | {ENV_DATABASE_URL}
    if mempool is not None:
        names.add(ENV_MEMPOOL_DB_URL)
    return frozenset(names)


def shadowed_env_names(spec: AitbcNodeSpec, mempool: MempoolDatabase | None) -> list[str]:
    """User env names (node and RPC) that the operator's own values replace: worth a Warning event."""
    reserved = reserved_env_names(spec, mempool)
    return sorted({e.name for e in (*spec.node.env, *spec.rpc.env) if e.name in reserved})


def user_env(entries: Iterable[EnvVar], reserved: frozenset[str]) -> list[dict[str, Any]]:
    """The user's env entries as container env, minus reserved names (the operator's values win)."""
    out: list[dict[str, Any]] = []
    for entry in entries:
        if entry.name in reserved:
            continue
        item: dict[str, Any] = {"name": entry.name}
        if entry.value_from is not None:
            item["valueFrom"] = dict(entry.value_from)
        else:
            item["value"] = entry.value or ""
        out.append(item)
    return out


def inherited_labels(owner: Mapping[str, Any]) -> dict[str, str]:
    """The AitbcNode's labels that children carry (framework and GitOps tracking keys removed)."""
    return strip_framework_metadata(owner["metadata"].get("labels"))


def inherited_annotations(owner: Mapping[str, Any]) -> dict[str, str]:
    """The AitbcNode's annotations that children carry: no framework/GitOps keys, no ``aitbc.io/`` controls."""
    cleaned = strip_framework_metadata(owner["metadata"].get("annotations"))
    return {k: v for k, v in cleaned.items() if not k.startswith(OWN_PREFIX)}


def child_meta(owner: Mapping[str, Any], name: str, component: str, *, owned: bool = True) -> dict[str, Any]:
    """metadata of one child: explicit name, inherited labels/annotations, standard labels, owner reference."""
    return child_metadata(
        owner, name, component,
        labels=inherited_labels(owner), annotations=inherited_annotations(owner), owned=owned,
    )


def _configmap(owner: Mapping[str, Any], name: str, spec: AitbcNodeSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_meta(owner, name, COMPONENT_CONFIG),
        "data": node_environment(spec),
    }


def node_configmap(owner: Mapping[str, Any], spec: AitbcNodeSpec) -> dict[str, Any]:
    """``<name>-config``: the node's environment (always the desired configuration)."""
    return _configmap(owner, names_of(owner).node_configmap, spec)


def rpc_configmap(owner: Mapping[str, Any], spec: AitbcNodeSpec) -> dict[str, Any]:
    """``<name>-rpc-config``: the RPC's environment, same data as the node's.

    Apply it only when the RPC is (being) put on the desired configuration hash: it must always describe the
    configuration on the RPC's pod template (see the module docstring).
    """
    return _configmap(owner, names_of(owner).rpc_configmap, spec)


def referenced_secret_names(spec: AitbcNodeSpec, mempool: MempoolDatabase | None) -> list[str]:
    """Every Secret the node or RPC reads: the mempool database's and those of ``secretKeyRef`` env entries.

    The caller reads these (their ``data``) and passes them to :func:`config_hash`.
    """
    names: set[str] = set()
    if mempool is not None:
        names.add(mempool.secret_name)
    for entry in (*spec.node.env, *spec.rpc.env):
        ref = (entry.value_from or {}).get("secretKeyRef")
        if isinstance(ref, Mapping) and isinstance(ref.get("name"), str):
            names.add(ref["name"])
    return sorted(names)


def _digest(value: str | bytes) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return hashlib.sha256(raw).hexdigest()


def database_fields(spec: AitbcNodeSpec, mempool: MempoolDatabase | None) -> dict[str, Any]:
    """The database-related spec fields the config hash covers.

    Chain layout, storage location and NOCOW policy, the mempool reference. Not resources, images, probes,
    placement, PVC size or retention: changing those must not start a coordinated rollout.
    """
    storage = spec.storage
    where: dict[str, Any]
    if storage.host_path is not None:
        where = {"hostPath": {"path": storage.host_path.path, "nodeName": storage.host_path.node_name}}
    else:
        assert storage.pvc is not None  # the model guarantees exactly one
        where = {"pvc": {"storageClassName": storage.pvc.storage_class_name, "accessMode": storage.pvc.access_mode}}
    return {
        "dataDir": spec.data_dir,
        "chains": list(spec.chains),
        "chainId": spec.default_chain,
        "storage": {**where, "disableCow": storage.disable_cow, "requireNoCow": storage.require_no_cow},
        "mempool": {
            "databaseRef": spec.mempool.database_ref.name if spec.mempool.database_ref else None,
            "secretName": mempool.secret_name if mempool else None,
            "secretKey": mempool.key if mempool else None,
        },
    }


def config_hash(
    spec: AitbcNodeSpec,
    configmap_data: Mapping[str, str],
    secrets: Mapping[str, Mapping[str, str | bytes] | None],
    *,
    mempool: MempoolDatabase | None = None,
) -> str:
    """The configuration hash: SHA-256 of a canonical JSON document, first :data:`HASH_LENGTH` hex characters.

    It covers the ConfigMap data, the content of every Secret in :func:`referenced_secret_names` (each value
    reduced to its own SHA-256 first, so no secret ever enters the document; a missing Secret counts as ``null``)
    and :func:`database_fields`. Entries of ``secrets`` that are not referenced are ignored. Pass each Secret's
    ``data`` as the API returns it (base64 strings): the same bytes must give the same hash on every reconcile.
    """
    referenced = referenced_secret_names(spec, mempool)
    secret_digests: dict[str, dict[str, str] | None] = {}
    for name in referenced:
        content = secrets.get(name)
        secret_digests[name] = None if content is None else {k: _digest(v) for k, v in content.items()}
    document = {
        "version": _HASH_VERSION,
        "config": dict(configmap_data),
        "secrets": secret_digests,
        "spec": database_fields(spec, mempool),
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_LENGTH]
