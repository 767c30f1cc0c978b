"""Chain-data day-2 work of an AitbcNode as a pure decision: backups, restores, maintenance windows.

No I/O, no clock: the reconciler gathers an :class:`OpsSnapshot` (the spec, the day-2 parts of status, the Jobs it
found, facts about node and RPC) and applies the :class:`OpsDecision`: the new status parts, at most one Job to
create, the :class:`~aitbc_operator.rollout.Holds` the rollout must honour, Events.

The rules:

* **One thing at a time** per AitbcNode (the interlock): a backup Job, a restore or a maintenance window. What is
  requested meanwhile waits (a scheduled slot stays due, a token stays unhandled) and starts when the running one has
  ended. Something new starts only while the rollout is Idle (or Held by us).
* **Fixed Job names** from the request: ``<name>-backup-<UTC slot>``, ``-backup-now-<token digest>``,
  ``-backup-pm-<target hash>``, ``-restore-<token digest>-check|-run``, ``-maint-<UTC slot>|-now-<digest>``. The name
  is stored in status before the Job is created; a Job of that name is found again after a restart (or a lost status
  write) instead of being made twice.
* **One transition per reconcile.** Each phase has an exit condition observed on the cluster: RPC without pods,
  node without pod, the Job's Complete/Failed condition and its report (termination message), node Ready, RPC
  available. Restore: ``Verifying`` (a check-only Job while the node runs: a missing or corrupt copy is ``Refused``,
  nothing stopped), ``StoppingRpc``, ``StoppingNode``, ``Running``, ``StartingNode``, ``StartingRpc``, then
  ``Succeeded``, or ``Failed`` only after node and RPC were started again. A window with VACUUM goes the same way
  (no Verifying); one without runs while the node writes.
* **Time limits**: a window (``timeLimit``) or restore (``backup.timeout``) still stopping node or RPC past its limit
  gives up and starts both again; a running Job is bounded by its own activeDeadlineSeconds.
* **Before a migration**: when the mempool changes between SQLite and PostgreSQL, the node stays on its current
  configuration (``freeze_node``) until a backup of every chain has succeeded for that target configuration. A failed
  one is ``Degraded``/``BackupFailed`` and nothing rolls; an on-demand backup that succeeds afterwards lets it go.
* **Schedules** (schedules.py): a missed slot is skipped, never caught up in a burst.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from pydantic import ValidationError

from . import schedules
from .builders.node_jobs import JobKind, JobRequest
from .models.base import parse_duration
from .models.chain_reports import BackupReport, MaintainReport, RestoreReport
from .models.chainops import (
    BackupRun,
    BackupStatus,
    BackupTrigger,
    ChainBackupStatus,
    MaintenanceStatus,
    PreMigrationStatus,
    WorkStatus,
)
from .models.node import AitbcNodeSpec
from .rollout import POLL_SECONDS, Holds

#: On the AitbcNode: a new value asks for a backup now / a maintenance window now.
ANNOTATION_BACKUP_NOW = "aitbc.io/backup-now"
ANNOTATION_MAINTAIN_NOW = "aitbc.io/maintain-now"
#: A restore without spec.backup.timeout may stop node and RPC this long before it gives up.
DEFAULT_RESTORE_LIMIT = 3600.0

REASON_BACKUP_FAILED = "BackupFailed"
REASON_BACKUP_BEFORE_MIGRATION = "BackupBeforeMigration"
REASON_RESTORE = "RestoreInProgress"
REASON_MAINTENANCE = "MaintenanceWindow"


@dataclass(frozen=True)
class JobState:
    """A Job as observed: finished or not, how, and the report its pod left (the termination message)."""

    name: str
    finished: bool = False
    succeeded: bool = False
    reason: str | None = None
    """The Failed condition's reason (BackoffLimitExceeded, DeadlineExceeded)."""
    report: str | None = None
    """The container's termination message (a JSON report), once finished."""


