"""A declarative restore (``spec.restore``): one transition per reconcile, each an idempotent action with an exit
condition, the choices made (which replicas each consumer had, which pre-restore dump was taken) kept in
``status.restore``, so an operator restart never chooses again.

    Verifying -> StoppingConsumers -> PreRestoreDump -> Restoring -> StartingConsumers -> Succeeded
        \\-> Failed (nothing touched)          \\-> (a failure) -> StartingConsumers -> Failed

- Verifying: a Job runs ``pg_restore --list`` on the named dump; a missing or unreadable dump is Failed, nothing
  stopped, nothing dropped. Waits while a dump Job runs (one dump or restore at a time).
- StoppingConsumers (``stopConsumers``, the default): first the replicas are recorded (a status write), then the
  consumers are scaled to zero; the phase moves on once no pod of theirs is left.
- PreRestoreDump: a dump of the current database (``<database>-pre-restore-<time>.dump``, never pruned).
- Restoring: ``pg_restore --clean --if-exists --no-owner --single-transaction`` as the database's own role: all or
  nothing.
- StartingConsumers: the recorded replicas are given back; a failure after the consumers were stopped always comes
  this way before Failed (service is brought back).
The backup CronJob is suspended from Verifying until the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..builders.common import LABEL_COMPONENT, LABEL_OWNER
from ..builders.database_backup import COMPONENT_BACKUP, restore_job
from ..k8s import resources as r
from ..k8s.client import Kube
from ..models.database import AitbcDatabaseSpec, HeldReplicas, RestorePhase, RestoreStatus
from .database_backup import JOB_POLL, image_for, job_finished, job_outcome, read_job
from .database_consumers import Consumer, scale

#: Phase -> the Job step it runs.
_JOB_STEPS = {RestorePhase.VERIFYING: "verify", RestorePhase.PRE_RESTORE_DUMP: "predump",
              RestorePhase.RESTORING: "restore"}


@dataclass
class RestoreOutcome:
    """What one restore transition did."""

    status: RestoreStatus | None
    events: list[tuple[str, str, bool]] = field(default_factory=list)
    requeue_after: float | None = None

    def move(self, phase: RestorePhase, message: str, *, now: datetime, warning: bool = False) -> None:
        """Go to ``phase`` (with the end time when it is terminal) and post an Event saying so."""
        assert self.status is not None
        self.status.phase, self.status.message = phase, message
        if self.status.is_done:
            self.status.finished_at = now
        else:
            self.requeue_after = 1.0
        reason = {RestorePhase.SUCCEEDED: "RestoreSucceeded", RestorePhase.FAILED: "RestoreFailed"}.get(
            phase, "RestoreProgress")
        self.events.append((reason, f"restore {self.status.name}: {message}", warning))


def restoring(status: RestoreStatus | None) -> bool:
    """A restore is under way (the backup schedule is suspended)."""
    return status is not None and not status.is_done


async def step_restore(kube: Kube, body: Mapping[str, Any], spec: AitbcDatabaseSpec, current: RestoreStatus | None,
                       consumers: list[Consumer], *, server_version: str, ca: bool, now: datetime) -> RestoreOutcome:
    """Take the next transition of the restore request, if any (pure decisions inline; one write step)."""
    request = spec.restore
    if request is None or (current is not None and current.name == request.name and current.is_done):
        return RestoreOutcome(current)
    if current is None or current.name != request.name:
        started = RestoreStatus(name=request.name, file=request.file, phase=RestorePhase.VERIFYING, started_at=now)
        outcome = RestoreOutcome(started)
        outcome.move(RestorePhase.VERIFYING, f"verifying dump {request.file}", now=now)
        return outcome
    outcome = RestoreOutcome(current.model_copy(deep=True))
    state = outcome.status
    assert state is not None
    namespace = body["metadata"]["namespace"]
    if state.phase is RestorePhase.STOPPING_CONSUMERS:
        await _stop(kube, namespace, state, consumers, outcome, now=now)
    elif state.phase is RestorePhase.STARTING_CONSUMERS:
        await _start(kube, namespace, state, consumers, outcome, now=now)
    else:
        await _job_phase(kube, body, spec, state, consumers, outcome, server_version=server_version, ca=ca, now=now)
    return outcome


async def _job_phase(kube: Kube, body: Mapping[str, Any], spec: AitbcDatabaseSpec, state: RestoreStatus,
                     consumers: list[Consumer], outcome: RestoreOutcome, *, server_version: str, ca: bool,
                     now: datetime) -> None:
    namespace = body["metadata"]["namespace"]
    if state.phase is RestorePhase.VERIFYING and await _dump_running(kube, namespace, body["metadata"]["name"]):
        outcome.requeue_after = JOB_POLL
        return
    step = _JOB_STEPS[state.phase]
    job = restore_job(body, spec, state.name, step, file=state.file, image=image_for(spec, server_version),
                      server_version=server_version, ca=ca)
    live = await read_job(kube, namespace, job["metadata"]["name"])
    if live is None:
        await kube.apply_if_changed(job, None)
        outcome.requeue_after = JOB_POLL
        return
    result = await job_outcome(kube, namespace, live)
    if not result.finished:
        outcome.requeue_after = JOB_POLL
        return
    stopped = bool(state.held)
    if not result.succeeded:
        state.error = f"{step}: {result.message or 'the Job failed'}"
        if state.phase is RestorePhase.VERIFYING:
            outcome.move(RestorePhase.FAILED, f"dump {state.file} refused: {result.message}; nothing was changed",
                         now=now, warning=True)
        elif stopped:
            outcome.move(RestorePhase.STARTING_CONSUMERS, f"{state.error}; bringing the consumers back", now=now,
                         warning=True)
        else:
            outcome.move(RestorePhase.FAILED, state.error, now=now, warning=True)
        return
    if state.phase is RestorePhase.VERIFYING:
        entries = result.report.entries if result.report else None
        want_stop = bool(spec.restore and spec.restore.stop_consumers and any(c.obj for c in consumers))
        nxt = RestorePhase.STOPPING_CONSUMERS if want_stop else RestorePhase.PRE_RESTORE_DUMP
        outcome.move(nxt, f"dump {state.file} verified ({entries} entries)", now=now)
    elif state.phase is RestorePhase.PRE_RESTORE_DUMP:
        state.pre_restore_file = result.report.file if result.report else None
        outcome.move(RestorePhase.RESTORING, f"pre-restore dump {state.pre_restore_file} taken; restoring "
                                             f"{state.file}", now=now)
    else:
        nxt = RestorePhase.STARTING_CONSUMERS if stopped else RestorePhase.SUCCEEDED
        outcome.move(nxt, f"database restored from {state.file}", now=now)


async def _dump_running(kube: Kube, namespace: str, name: str) -> bool:
    """A scheduled or on-demand dump Job is running (the restore waits for it)."""
    jobs = await kube.list(r.JOB, namespace, label_selector=f"{LABEL_OWNER}={name},{LABEL_COMPONENT}="
                                                             f"{COMPONENT_BACKUP}")
    return any(not job_finished(job)[0] for job in jobs)


async def _stop(kube: Kube, namespace: str, state: RestoreStatus, consumers: list[Consumer],
                outcome: RestoreOutcome, *, now: datetime) -> None:
    """Record the replicas first (one reconcile), scale to zero after (the next ones), move on once no pod is left."""
    if not state.held:
        state.held = [HeldReplicas(kind=c.kind.value, name=c.name, replicas=int((c.obj["spec"] or {}).get(
            "replicas", 1))) for c in consumers if c.obj is not None]
        outcome.requeue_after = 1.0
        return
    live = {(c.kind.value, c.name): c.obj for c in consumers}
    left = []
    for held in state.held:
        obj = live.get((held.kind, held.name))
        if obj is None:
            continue
        if (obj.get("spec") or {}).get("replicas") != 0:
            await scale(kube, namespace, held.kind, held.name, 0)
            left.append(held.name)
        elif (obj.get("status") or {}).get("replicas", 0) != 0:
            left.append(held.name)
    if left:
        outcome.requeue_after = 2.0
        return
    outcome.move(RestorePhase.PRE_RESTORE_DUMP, f"consumers stopped ({', '.join(h.name for h in state.held)})",
                 now=now)


async def _start(kube: Kube, namespace: str, state: RestoreStatus, consumers: list[Consumer],
                 outcome: RestoreOutcome, *, now: datetime) -> None:
    """Give every consumer its recorded replicas back; then Succeeded, or Failed when a step had failed."""
    live = {(c.kind.value, c.name): c.obj for c in consumers}
    for held in state.held:
        obj = live.get((held.kind, held.name))
        if obj is not None and (obj.get("spec") or {}).get("replicas") != held.replicas:
            await scale(kube, namespace, held.kind, held.name, held.replicas)
    back = ", ".join(f"{h.name}={h.replicas}" for h in state.held)
    if state.error:
        outcome.move(RestorePhase.FAILED, f"{state.error}; consumers brought back ({back})", now=now, warning=True)
    else:
        outcome.move(RestorePhase.SUCCEEDED, f"restored from {state.file}; consumers brought back ({back})",
                     now=now)
