"""The AitbcNode custom resource: a blockchain node, its RPC service and their chain volume."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import (
    DNS_LABEL_PATTERN,
    DURATION_PATTERN,
    Condition,
    LocalObjectReference,
    Quantity,
    Spec,
    Status,
    cel,
    validations,
)
from .volume_report import VolumeReport

KIND = "AitbcNode"
PLURAL = "aitbcnodes"
MAX_CHAINS = 16
DEFAULT_DATA_DIR = "/var/lib/aitbc"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
ABSOLUTE_PATH_PATTERN = r"^/[^\x00]*$"
#: Environment variables that carry chain-database URLs: chain data are always SQLite.
CHAIN_DB_ENV_VARS = ("DATABASE_URL", "CHAIN_DB_URL")
_POSTGRES_SCHEMES = ("postgres:", "postgresql:", "postgresql+")


class EnvVar(Spec):
    """An environment variable for the node or RPC container."""

    name: str = Field(min_length=1, max_length=253, pattern=ENV_NAME_PATTERN)
    """Variable name."""
    value: str | None = Field(default=None, max_length=8192)
    """Literal value (at most 8 KiB: bounds the cost of the CEL rule on it, which the apiserver checks)."""
    value_from: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """A Kubernetes EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef)."""

    model_config = Spec.model_config | {
        "json_schema_extra": validations(
            cel("!(has(self.value) && has(self.valueFrom))", "set either value or valueFrom, not both"),
            cel(
                "!(self.name in ['DATABASE_URL', 'CHAIN_DB_URL']) || !has(self.value)"
                " || !self.value.matches('^(?i)postgres(ql)?[:+]')",
                "chain data are always SQLite: a PostgreSQL URL is not allowed in DATABASE_URL/CHAIN_DB_URL"
                " (use mempool.databaseRef for the mempool)",
            ),
        )
    }

    @model_validator(mode="after")
    def _no_postgres_chain_url(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError(f"env {self.name}: set either value or valueFrom, not both")
        if self.name in CHAIN_DB_ENV_VARS and self.value and self.value.lower().startswith(_POSTGRES_SCHEMES):
            raise ValueError(
                f"env {self.name}: chain data are always SQLite, a PostgreSQL URL is refused"
                " (use mempool.databaseRef for the mempool)"
            )
        return self


class Resources(Spec):
    """Compute resources of a container (a subset of Kubernetes ResourceRequirements)."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    """Minimum resources, e.g. {cpu: 100m, memory: 256Mi}."""
    limits: dict[str, Quantity] = Field(default_factory=dict)
    """Maximum resources."""


class Toleration(Spec):
    """A Kubernetes toleration."""

    key: str | None = None
    """Taint key."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists or Equal."""
    value: str | None = None
    """Taint value for Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to tolerate (all when unset)."""
    toleration_seconds: int | None = None
    """For NoExecute: how long the pod stays bound after the taint appears."""


class ContainerSpec(Spec):
    """Image, command and runtime settings of the node or the RPC container."""

    image: str = Field(min_length=1, max_length=512)
    """Container image."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """Image pull policy."""
    command: list[str] = Field(default_factory=list)
    """Entrypoint override."""
    args: list[str] = Field(default_factory=list)
    """Arguments."""
    port: int = Field(ge=1, le=65535)
    """The TCP port the process listens on (also used for readiness)."""
    env: list[EnvVar] = Field(default_factory=list, max_length=128)
    """Extra environment variables. The operator sets DATA_DIR, CHAIN_ID and the chain URLs itself."""
    resources: Resources = Field(default_factory=Resources)
    """Compute resources."""
    readiness_path: str | None = Field(default=None, pattern=r"^/.*$", max_length=512)
    """HTTP path for the readiness probe; a TCP probe on `port` when unset."""


class NodeContainerSpec(ContainerSpec):
    """The blockchain node container."""

    port: int = Field(default=8080, ge=1, le=65535)
    """The node's P2P/API port."""


class RpcContainerSpec(ContainerSpec):
    """The RPC container."""

    port: int = Field(default=8006, ge=1, le=65535)
    """The RPC HTTP port (`GET /rpc/head?chain_id=<id>` is served here)."""


class HostPathStorage(Spec):
    """Chain data in a directory of one Kubernetes node."""

    path: str = Field(default=DEFAULT_DATA_DIR, pattern=ABSOLUTE_PATH_PATTERN, max_length=4096)
    """Directory on the Kubernetes node."""
    node_name: str = Field(min_length=1, max_length=253)
    """The Kubernetes node holding the data; node and RPC pods are pinned to it."""