@dataclass(frozen=True)
class Workloads:
    """What the phases wait for."""

    rpc_stopped: bool
    """The RPC Deployment is at 0 replicas and no RPC pod is left (or there is no RPC)."""
    node_stopped: bool
    """The node StatefulSet is at 0 replicas and its pod is gone."""
    node_ready: bool
    """The node pod is Ready."""
    rpc_available: bool
    """The RPC Deployment has an available, up-to-date pod."""
    node_host: str | None
    """The Kubernetes node of the node pod (hostPath: the pinned one)."""
    rollout_idle: bool
    """No rollout in progress (Idle, or Held by day-2 work)."""


@dataclass(frozen=True)
class OpsSnapshot:
    """Everything :func:`decide_ops` looks at."""

    owner: str
    spec: AitbcNodeSpec
    backup: BackupStatus
    restore: WorkStatus | None
    maintenance: MaintenanceStatus
    jobs: Mapping[str, JobState]
    """The AitbcNode's Jobs by name."""
    workloads: Workloads
    annotations: Mapping[str, str]
    migration_target: str | None
    """The configuration hash of a pending mempool migration (None: no migration pending)."""
    now: datetime


@dataclass
class OpsDecision:
    """What to write."""

    backup: BackupStatus
    restore: WorkStatus | None
    maintenance: MaintenanceStatus
    holds: Holds = field(default_factory=Holds)
    create: JobRequest | None = None
    events: list[tuple[str, str, bool]] = field(default_factory=list)
    degraded: tuple[str, str] | None = None
    """(reason, message) that makes the AitbcNode Degraded (a failed pre-migration backup)."""
    requeue_after: float | None = None


def digest(text: str, length: int = 8) -> str:
    """A short stable digest (Job names from tokens)."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def slot_key(slot: datetime) -> str:
    """``20261201t020000z``: a slot in a Kubernetes name."""
    return slot.strftime("%Y%m%dt%H%M%Sz")


def job_name(owner: str, suffix: str) -> str:
    """``<owner>-<suffix>``, at most 63 characters (a long owner is cut and a digest of it keeps names apart)."""
    name = f"{owner}-{suffix}"
    if len(name) <= 63:
        return name
    return f"{owner[: 63 - len(suffix) - 10]}-{digest(owner)}-{suffix}"


def _seconds(duration: str) -> float:
    return parse_duration(duration)


def backup_deadline(spec: AitbcNodeSpec) -> int:
    """activeDeadlineSeconds of a backup (and restore) Job."""
    return int(_seconds(spec.backup.timeout)) if spec.backup else int(DEFAULT_RESTORE_LIMIT)


ReportT = TypeVar("ReportT", BackupReport, RestoreReport, MaintainReport)


def _parse(model: type[ReportT], job: JobState) -> ReportT | None:
    if not job.report:
        return None
    try:
        return model.model_validate(json.loads(job.report))
    except (ValueError, ValidationError):
        return None


def _job_failure(job: JobState, error: str | None) -> str:
    if error:
        return error
    if job.reason == "DeadlineExceeded":
        return f"Job {job.name} ran past its deadline and was stopped"
    return f"Job {job.name} failed ({job.reason or 'no report'})"


# --- backups ----------------------------------------------------------------------------------------------------------


def _finish_backup(d: OpsDecision, snap: OpsSnapshot, run: BackupRun, job: JobState) -> None:
    """Per-chain outcomes into status, an Event, and the pre-migration backup's verdict."""
    report = _parse(BackupReport, job)
    results = {r.chain: r for r in (report.chains if report else [])}
    ok = job.succeeded and report is not None and report.ok
    failure = next((r.error for r in results.values() if r.error), None) or _job_failure(job, None)
    by_chain = {c.chain: c for c in d.backup.chains}
    for chain in snap.spec.chains:
        entry = by_chain.setdefault(chain, ChainBackupStatus(chain=chain))
        result = results.get(chain)
        if result is not None and result.copy_ is not None:
            entry.last_success = result.copy_.model_copy(update={"sha256": (result.copy_.sha256 or "")[:16] or None})
        elif result is None or result.error:
            entry.last_failure_time = snap.now
            entry.last_failure = ((result.error if result else None) or failure)[:300]
    d.backup.chains = [by_chain[c] for c in snap.spec.chains]
    d.backup.running = None
    if ok:
        heights = ", ".join(f"{r.chain} h{r.copy_.height}" for r in results.values() if r.copy_)
        d.events.append(("BackupSucceeded", f"{run.trigger} backup {run.job}: {heights or 'nothing to copy'}", False))
    else:
        d.events.append((REASON_BACKUP_FAILED, f"{run.trigger} backup {run.job} failed: {failure}", True))
    pre = d.backup.pre_migration
    if pre is not None and snap.migration_target == pre.target_hash and pre.phase != "Succeeded" and (
            run.trigger == "PreMigration" or ok):
        d.backup.pre_migration = PreMigrationStatus(
            target_hash=pre.target_hash, phase="Succeeded" if ok else "Failed",
            message=None if ok else f"the backup before the mempool migration failed: {failure}")


