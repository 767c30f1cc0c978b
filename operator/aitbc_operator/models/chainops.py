"""Chain-data day-2 parts of the AitbcNode: backups, a restore request, maintenance windows, chain health.

Spec parts are validated twice, as everywhere: the CRD (schema and CEL) refuses what it can express, the model
(cronsim for schedules, zoneinfo for time zones) the rest, which the reconciler then reports as Degraded/InvalidSpec.
Status parts hold the choices already made (which Job, which backup, which Kubernetes node), so an operator restart
mid-phase goes on instead of choosing again.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from .. import schedules
from .base import DNS_LABEL_PATTERN, DURATION_PATTERN, Quantity, Spec, Status, cel, validations
from .chain_reports import BACKUP_SELECTOR_PATTERN, BackupCopy
from .rules import cel_string

#: Five fields, as CronJob's ``schedule``; cronsim then reads the fields themselves.
CRON_SHAPE = r"^\S+( \S+){4}$"
CRON_MESSAGE = "must be a cron expression of five fields (minute hour day-of-month month day-of-week)"
TIME_ZONE_PATTERN = r"^[A-Za-z0-9_+\-/]+$"
TOKEN_PATTERN = r"^[A-Za-z0-9]([-._A-Za-z0-9]{0,61}[A-Za-z0-9])?$"  # noqa: S105 (a request id, not a secret)

_QUANTITY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
                      "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "": 1}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


#: storage.pvc.autoExpand.increase: a percentage or a storage quantity (of the suffixes quantity_bytes reads).
INCREASE_PATTERN = r"^([1-9][0-9]{0,2}%|[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?)$"


def quantity_bytes(value: int | str) -> int:
    """Bytes in a storage quantity (``512Mi``, ``1G``, ``1073741824``). Written here: the Kubernetes client's parser
    may not be imported by the pure layers, and storage sizes use only these suffixes."""
    if isinstance(value, int):
        return value
    match = _QUANTITY.fullmatch(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a storage quantity such as 512Mi or 1Gi")
    return int(float(match.group(1)) * _QUANTITY_SUFFIXES[match.group(2) or ""])


def _check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timeZone {value!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None
    return value


def _schedule_field(default: Any = ...) -> Any:
    rule = cel(f"self.matches({cel_string(CRON_SHAPE)})", f"schedule {CRON_MESSAGE}")
    return Field(default, min_length=1, max_length=128, json_schema_extra=validations(rule))


class Scheduled(Spec):
    """A cron schedule in a time zone (the operator schedules: no CronJob)."""

    schedule: str | None = _schedule_field(None)
    """Cron expression, e.g. ``0 2 * * *``; unset: only on demand."""
    time_zone: str = Field(default="UTC", max_length=64, pattern=TIME_ZONE_PATTERN)
    """IANA time zone the schedule is read in (e.g. Europe/Berlin); UTC by default."""

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str | None) -> str | None:
        return None if value is None else schedules.check(value)

    @field_validator("time_zone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        return _check_zone(value)


class BackupRetention(Spec):
    """Which copies are kept per chain. The newest verified copy is never deleted, whatever these say."""

    count: int = Field(default=7, ge=1, le=1000)
    """At most this many copies per chain (the newest)."""
    max_age: str | None = Field(default=None, pattern=DURATION_PATTERN, max_length=32)
    """Copies older than this are removed too, e.g. 720h."""


class BackupVolume(Spec):
    """The backup volume claim, ``<name>-backups`` (kept when the AitbcNode is deleted)."""

    size: Quantity = "10Gi"
    """Requested size."""
    storage_class_name: str | None = Field(default=None, max_length=253)
    """Storage class; the cluster default when unset."""


class BackupSpec(Scheduled):
    """Online copies of every chain database (SQLite's backup API, while the node writes), as Jobs of the operator's
    image on the node pod's Kubernetes node. On demand: annotation ``aitbc.io/backup-now: <token>``."""

    keep: BackupRetention = Field(default_factory=BackupRetention)
    """Retention per chain."""
    destination: Literal["Volume", "ChainVolume"] = "Volume"
    """Volume (default): a claim of its own, which survives the loss of the chain volume. ChainVolume: the chain
    volume's ``backups/`` directory."""
    volume: BackupVolume = Field(default_factory=BackupVolume)
    """The claim, with destination Volume."""
    verify: bool = True
    """Run integrity_check on every copy; a copy that fails it is a failed backup."""
    timeout: str = Field(default="1h", pattern=DURATION_PATTERN, max_length=32)
    """A backup Job running longer is stopped (activeDeadlineSeconds) and counts as failed."""
    before_migration: bool = True
    """Back up every chain before adding or removing mempool.databaseRef rolls the node (the runbook's rule; also
    done without spec.backup, into the chain volume's backups/). False: roll at once."""


class RestoreSpec(Spec):
    """A restore request: RPC stopped, node stopped, the copy verified and put in place, node started, RPC started.

    A new ``token`` is a new request; the one handled is in ``status.restore.token``.
    """

    chain: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)
    """The chain to restore (one of chains)."""
    backup: str = Field(default="latest-verified", pattern=BACKUP_SELECTOR_PATTERN)
    """A copy's file name (``chain-20261201T020000Z-h123.db``), ``latest`` or ``latest-verified``."""
    token: str = Field(pattern=TOKEN_PATTERN)
    """Identifies this request (change it to restore again)."""


