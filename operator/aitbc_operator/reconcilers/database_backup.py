"""Scheduled and on-demand dumps of an AitbcDatabase: the CronJob, the on-demand Job, and their outcomes in status.

The CronJob schedules (``concurrencyPolicy: Forbid``, ``startingDeadlineSeconds``: a missed run is skipped, never
caught up; suspended while a restore runs). Each Job's result comes back in its pod's termination message as a
``DumpReport`` and is recorded in ``status.backup`` when the Job finishes (the Job watch triggers a reconcile at once;
the CronJob keeps the last three Jobs of each outcome, so a result is never lost to its history limit). An on-demand
dump has a Job name fixed by its token (``aitbc.io/backup-now``): looked up first and adopted when it is ours, so a
lost status write never makes a second dump.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from .. import conditions, schedules
from ..builders.common import LABEL_COMPONENT, LABEL_OWNER
from ..builders.database_backup import COMPONENT_BACKUP, backup_cron_job, cron_job_name, default_image, on_demand_job
from ..k8s import resources as r
from ..k8s.client import Kube
from ..k8s.ownership import ownership_conflict
from ..models.database import AitbcDatabaseSpec, AitbcDatabaseStatus, BackupStatus
from ..models.dump_report import DumpReport
from .common import job_pods
from .database_policy import BACKUP_ANNOTATION

#: How often a restore's running Job is looked at when no watch event comes (a restore is short and watched).
JOB_POLL = 5.0


@dataclass(frozen=True)
class JobOutcome:
    """A Job as far as the operator cares: finished or not, and its report."""

    name: str
    finished: bool
    succeeded: bool = False
    finished_at: datetime | None = None
    report: DumpReport | None = None
    message: str = ""


def job_finished(job: Mapping[str, Any]) -> tuple[bool, bool, datetime | None, str]:
    """(finished, succeeded, when, the Failed condition's reason and message) of a Job."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True" or cond.get("type") not in ("Complete", "Failed"):
            continue
        when = cond.get("lastTransitionTime")
        at = datetime.fromisoformat(when.replace("Z", "+00:00")) if when else None
        detail = f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ")
        return True, cond["type"] == "Complete", at, detail
    return False, False, None, ""


def parse_report(message: str | None) -> DumpReport | None:
    """The DumpReport of a termination message (None when it is not one, e.g. the log tail of a crash)."""
    if not message:
        return None
    try:
        return DumpReport.model_validate_json(message.strip().splitlines()[-1])
    except (ValidationError, ValueError):
        return None


async def job_outcome(kube: Kube, namespace: str, job: Mapping[str, Any]) -> JobOutcome:
    """Read a finished Job's report from its pod's termination message."""
    name = job["metadata"]["name"]
    finished, succeeded, at, detail = job_finished(job)
    if not finished:
        return JobOutcome(name, False)
    pods = await job_pods(kube, namespace, job)
    message = ""
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", "")):
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            message = terminated.get("message") or message
    report = parse_report(message)
    if report is not None and not report.ok:
        succeeded = False
    text = (report.error if report is not None and report.error else "") or detail or message[-300:]
    return JobOutcome(name, True, succeeded, at, report, text)


async def read_job(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    """A Job by name."""
    return await kube.get(r.JOB, namespace, name)


@dataclass
class BackupOutcome:
    """What converging the backups did."""

    status: BackupStatus | None
    events: list[tuple[str, str, bool]] = field(default_factory=list)


def image_for(spec: AitbcDatabaseSpec, server_version: str) -> str:
    """The dump image: the spec's, or the official postgres image of the server's major."""
    assert spec.backup is not None
    return spec.backup.image or default_image(server_version)


def next_run(schedule: str, now: datetime) -> datetime:
    """The next start of a cron schedule after ``now`` (UTC)."""
    return schedules.next_slot(schedule, "UTC", now)


async def converge_backup(kube: Kube, body: Mapping[str, Any], spec: AitbcDatabaseSpec, status: AitbcDatabaseStatus,
                          *, server_version: str, ca: bool, suspend: bool, now: datetime) -> BackupOutcome:
    """The CronJob as the spec says (suspended during a restore), the on-demand Job, the last outcome in status."""
    meta = body["metadata"]
    namespace = meta["namespace"]
    if spec.backup is None:
        if cron_job_may_exist(body, status):
            await _remove_cron_job(kube, body)
        return BackupOutcome(None)
    image = image_for(spec, server_version)
    current = (status.backup or BackupStatus()).model_copy(deep=True)
    cron = backup_cron_job(body, spec, image=image, server_version=server_version,
                           suspend=suspend or spec.backup.suspend, ca=ca)
    await kube.apply_if_changed(cron, await kube.get(r.CRONJOB, namespace, cron["metadata"]["name"]))
    current.cron_job, current.image = cron["metadata"]["name"], image
    paused = suspend or spec.backup.suspend
    current.next_schedule_time = None if paused else next_run(spec.backup.schedule, now)
    outcome = BackupOutcome(current)
    token = (meta.get("annotations") or {}).get(BACKUP_ANNOTATION)
    if token and token != current.observed_on_demand_token:
        job = on_demand_job(body, spec, token, image=image, server_version=server_version, ca=ca)
        await kube.apply_if_changed(job, await read_job(kube, namespace, job["metadata"]["name"]))
        current.observed_on_demand_token, current.on_demand_job = token, job["metadata"]["name"]
        outcome.events.append(("BackupStarted", f"on-demand dump {job['metadata']['name']} started ({token})",
                               False))
    await _record_last(kube, namespace, meta["name"], current, outcome)
    return outcome


async def _record_last(kube: Kube, namespace: str, name: str, current: BackupStatus, outcome: BackupOutcome) -> None:
    """The newest finished dump Job's outcome, once (its name is remembered)."""
    jobs = await kube.list(r.JOB, namespace, label_selector=f"{LABEL_OWNER}={name},{LABEL_COMPONENT}="
                                                             f"{COMPONENT_BACKUP}")
    # No poll while a dump runs: the Job watch (handlers/database.py) reconciles when it finishes, and a dump stuck
    # Pending (a claim that does not bind) must not cost a reconcile every few seconds.
    finished = [j for j in jobs if job_finished(j)[0]]
    if not finished:
        return
    newest = max(finished, key=lambda j: job_finished(j)[2] or datetime.min.replace(tzinfo=UTC))
    if newest["metadata"]["name"] == current.last_job:
        return
    result = await job_outcome(kube, namespace, newest)
    current.last_job = result.name
    if result.succeeded and result.report is not None:
        current.last_success_time = result.finished_at
        current.last_file, current.last_size_bytes = result.report.file, result.report.size_bytes
        outcome.events.append(("BackupSucceeded", f"dump {result.report.file} written ({result.report.size_bytes} "
                                                  f"bytes, {result.report.entries} entries) by {result.name}", False))
    else:
        current.last_failure_time = result.finished_at
        current.last_failure_message = result.message[:512] or "the dump Job failed"
        outcome.events.append(("BackupFailed", f"{result.name}: {current.last_failure_message}", True))


def cron_job_may_exist(body: Mapping[str, Any], status: AitbcDatabaseStatus) -> bool:
    """Whether a CronJob of ours may be left without spec.backup - unless status records none (status.backup) and a
    reconcile of this very generation (which has no backup) succeeded: that one removed it, or found none; or the
    object is at its first generation: the only spec it ever had has no backup, so no reconcile made one (a
    same-named CronJob is another uid's, not ours to remove). Spares every creation and every drift check of a
    resource without backups a GET."""
    if status.backup is not None:
        return True
    generation = body["metadata"].get("generation")
    if generation == 1:
        return False
    ready = next((c for c in status.conditions if c.type == conditions.READY), None)
    return ready is None or ready.status != "True" or generation is None or ready.observed_generation != generation


async def _remove_cron_job(kube: Kube, body: Mapping[str, Any]) -> None:
    """spec.backup was removed: the CronJob goes (only ours; the dumps in the volume stay)."""
    meta = body["metadata"]
    name = cron_job_name(meta["name"])
    live = await kube.get(r.CRONJOB, meta["namespace"], name)
    if live is None:
        return
    ours = {"kind": "CronJob", "metadata": {"name": name, "ownerReferences": [
        {"kind": body["kind"], "name": meta["name"], "uid": meta["uid"], "controller": True}]}}
    if ownership_conflict(ours, live) is None:
        await kube.request("DELETE", r.CRONJOB.path(meta["namespace"], name))