def _start_backup(d: OpsDecision, snap: OpsSnapshot, trigger: BackupTrigger, suffix: str, stamp: datetime,
                  target: str | None = None) -> None:
    host = snap.workloads.node_host
    assert host is not None
    name = job_name(snap.owner, suffix)
    d.backup.running = BackupRun(job=name, trigger=trigger, slot=stamp, node_name=host, target_hash=target)
    d.create = JobRequest(name, "backup", host, stamp, backup_deadline(snap.spec), trigger=trigger)
    d.events.append(("BackupStarted", f"{trigger} backup of {', '.join(snap.spec.chains)}: Job {name}", False))


# --- restore and maintenance windows ----------------------------------------------------------------------------------


def _limit(snap: OpsSnapshot, work: WorkStatus) -> float:
    if work.chain is None and snap.spec.maintenance is not None:
        return _seconds(snap.spec.maintenance.time_limit)
    return float(backup_deadline(snap.spec))


def _step(work: WorkStatus, phase: str, message: str, **changes: object) -> WorkStatus:
    return work.model_copy(update={"phase": phase, "message": message, **changes})


def _work_job(snap: OpsSnapshot, work: WorkStatus, suffix: str, kind: JobKind, deadline: int) -> JobRequest:
    assert work.node_name is not None
    return JobRequest(job_name(snap.owner, suffix), kind, work.node_name, snap.now, deadline,
                      chain=work.chain, backup=work.backup)


def _run_request(snap: OpsSnapshot, work: WorkStatus) -> JobRequest:
    remaining = max(60, int(_limit(snap, work) - (snap.now - (work.started_at or snap.now)).total_seconds()))
    if work.chain is not None:
        return _work_job(snap, work, f"restore-{digest(work.token or '')}-run", "restore", remaining)
    key = slot_key(work.slot) if work.slot else f"now-{digest(work.token or '')}"
    return _work_job(snap, work, f"maint-{key}", "maintain", remaining)


def _job_outcome(snap: OpsSnapshot, work: WorkStatus) -> JobState | None:
    """The current step's Job when it has finished (None while it runs)."""
    job = snap.jobs.get(work.job or "")
    return job if job is not None and job.finished else None


def _after_run(snap: OpsSnapshot, work: WorkStatus, job: JobState) -> tuple[WorkStatus, str | None]:
    """The work's result from its Job: updated status and the error, if any."""
    if work.chain is not None:
        report = _parse(RestoreReport, job)
        if job.succeeded and report is not None and report.ok:
            return work.model_copy(update={"height": report.height}), None
        return work, _job_failure(job, report.error if report else None)
    maint = _parse(MaintainReport, job)
    if job.succeeded and maint is not None and maint.ok:
        return work, None
    error = next((c.error for c in (maint.chains if maint else []) if c.error), None)
    return work, _job_failure(job, error)


def _verified(snap: OpsSnapshot, work: WorkStatus, job: JobState, d: OpsDecision) -> WorkStatus:
    report = _parse(RestoreReport, job)
    if job.succeeded and report is not None and report.ok:
        return _step(work, "StoppingRpc", f"backup {report.backup} (height {report.height}) verified; stopping"
                     " the RPC", backup=report.backup, height=report.height)
    error = _job_failure(job, report.error if report else None)
    d.events.append(("RestoreRefused", f"restore of {work.chain} refused, nothing changed: {error}", True))
    return _step(work, "Refused", f"refused, nothing changed: {error}", error=error, finished_at=snap.now)


