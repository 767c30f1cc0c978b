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
from .chainops import (
    INCREASE_PATTERN,
    BackupSpec,
    BackupStatus,
    HealthSpec,
    HealthStatus,
    MaintenanceSpec,
    MaintenanceStatus,
    RestoreSpec,
    VolumeExpansionStatus,
    WorkStatus,
    quantity_bytes,
)
from .rules import (
    FORBIDDEN_HOST_PATH_MESSAGE,
    IMAGE_REFERENCE,
    IMAGE_REFERENCE_MESSAGE,
    NORMALISED_PATH_MESSAGE,
    cel_is_allowed_host_path,
    cel_is_normalised_path,
    cel_list,
    cel_string,
    is_forbidden_host_path,
    is_image_reference,
    is_normalised_path,
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
#: Environment names the operator always sets (or, DATABASE_URL, always keeps unset) for node and RPC; besides these
#: it owns ``CHAIN_DB_URL_<CHAIN>`` of every chain, ``REDIS_URL`` with ``redisUrl`` and ``MEMPOOL_DB_URL`` with
#: ``mempool.databaseRef`` (builders/node_config.py: reserved_env_names, which a unit test holds to these).
OPERATOR_ENV_NAMES = ("DATA_DIR", "CHAIN_ID", "CHAINS", "CHAIN_DB_URL", "DATABASE_URL")
CHAIN_DB_URL_PREFIX = "CHAIN_DB_URL_"
ENV_REDIS_URL = "REDIS_URL"
ENV_MEMPOOL_DB_URL = "MEMPOOL_DB_URL"


def _image_rule(what: str) -> dict[str, Any]:
    return validations(cel(f"self.matches({cel_string(IMAGE_REFERENCE)})", f"{what} {IMAGE_REFERENCE_MESSAGE}"))


def _check_image(what: str, value: str) -> str:
    if not is_image_reference(value):
        raise ValueError(f"{what} {value!r} {IMAGE_REFERENCE_MESSAGE}")
    return value


def _normalised_path_rule(what: str, *more: dict[str, str]) -> dict[str, Any]:
    return validations(cel(cel_is_normalised_path("self"), f"{what} {NORMALISED_PATH_MESSAGE}"), *more)


def _check_normalised_path(what: str, value: str) -> str:
    if not is_normalised_path(value):
        raise ValueError(f"{what} {value!r} {NORMALISED_PATH_MESSAGE}")
    return value


def _reserved_env_rule(container: str) -> dict[str, str]:
    """CEL at spec level (it needs chains, redisUrl and mempool): ``<container>.env`` sets no operator-owned name."""
    env = f"self.{container}.env"
    reserved = (
        f"e.name in {cel_list(OPERATOR_ENV_NAMES)}"
        f" || self.chains.exists(c, e.name == {cel_string(CHAIN_DB_URL_PREFIX)} + c.upperAscii().replace('-', '_'))"
        f" || (has(self.redisUrl) && e.name == {cel_string(ENV_REDIS_URL)})"
        f" || (has(self.mempool) && has(self.mempool.databaseRef) && e.name == {cel_string(ENV_MEMPOOL_DB_URL)})"
    )
    return cel(
        f"!has({env}) || {env}.all(e, !({reserved}))",
        f"{container}.env must not set a variable the operator sets: {', '.join(OPERATOR_ENV_NAMES)},"
        f" {CHAIN_DB_URL_PREFIX}<CHAIN> of each chain, {ENV_REDIS_URL} (with redisUrl), {ENV_MEMPOOL_DB_URL}"
        " (with mempool.databaseRef)",
        field_path=f".{container}.env",
    )


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

    image: str = Field(min_length=1, max_length=512, json_schema_extra=_image_rule("image"))
    """Container image, e.g. ghcr.io/aitbc/blockchain-node:1.0 (a reference as the container runtime reads it)."""
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

    @field_validator("image")
    @classmethod
    def _image_reference(cls, value: str) -> str:
        return _check_image("image", value)


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

    path: str = Field(
        default=DEFAULT_DATA_DIR, pattern=ABSOLUTE_PATH_PATTERN, max_length=4096,
        json_schema_extra=_normalised_path_rule(
            "storage.hostPath.path",
            cel(cel_is_allowed_host_path("self"), f"storage.hostPath.path {FORBIDDEN_HOST_PATH_MESSAGE}"),
            cel("self == oldSelf", "storage.hostPath.path is immutable (create a new AitbcNode to move the data)"),
        ),
    )
    """Directory on the Kubernetes node. Immutable. It must lie under one of the prefixes the operator's settings
    allow (AITBC_NODE_HOSTPATH_PREFIXES, default /var/lib/aitbc) and is never /, /etc, /proc, /sys, /dev, /var/run,
    /run, /root, /boot or /usr, a path under one of them or a directory containing one."""
    node_name: str = Field(
        min_length=1, max_length=253,
        json_schema_extra=validations(cel("self == oldSelf", "storage.hostPath.nodeName is immutable")),
    )
    """The Kubernetes node holding the data; node and RPC pods are pinned to it. Immutable."""

    @field_validator("path")
    @classmethod
    def _allowed_path(cls, value: str) -> str:
        _check_normalised_path("storage.hostPath.path", value)
        if is_forbidden_host_path(value):
            raise ValueError(f"storage.hostPath.path {value!r} {FORBIDDEN_HOST_PATH_MESSAGE}")
        return value


class PvcAutoExpand(Spec):
    """Grow the chain volume claim as it fills (its StorageClass must allow volume expansion): when the health
    sidecar finds the volume at least usedPercent full, the claim's request is raised by increase, up to maxSize;
    never while a resize is in progress, nor twice within cooldown, never shrunk."""

    used_percent: int = Field(default=80, ge=1, le=99)
    """Expand when the volume is at least this full (percent of its size)."""
    increase: str = Field(
        default="10%", max_length=32, pattern=INCREASE_PATTERN,
        json_schema_extra=validations(cel(
            "self.endsWith('%') || quantity(self).isGreaterThan(quantity('0'))",
            "storage.pvc.autoExpand.increase must be a percentage (1% to 999%) or a quantity above 0",
        )),
    )
    """How much to add each time: a percentage of the current request (e.g. 10%) or a quantity (e.g. 5Gi)."""
    max_size: Quantity
    """The request is never raised above this (at it: the ChainHealthWarning of a full volume stays, with
    VolumeExpansionWarning MaxSizeReached)."""
    cooldown: str = Field(default="10m", pattern=DURATION_PATTERN, max_length=32)
    """At least this long between two expansions (the filesystem takes time to grow after the claim)."""

    @field_validator("max_size")
    @classmethod
    def _storage_quantity(cls, value: int | str) -> int | str:
        quantity_bytes(value)
        return value

    @field_validator("increase")
    @classmethod
    def _positive(cls, value: str) -> str:
        if not value.endswith("%") and quantity_bytes(value) <= 0:
            raise ValueError("storage.pvc.autoExpand.increase must be a percentage (1% to 999%) or a quantity above 0")
        return value


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
    auto_expand: PvcAutoExpand | None = None
    """Raise the claim's request as the volume fills, up to a maximum (off when unset)."""

    model_config = Spec.model_config | {
        "json_schema_extra": validations(cel(
            "!has(self.autoExpand) || quantity(string(self.autoExpand.maxSize))"
            ".compareTo(quantity(string(self.size))) >= 0",
            "storage.pvc.autoExpand.maxSize must be at least storage.pvc.size",
        ))
    }

    @model_validator(mode="after")
    def _max_not_below_size(self) -> PvcStorage:
        if self.auto_expand is not None and quantity_bytes(self.auto_expand.max_size) < quantity_bytes(self.size):
            raise ValueError("storage.pvc.autoExpand.maxSize must be at least storage.pvc.size")
        return self


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

    privileged: bool = False
    """False (default): least privilege, root with only the CHOWN, FOWNER, DAC_OVERRIDE and LINUX_IMMUTABLE
    capabilities, which does all of the work on Btrfs. True: privileged root (the runbook's sudo), only where the
    operator's settings allow it (AITBC_NODE_ALLOW_PRIVILEGED)."""
    run_as_user: int = Field(default=1000, ge=1, le=2147483647)
    """UID owning the chain data, and that node and RPC run as (non-root)."""
    run_as_group: int = Field(default=1000, ge=0, le=2147483647)
    """GID owning the chain data."""
    integrity_check: Literal["quick", "full", "off"] = "quick"
    """PRAGMA quick_check, integrity_check, or none, before the node starts."""
    image: str | None = Field(default=None, max_length=512, json_schema_extra=_image_rule("volumePrep.image"))
    """Override the image (default: the operator's own image). Only an image the operator's settings list
    (AITBC_NODE_VOLUME_PREP_IMAGES) is accepted: this container runs as root on the chain volume."""

    @field_validator("image")
    @classmethod
    def _image_reference(cls, value: str | None) -> str | None:
        return None if value is None else _check_image("volumePrep.image", value)


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
    data_dir: str = Field(
        default=DEFAULT_DATA_DIR, pattern=ABSOLUTE_PATH_PATTERN, max_length=1024,
        json_schema_extra=_normalised_path_rule(
            "dataDir", cel("self == oldSelf", "dataDir is immutable (the chain URLs and the volume layout follow it)"),
        ),
    )
    """DATA_DIR inside the containers; the chain volume is mounted here. Immutable."""
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
    backup: BackupSpec | None = None
    """Scheduled and on-demand backups of every chain database. Without it, the backups a mempool migration takes
    first go to the chain volume's backups/ directory."""
    restore: RestoreSpec | None = None
    """A restore request (one chain, one copy)."""
    maintenance: MaintenanceSpec | None = None
    """Maintenance windows (checkpoint, VACUUM, integrity check)."""
    health: HealthSpec = Field(default_factory=HealthSpec)
    """The chain-health sidecar, stale-RPC detection, WAL and disk warnings."""

    model_config = Spec.model_config | {
        "json_schema_extra": validations(
            cel("!has(self.chainId) || self.chainId in self.chains", "chainId must be one of chains",
                field_path=".chainId"),
            # Not mirrored in the model: a spec stored before this rule existed (or under an older CRD) keeps working,
            # the operator's values win and reconcilers/node.py posts a Warning Event naming the ignored variables.
            _reserved_env_rule("node"),
            _reserved_env_rule("rpc"),
            cel("!has(self.restore) || self.restore.chain in self.chains", "restore.chain must be one of chains",
                field_path=".restore.chain"),
        )
    }

    @field_validator("data_dir")
    @classmethod
    def _normalised_data_dir(cls, value: str) -> str:
        return _check_normalised_path("dataDir", value)

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
        if self.restore is not None and self.restore.chain not in self.chains:
            raise ValueError(f"restore.chain {self.restore.chain!r} must be one of chains {self.chains}")
        if self.health.enabled and self.health.port == self.node.port:
            raise ValueError(f"health.port {self.health.port} is the node's port: the sidecar needs another one")
        return self

    @property
    def default_chain(self) -> str:
        """CHAIN_ID: chainId, or the first chain."""
        return self.chain_id or self.chains[0]


RolloutPhase = Literal["Idle", "RollingNode", "RollingRpc", "Stalled", "Held"]


class RolloutStatus(Status):
    """Progress of the coordinated rollout (node first, then RPC)."""

    phase: RolloutPhase = "Idle"
    """Idle, RollingNode (node updating to targetHash), RollingRpc (node Ready, RPC updating), Stalled, or Held
    (a backup, restore or maintenance window holds the node or the RPC: see backup, restore, maintenance)."""
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
    file_height: int | None = None
    """MAX(height) in the chain database (from the health sidecar)."""
    size: int | None = None
    """chain.db bytes."""
    wal_size: int | None = None
    """chain.db-wal bytes."""
    integrity: str | None = None
    """The sidecar's last quick_check: ok, corrupt, missing."""
    stale_since: datetime | None = None
    """Since when the RPC has been behind the file by more than the threshold."""


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
    backup: BackupStatus | None = None
    """Backups: the Job in flight, the last copy per chain, the next slot."""
    restore: WorkStatus | None = None
    """The current or last restore."""
    maintenance: MaintenanceStatus | None = None
    """Maintenance windows."""
    health: HealthStatus | None = None
    """Chain health: stale-RPC restarts, the sidecar's last answer."""
    volume_expansion: VolumeExpansionStatus | None = None
    """The last auto-expansion of the chain volume claim (storage.pvc.autoExpand)."""