class MaintenanceSpec(Scheduled):
    """Maintenance windows. With vacuum the node is stopped (RPC down, node down, work, node up, RPC up); without,
    the work runs while the node writes. On demand: annotation ``aitbc.io/maintain-now: <token>``."""

    checkpoint: bool = True
    """PRAGMA wal_checkpoint(TRUNCATE)."""
    vacuum: bool = False
    """VACUUM (needs the node stopped)."""
    integrity_check: Literal["full", "quick", "off"] = "full"
    """PRAGMA integrity_check (full) or quick_check after the work."""
    time_limit: str = Field(default="15m", pattern=DURATION_PATTERN, max_length=32)
    """The window ends at this: the work is stopped and node and RPC are started again."""


class StaleRpcSpec(Spec):
    """When the RPC's head height stays behind the file's height."""

    threshold: int = Field(default=10, ge=1, le=1000000)
    """Blocks the RPC may lag the file."""
    grace_period: str = Field(default="2m", pattern=DURATION_PATTERN, max_length=32)
    """How long it may lag by more than the threshold before it is RpcStale (and restarted)."""
    restart: bool = True
    """Restart the RPC when stale (at most once per grace period; never while the node is rolling)."""


class HealthSpec(Spec):
    """The chain-health sidecar (``aitbc-operator volume serve`` in the node pod) and what its figures trigger."""

    enabled: bool = True
    """Run the sidecar (read-only: it opens the chain databases with mode=ro)."""
    port: int = Field(default=8090, ge=1, le=65535)
    """Its port: GET /chains (JSON) and /metrics (Prometheus)."""
    stale_rpc: StaleRpcSpec = Field(default_factory=StaleRpcSpec)
    """Stale-RPC detection."""
    wal_limit: Quantity = "1Gi"
    """A -wal larger than this raises the ChainHealthWarning condition."""
    volume_fill_percent: int = Field(default=90, ge=1, le=100)
    """A volume fuller than this raises the ChainHealthWarning condition."""

    @field_validator("wal_limit")
    @classmethod
    def _storage_quantity(cls, value: int | str) -> int | str:
        quantity_bytes(value)
        return value


# --- status -----------------------------------------------------------------------------------------------------------

BackupTrigger = Literal["Schedule", "Manual", "PreMigration"]
WorkPhase = Literal["Pending", "Verifying", "StoppingRpc", "StoppingNode", "Running", "StartingNode", "StartingRpc",
                    "Succeeded", "Failed", "Refused"]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed", "Refused"})