def _finish(snap: OpsSnapshot, work: WorkStatus, d: OpsDecision) -> WorkStatus:
    """Succeeded or Failed, with an Event (node and RPC are running again by now)."""
    kind = "Restore" if work.chain is not None else "Maintenance"
    if work.error:
        d.events.append((f"{kind}Failed", f"{kind.lower()} failed, node and RPC are running again: {work.error}",
                         True))
        return _step(work, "Failed", f"failed (node and RPC running again): {work.error}", finished_at=snap.now)
    if work.chain is not None:
        detail = f"{work.chain} restored from {work.backup} (height {work.height}); node and RPC running"
    else:
        spec = snap.spec.maintenance
        ran = [name for name, on in (("checkpoint", spec is not None and spec.checkpoint), ("VACUUM", work.stops_node),
                                     ("integrity check", spec is not None and spec.integrity_check != "off")) if on]
        reclaimed = d.maintenance.reclaimed_bytes or 0
        detail = f"{', '.join(ran) or 'nothing'} done on every chain; {reclaimed} bytes reclaimed"
    d.events.append((f"{kind}Succeeded", detail, False))
    return _step(work, "Succeeded", detail, finished_at=snap.now)


def _advance_work(snap: OpsSnapshot, work: WorkStatus, d: OpsDecision) -> WorkStatus:
    """One transition of a restore or maintenance window."""
    w = snap.workloads
    elapsed = (snap.now - (work.started_at or snap.now)).total_seconds()
    if work.phase in ("StoppingRpc", "StoppingNode") and elapsed > _limit(snap, work):
        late = f"time limit of {_limit(snap, work):g}s passed while {work.phase}"
        return _step(work, "StartingNode", f"{late}; starting the node again", error=late)
    if work.phase == "Verifying":
        job = _job_outcome(snap, work)
        if job is None and work.job not in snap.jobs:  # lost between status write and create: ask again
            d.create = _work_job(snap, work, f"restore-{digest(work.token or '')}-check", "restore-check",
                                 backup_deadline(snap.spec))
        return work if job is None else _verified(snap, work, job, d)
    if work.phase == "StoppingRpc":
        return _step(work, "StoppingNode", "RPC stopped; stopping the node") if w.rpc_stopped else work
    if work.phase == "StoppingNode":
        if not w.node_stopped:
            return work
        d.create = _run_request(snap, work)
        return _step(work, "Running", f"node stopped; Job {d.create.name} running", job=d.create.name)
    if work.phase == "Running":
        job = _job_outcome(snap, work)
        if job is None:
            if work.job not in snap.jobs:  # lost between status write and create, or gone: ask again
                d.create = _run_request(snap, work)
            return work
        work, error = _after_run(snap, work, job)
        if work.chain is None:
            d.maintenance.reclaimed_bytes = (_parse(MaintainReport, job) or MaintainReport(ok=False)).reclaimed
        if not work.stops_node:
            return _finish(snap, work.model_copy(update={"error": error}), d)
        return _step(work, "StartingNode", "work done; starting the node" if error is None else
                     f"{error}; starting the node again", error=error)
    if work.phase == "StartingNode":
        return _step(work, "StartingRpc", "node Ready; starting the RPC") if w.node_ready else work
    if work.phase == "StartingRpc" and w.rpc_available:
        return _finish(snap, work, d)
    return work


def work_holds(work: WorkStatus | None) -> Holds:
    """What a restore or window in ``work.phase`` holds."""
    if work is None or work.done or not work.stops_node:
        return Holds()
    reason = REASON_RESTORE if work.chain is not None else REASON_MAINTENANCE
    message = f"{'restore of ' + work.chain if work.chain else 'maintenance window'}: {work.phase}"
    if work.phase in ("StoppingRpc", "StartingNode"):
        return Holds(stop_rpc=True, reason=reason, message=message)
    if work.phase in ("StoppingNode", "Running"):
        return Holds(stop_rpc=True, stop_node=True, reason=reason, message=message)
    if work.phase == "StartingRpc":
        return Holds(freeze_node=True, reason=reason, message=message)
    return Holds()