class PvcStorage(Spec):
    """Chain data on a PersistentVolumeClaim created by the operator (kept when the AitbcNode is deleted)."""

    size: Quantity = "10Gi"
    """Requested size. Can grow (if the storage class allows expansion), never shrink."""
    storage_class_name: str | None = Field(default=None, max_length=253)
    """Storage class; the cluster default when unset."""
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany"] = "ReadWriteOnce"
    """Access mode. Node and RPC pods run on the same Kubernetes node and both mount the volume, so ReadWriteOnce
    suffices (ReadWriteOncePod would lock the RPC out)."""
    retain_on_delete: bool = True
    """Keep the PVC when the AitbcNode is deleted (default). False lets garbage collection delete it."""


class StorageSpec(Spec):
    """Where chain data live. Exactly one of hostPath or pvc; the kind cannot change after creation."""

    host_path: HostPathStorage | None = None
    """A directory on one Kubernetes node (the runbook's /var/lib/aitbc)."""
    pvc: PvcStorage | None = None
    """A PersistentVolumeClaim managed by the operator."""
    disable_cow: bool = True
    """Set Btrfs NOCOW (chattr +C) on the chain directories; CoW corrupts SQLite on Btrfs."""
    require_no_cow: bool = False
    """Fail volume preparation when NOCOW cannot be set (e.g. not Btrfs) instead of reporting `unsupported`."""

    model_config = Spec.model_config | {
        "json_schema_extra": validations(
            cel("has(self.hostPath) != has(self.pvc)", "exactly one of storage.hostPath or storage.pvc must be set"),
            cel(
                "has(self.hostPath) == has(oldSelf.hostPath)",
                "the storage kind (hostPath or pvc) is immutable",
            ),
            cel(
                "!has(self.pvc) || !has(oldSelf.pvc) || quantity(string(self.pvc.size))"
                ".compareTo(quantity(string(oldSelf.pvc.size))) >= 0",
                "storage.pvc.size can grow but never shrink",
            ),
        )
    }

    @model_validator(mode="after")
    def _exactly_one(self) -> StorageSpec:
        if (self.host_path is None) == (self.pvc is None):
            raise ValueError("storage: exactly one of storage.hostPath or storage.pvc must be set")
        return self


class VolumePrepSpec(Spec):
    """The init container that prepares the chain volume (`aitbc-operator volume prepare`)."""

    privileged: bool = True
    """Run privileged as root (the runbook's sudo). False: least privilege, root with only CHOWN, FOWNER,
    DAC_OVERRIDE and LINUX_IMMUTABLE capabilities."""
    run_as_user: int = Field(default=1000, ge=1, le=2147483647)
    """UID owning the chain data, and that node and RPC run as (non-root)."""
    run_as_group: int = Field(default=1000, ge=0, le=2147483647)
    """GID owning the chain data."""
    integrity_check: Literal["quick", "full", "off"] = "quick"
    """PRAGMA quick_check, integrity_check, or none, before the node starts."""
    image: str | None = Field(default=None, max_length=512)
    """Override the image (default: the operator's own image, from its settings)."""


class MempoolSpec(Spec):
    """Where the mempool persists: SQLite (default) or PostgreSQL through an AitbcDatabase."""

    database_ref: LocalObjectReference | None = None
    """An AitbcDatabase in the same namespace; its Secret's URL becomes MEMPOOL_DB_URL.
    Remove the reference to roll back to SQLite."""


class PlacementSpec(Spec):
    """Where the node pod may run (the RPC always follows the node)."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels the pod requires."""
    tolerations: list[Toleration] = Field(default_factory=list)
    """Taints the pods tolerate."""