class BackupRun(Status):
    """The backup Job in flight."""

    job: str
    """Its name (fixed from the slot or the token)."""
    trigger: BackupTrigger
    """Schedule, Manual or PreMigration."""
    slot: datetime | None = None
    """The scheduled slot (Schedule), else when it was started."""
    node_name: str | None = None
    """The Kubernetes node it runs on."""
    target_hash: str | None = None
    """PreMigration: the configuration hash the node rolls to once every chain is copied."""


class ChainBackupStatus(Status):
    """The last outcome per chain."""

    chain: str
    """Chain id."""
    last_success: BackupCopy | None = None
    """The newest copy made."""
    last_failure_time: datetime | None = None
    """When the last failed copy was attempted."""
    last_failure: str | None = None
    """Why it failed."""


class PreMigrationStatus(Status):
    """The backup that a mempool migration waits for."""

    target_hash: str
    """The configuration the node may roll to after it."""
    phase: Literal["Running", "Succeeded", "Failed"]
    """Its state."""
    message: str | None = None
    """Why it failed."""


class BackupStatus(Status):
    """Backups: what runs, what was last made per chain, when the next one is due."""

    last_schedule_time: datetime | None = None
    """The last slot run (or skipped)."""
    next_schedule_time: datetime | None = None
    """The next slot."""
    manual_token: str | None = None
    """The last ``aitbc.io/backup-now`` token handled."""
    running: BackupRun | None = None
    """The Job in flight."""
    pre_migration: PreMigrationStatus | None = None
    """The pre-migration backup of the current mempool change."""
    chains: list[ChainBackupStatus] = Field(default_factory=list)
    """Per chain."""


class WorkStatus(Status):
    """A restore or a maintenance window, step by step (one step per reconcile)."""

    phase: WorkPhase
    """Pending, Verifying (restore), StoppingRpc, StoppingNode, Running, StartingNode, StartingRpc, then Succeeded,
    Failed (node and RPC were started again first) or Refused (nothing was changed)."""
    token: str | None = None
    """The request's token (restore, on-demand window)."""
    slot: datetime | None = None
    """The scheduled slot (maintenance)."""
    stops_node: bool = True
    """Whether node and RPC are stopped for the work."""
    chain: str | None = None
    """Restore: the chain."""
    backup: str | None = None
    """Restore: the copy, resolved (a file name)."""
    height: int | None = None
    """Restore: MAX(height) in the copy."""
    node_name: str | None = None
    """The Kubernetes node the Jobs run on (chosen once, when the work started)."""
    job: str | None = None
    """The Job of the current step."""
    started_at: datetime | None = None
    """When the work started."""
    finished_at: datetime | None = None
    """When it ended."""
    error: str | None = None
    """Why it failed (kept while node and RPC are started again)."""
    message: str | None = None
    """The current step, or the outcome."""

    @property
    def done(self) -> bool:
        """Terminal: nothing more happens until a new request."""
        return self.phase in TERMINAL_PHASES


class MaintenanceStatus(Status):
    """Maintenance windows: the current or last one, and the schedule."""

    last_schedule_time: datetime | None = None
    """The last slot run (or skipped)."""
    next_schedule_time: datetime | None = None
    """The next slot."""
    manual_token: str | None = None
    """The last ``aitbc.io/maintain-now`` token handled."""
    window: WorkStatus | None = None
    """The current or last window."""
    reclaimed_bytes: int | None = None
    """What the last window gave back (chain.db + -wal, all chains)."""


class HealthStatus(Status):
    """What the health decisions remember."""

    rpc_restarts: int = 0
    """Restarts of the RPC for staleness (the RPC's template carries the count)."""
    last_rpc_restart: datetime | None = None
    """When the RPC was last restarted for staleness."""
    observed_at: datetime | None = None
    """When the sidecar last answered."""
    volume_free_percent: float | None = None
    """Free space on the chain volume, percent."""


class VolumeExpansionStatus(Status):
    """The last auto-expansion of the chain volume claim (storage.pvc.autoExpand)."""

    time: datetime
    """When the operator raised the claim's request."""
    from_size: str
    """The request before."""
    to_size: str
    """The request written."""