# --- starting something new -------------------------------------------------------------------------------------------


def _schedule_due(spec_schedule: str | None, time_zone: str, last: datetime | None,
                  now: datetime) -> tuple[datetime | None, datetime | None, datetime | None]:
    """(due slot, last slot to record, next slot) of a schedule."""
    if spec_schedule is None:
        return None, last, None
    if last is None:  # first sight: the schedule starts now
        return None, schedules.previous_slot(spec_schedule, time_zone, now), \
            schedules.next_slot(spec_schedule, time_zone, now)
    return schedules.due_slot(spec_schedule, time_zone, last, now), last, \
        schedules.next_slot(spec_schedule, time_zone, now)


def _start_restore(d: OpsDecision, snap: OpsSnapshot) -> bool:
    restore = snap.spec.restore
    if restore is None or (snap.restore is not None and snap.restore.token == restore.token):
        return False
    work = WorkStatus(phase="Verifying", token=restore.token, chain=restore.chain, backup=restore.backup,
                      node_name=snap.workloads.node_host, started_at=snap.now,
                      message=f"verifying backup {restore.backup} of {restore.chain}")
    d.create = _work_job(snap, work, f"restore-{digest(restore.token)}-check", "restore-check",
                         backup_deadline(snap.spec))
    d.restore = work.model_copy(update={"job": d.create.name})
    d.events.append(("RestoreStarted", f"restore of {restore.chain} from {restore.backup} requested", False))
    return True


def _start_window(d: OpsDecision, snap: OpsSnapshot, slot: datetime | None, token: str | None) -> None:
    spec = snap.spec.maintenance
    assert spec is not None
    work = WorkStatus(phase="StoppingRpc" if spec.vacuum else "Running", token=token, slot=slot,
                      stops_node=spec.vacuum, node_name=snap.workloads.node_host, started_at=snap.now,
                      message="stopping the RPC for VACUUM" if spec.vacuum else "running while the node writes")
    if not spec.vacuum:
        d.create = _run_request(snap, work)
        work = work.model_copy(update={"job": d.create.name})
    d.maintenance.window = work
    d.events.append(("MaintenanceStarted", f"maintenance window ({'VACUUM, ' if spec.vacuum else ''}"
                     f"{'slot ' + slot.isoformat() if slot else 'on demand'})", False))


def _start_next(d: OpsDecision, snap: OpsSnapshot) -> None:
    """Start at most one piece of work, in order: pre-migration backup, restore, backups, maintenance."""
    spec, now, target = snap.spec, snap.now, snap.migration_target
    pre = d.backup.pre_migration
    backup_slot, d.backup.last_schedule_time, d.backup.next_schedule_time = _schedule_due(
        spec.backup.schedule if spec.backup else None, spec.backup.time_zone if spec.backup else "UTC",
        d.backup.last_schedule_time, now)
    maint_slot, d.maintenance.last_schedule_time, d.maintenance.next_schedule_time = _schedule_due(
        spec.maintenance.schedule if spec.maintenance else None,
        spec.maintenance.time_zone if spec.maintenance else "UTC", d.maintenance.last_schedule_time, now)
    if not snap.workloads.rollout_idle or snap.workloads.node_host is None:
        return
    manual = snap.annotations.get(ANNOTATION_BACKUP_NOW)
    if target is not None and (pre is None or pre.target_hash != target):
        d.backup.pre_migration = PreMigrationStatus(target_hash=target, phase="Running")
        _start_backup(d, snap, "PreMigration", f"backup-pm-{target[:12]}", now, target)
    elif manual and manual != d.backup.manual_token:
        d.backup.manual_token = manual
        _start_backup(d, snap, "Manual", f"backup-now-{digest(manual)}", now)
    elif target is not None:
        return  # a migration waits for its backup: nothing else starts
    elif _start_restore(d, snap):
        return
    elif backup_slot is not None:
        d.backup.last_schedule_time = backup_slot
        _start_backup(d, snap, "Schedule", f"backup-{slot_key(backup_slot)}", backup_slot)
    elif spec.maintenance is not None:
        manual_window = snap.annotations.get(ANNOTATION_MAINTAIN_NOW)
        if manual_window and manual_window != d.maintenance.manual_token:
            d.maintenance.manual_token = manual_window
            _start_window(d, snap, None, manual_window)
        elif maint_slot is not None:
            d.maintenance.last_schedule_time = maint_slot
            _start_window(d, snap, maint_slot, None)