class AitbcNodeSpec(Spec):
    """Desired state of an AITBC blockchain node and its RPC service."""

    chains: list[str] = Field(
        min_length=1,
        max_length=MAX_CHAINS,
        json_schema_extra={
            "items": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": DNS_LABEL_PATTERN},
            **validations(cel("self.all(c, self.exists_one(d, d == c))", "chain ids must be unique")),
        },
    )
    """Chain ids served by this node, e.g. [ait-mainnet, ait-testnet]. Each gets `data/<chain>/chain.db`."""
    chain_id: str | None = Field(default=None, min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)
    """The default chain (CHAIN_ID); must be one of `chains`. Defaults to the first chain."""
    data_dir: str = Field(default=DEFAULT_DATA_DIR, pattern=ABSOLUTE_PATH_PATTERN, max_length=1024)
    """DATA_DIR inside the containers; the chain volume is mounted here."""
    redis_url: str | None = Field(default=None, pattern=r"^rediss?://.+$", max_length=1024)
    """REDIS_URL for the gossip protocol."""
    node: NodeContainerSpec
    """The blockchain node container (one replica: a single writer)."""
    rpc: RpcContainerSpec
    """The RPC container (restarted after the node, never ahead of it)."""
    storage: StorageSpec
    """Chain volume."""
    volume_prep: VolumePrepSpec = Field(default_factory=VolumePrepSpec)
    """Chain volume preparation (init container)."""
    mempool: MempoolSpec = Field(default_factory=MempoolSpec)
    """Mempool persistence."""
    placement: PlacementSpec = Field(default_factory=PlacementSpec)
    """Node pod placement."""
    rollout_timeout: str = Field(default="10m", pattern=DURATION_PATTERN, max_length=32)
    """How long the node may take to become Ready on a new configuration before the AitbcNode is Degraded
    (the RPC then stays on its previous configuration)."""
    service_account_name: str | None = Field(default=None, max_length=253)
    """ServiceAccount for node and RPC pods."""

    model_config = Spec.model_config | {
        "json_schema_extra": validations(
            cel("!has(self.chainId) || self.chainId in self.chains", "chainId must be one of chains",
                field_path=".chainId"),
        )
    }

    @field_validator("chains")
    @classmethod
    def _unique_chains(cls, chains: list[str]) -> list[str]:
        import re

        for chain in chains:
            if not re.fullmatch(DNS_LABEL_PATTERN, chain) or len(chain) > 63:
                raise ValueError(f"chain id {chain!r} must be a DNS label (lower-case letters, digits, '-')")
        dupes = sorted({c for c in chains if chains.count(c) > 1})
        if dupes:
            raise ValueError(f"chain ids must be unique; repeated: {', '.join(dupes)}")
        return chains

    @model_validator(mode="after")
    def _chain_id_in_chains(self) -> AitbcNodeSpec:
        if self.chain_id is not None and self.chain_id not in self.chains:
            raise ValueError(f"chainId {self.chain_id!r} must be one of chains {self.chains}")
        return self

    @property
    def default_chain(self) -> str:
        """CHAIN_ID: chainId, or the first chain."""
        return self.chain_id or self.chains[0]


RolloutPhase = Literal["Idle", "RollingNode", "RollingRpc", "Stalled"]


class RolloutStatus(Status):
    """Progress of the coordinated rollout (node first, then RPC)."""

    phase: RolloutPhase = "Idle"
    """Idle, RollingNode (node updating to targetHash), RollingRpc (node Ready, RPC updating) or Stalled."""
    target_hash: str | None = None
    """The configuration hash being rolled out."""
    node_hash: str | None = None
    """The configuration hash on the node's pod template."""
    rpc_hash: str | None = None
    """The configuration hash on the RPC's pod template."""
    node_restart_marker: str | None = None
    """Identity of the node pod (uid and restart count) the RPC was last restarted after."""
    started_at: datetime | None = None
    """When the current rollout started."""
    message: str | None = None
    """Detail of the current step."""


class ChainStatus(Status):
    """Per-chain information."""

    chain_id: str
    """The chain id."""
    database_url: str | None = None
    """The SQLite URL the node uses (no secret in it)."""
    height: int | None = None
    """RPC head height (GET /rpc/head?chain_id=...), when reachable."""
    height_error: str | None = None
    """Why the height could not be read (unreachable, timeout, bad response), if it could not."""


class AitbcNodeStatus(Status):
    """Observed state of an AitbcNode, written by the operator."""

    observed_generation: int | None = None
    """The metadata.generation last reconciled."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Progressing, Degraded, StorageReady, NodeReady, RpcReady."""
    config_hash: str | None = None
    """The configuration hash applied to both workloads."""
    rollout: RolloutStatus = Field(default_factory=RolloutStatus)
    """Coordinated rollout progress."""
    chains: list[ChainStatus] = Field(default_factory=list)
    """Per-chain information."""
    volume: VolumeReport | None = None
    """The init container's report on the chain volume (filesystem, NOCOW, journal mode, integrity, actions)."""