# --- the decision -----------------------------------------------------------------------------------------------------


def _advance_backup(d: OpsDecision, snap: OpsSnapshot, run: BackupRun) -> None:
    job = snap.jobs.get(run.job)
    if job is None:  # the create was lost (or the Job is gone before its result was read): ask again
        d.create = JobRequest(run.job, "backup", run.node_name or snap.workloads.node_host or "",
                              run.slot or snap.now, backup_deadline(snap.spec), trigger=run.trigger)
    elif job.finished:
        _finish_backup(d, snap, run, job)


def _holds(d: OpsDecision, snap: OpsSnapshot) -> Holds:
    held = work_holds(d.restore) if d.restore is not None and not d.restore.done else Holds()
    if not held.active and d.maintenance.window is not None:
        held = work_holds(d.maintenance.window)
    pre = d.backup.pre_migration
    if not held.active and snap.migration_target is not None and (
            pre is None or pre.target_hash != snap.migration_target or pre.phase != "Succeeded"):
        held = Holds(freeze_node=True, reason=REASON_BACKUP_BEFORE_MIGRATION,
                     message="the mempool migration waits for a backup of every chain")
    return held


def decide_ops(snap: OpsSnapshot) -> OpsDecision:
    """The next step of the day-2 work (see the module docstring)."""
    d = OpsDecision(backup=snap.backup.model_copy(deep=True),
                    restore=snap.restore.model_copy(deep=True) if snap.restore else None,
                    maintenance=snap.maintenance.model_copy(deep=True))
    window = d.maintenance.window
    if d.backup.running is not None:
        _advance_backup(d, snap, d.backup.running)
        _refresh_next_slots(d, snap)
    elif d.restore is not None and not d.restore.done:
        d.restore = _advance_work(snap, d.restore, d)
        _refresh_next_slots(d, snap)
    elif window is not None and not window.done:
        d.maintenance.window = _advance_work(snap, window, d)
        _refresh_next_slots(d, snap)
    else:
        _start_next(d, snap)
    d.holds = _holds(d, snap)
    pre = d.backup.pre_migration
    if pre is not None and pre.phase == "Failed" and pre.target_hash == snap.migration_target:
        d.degraded = (REASON_BACKUP_FAILED, f"{pre.message}; nothing was rolled (set the annotation"
                      f" {ANNOTATION_BACKUP_NOW} to try again)")
    busy = d.backup.running is not None or d.holds.active or d.create is not None or (
        d.restore is not None and not d.restore.done) or (d.maintenance.window is not None and
                                                          not d.maintenance.window.done)
    d.requeue_after = POLL_SECONDS if busy else _until_next(d, snap.now)
    return d


def _refresh_next_slots(d: OpsDecision, snap: OpsSnapshot) -> None:
    """Keep the next slot times current while something runs (due slots wait)."""
    spec = snap.spec
    if spec.backup is not None and spec.backup.schedule:
        d.backup.next_schedule_time = schedules.next_slot(spec.backup.schedule, spec.backup.time_zone, snap.now)
    if spec.maintenance is not None and spec.maintenance.schedule:
        d.maintenance.next_schedule_time = schedules.next_slot(spec.maintenance.schedule,
                                                               spec.maintenance.time_zone, snap.now)


def _until_next(d: OpsDecision, now: datetime) -> float | None:
    slots = [t for t in (d.backup.next_schedule_time, d.maintenance.next_schedule_time) if t is not None]
    if not slots:
        return None
    return max(1.0, (min(slots) - now + timedelta(seconds=1)).total_seconds())
