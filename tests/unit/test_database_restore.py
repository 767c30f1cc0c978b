"""The restore state machine (reconcilers/database_restore.py) step by step against a fake world: one transition per
reconcile, a lost status write, an operator restart mid-phase, a failure while the consumers are stopped (they come
back before Failed), a missing dump (nothing stopped), the interlock with a running dump Job."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from aitbc_operator.builders.database_backup import restore_job_name
from aitbc_operator.k8s.resources import Kind
from aitbc_operator.models.database import AitbcDatabaseSpec, ConsumerKind, RestorePhase, RestoreStatus
from aitbc_operator.reconcilers.database_consumers import Consumer
from aitbc_operator.reconcilers.database_restore import step_restore
from tests.factories import database_spec

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BODY = {"apiVersion": "aitbc.io/v1alpha1", "kind": "AitbcDatabase",
        "metadata": {"name": "bk", "namespace": "ns", "uid": "u-1"}}


class World:
    """Jobs, their pods and the consumer Deployment, as the reconciler sees them through Kube."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        self.deployment = {"metadata": {"name": "client"}, "spec": {"replicas": 3}, "status": {"replicas": 3}}
        self.created: list[str] = []
        self.scaled: list[int] = []

    # the Kube methods used
    async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        return self.jobs.get(name) if kind.kind == "Job" else None

    async def list(self, kind: Kind, namespace: str | None = None, *, label_selector: str | None = None,
                   **_: Any) -> list[dict[str, Any]]:
        if kind.kind == "Pod":
            job = (label_selector or "").split("=")[-1]
            report = self.reports.get(job)
            message = json.dumps(report) if report else ""
            return [{"metadata": {"creationTimestamp": "t"}, "status": {"containerStatuses": [
                {"state": {"terminated": {"message": message}}}]}}]
        component = "backup" if "component=backup" in (label_selector or "") else "restore"
        return [j for j in self.jobs.values() if j["metadata"]["labels"]["app.kubernetes.io/component"] == component]

    async def apply_if_changed(self, obj: dict[str, Any], live: dict[str, Any] | None) -> tuple[dict[str, Any], bool]:
        self.jobs[obj["metadata"]["name"]] = obj
        self.created.append(obj["metadata"]["name"])
        return obj, True

    async def merge_patch(self, kind: Kind, namespace: str, name: str, patch: dict[str, Any], **_: Any) -> None:
        replicas = patch["spec"]["replicas"]
        self.deployment["spec"]["replicas"] = replicas
        self.scaled.append(replicas)

    # the world moving on
    def finish(self, step: str, *, ok: bool, **report: Any) -> None:
        name = restore_job_name("bk", "r1", step)
        self.jobs[name]["status"] = {"conditions": [{"type": "Complete" if ok else "Failed", "status": "True",
                                                     "lastTransitionTime": "2026-12-01T12:00:00Z"}]}
        self.reports[name] = {"ok": ok, "action": {"predump": "dump"}.get(step, step), **report}

    def pods_gone(self) -> None:
        self.deployment["status"]["replicas"] = self.deployment["spec"]["replicas"]

    def consumers(self) -> list[Consumer]:
        return [Consumer(ConsumerKind.DEPLOYMENT, "client", json.loads(json.dumps(self.deployment)))]


SPEC = AitbcDatabaseSpec.model_validate(database_spec(
    backup={"schedule": "@daily", "claimName": "dumps"}, consumers=[{"kind": "Deployment", "name": "client"}],
    restore={"name": "r1", "file": "good.dump"}))


def step(world: World, status: RestoreStatus | None, spec: AitbcDatabaseSpec = SPEC) -> RestoreStatus:
    outcome = asyncio.run(step_restore(world, BODY, spec, status, world.consumers(),  # type: ignore[arg-type]
                                       server_version="15.8", ca=False, now=NOW))
    assert outcome.status is not None
    return outcome.status


def test_a_full_restore_one_transition_at_a_time() -> None:
    world = World()
    status = step(world, None)
    assert status.phase is RestorePhase.VERIFYING
    assert world.created == []  # the first transition only records the request
    status = step(world, status)
    assert world.created == [restore_job_name("bk", "r1", "verify")]
    assert step(world, status).phase is RestorePhase.VERIFYING, "waits for the verify Job"
    world.finish("verify", ok=True, file="good.dump", entries=9)
    status = step(world, status)
    assert status.phase is RestorePhase.STOPPING_CONSUMERS
    status = step(world, status)
    assert [(h.name, h.replicas) for h in status.held] == [("client", 3)], "the replicas recorded first ..."
    assert world.scaled == [], "... before anything is scaled"
    status = step(world, status)
    assert world.scaled == [0]
    assert status.phase is RestorePhase.STOPPING_CONSUMERS, "until no pod is left"
    world.pods_gone()
    status = step(world, status)
    assert status.phase is RestorePhase.PRE_RESTORE_DUMP
    status = step(world, status)
    world.finish("predump", ok=True, file="db-pre-restore-20261201T120000Z.dump")
    status = step(world, status)
    assert status.phase is RestorePhase.RESTORING
    assert status.pre_restore_file == "db-pre-restore-20261201T120000Z.dump"
    status = step(world, status)
    world.finish("restore", ok=True, file="good.dump")
    status = step(world, status)
    assert status.phase is RestorePhase.STARTING_CONSUMERS
    status = step(world, status)
    assert status.phase is RestorePhase.SUCCEEDED
    assert world.scaled == [0, 3]
    assert status.finished_at == NOW
    before = list(world.created)
    assert step(world, status) == status, "a terminal phase does nothing more"
    assert world.created == before


def test_a_lost_status_write_never_forgets_the_replicas() -> None:
    world = World()
    status = RestoreStatus(name="r1", file="good.dump", phase=RestorePhase.STOPPING_CONSUMERS)
    recorded = step(world, status)  # replicas recorded; suppose this status write is lost ...
    assert world.scaled == []
    again = step(world, status)  # ... the next reconcile records them again, from the unscaled consumer
    assert [(h.name, h.replicas) for h in again.held] == [(h.name, h.replicas) for h in recorded.held]
    scaled = step(world, again)
    world.pods_gone()
    # An operator restart now re-reads the status with the recorded replicas: never 0.
    assert [(h.name, h.replicas) for h in step(world, scaled).held] == [("client", 3)]


def test_a_failed_restore_brings_the_consumers_back_before_failed() -> None:
    world = World()
    status = RestoreStatus(name="r1", file="good.dump", phase=RestorePhase.RESTORING,
                           held=[{"kind": "Deployment", "name": "client", "replicas": 3}])  # type: ignore[list-item]
    world.deployment["spec"]["replicas"] = 0
    status = step(world, status)
    world.finish("restore", ok=False, error="pg_restore (nothing was changed: one transaction): boom")
    status = step(world, status)
    assert status.phase is RestorePhase.STARTING_CONSUMERS
    assert "boom" in (status.error or "")
    status = step(world, status)
    assert status.phase is RestorePhase.FAILED
    assert world.scaled == [3]


def test_a_missing_dump_fails_without_stopping_anything() -> None:
    world = World()
    status = step(world, step(world, None))
    world.finish("verify", ok=False, error="dump good.dump not found in the backup volume")
    status = step(world, status)
    assert status.phase is RestorePhase.FAILED
    assert "not found" in (status.message or "")
    assert world.scaled == []
    assert status.held == []


def test_the_restore_waits_for_a_running_dump() -> None:
    world = World()
    world.jobs["bk-backup-1"] = {"metadata": {"name": "bk-backup-1", "labels": {
        "app.kubernetes.io/component": "backup"}}, "status": {}}
    status = step(world, step(world, None))
    assert world.created == [], "no verify Job while a dump runs"
    world.jobs["bk-backup-1"]["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    step(world, status)
    assert world.created == [restore_job_name("bk", "r1", "verify")]


def test_a_new_request_name_is_a_new_restore() -> None:
    world = World()
    done = RestoreStatus(name="r0", file="old.dump", phase=RestorePhase.SUCCEEDED)
    status = step(world, done)
    assert (status.name, status.phase) == ("r1", RestorePhase.VERIFYING)


# --- the backups' outcomes in status ----------------------------------------------------------------------------


class BackupWorld(World):
    """The CronJob and its finished Jobs (one failed, one succeeded)."""

    def __init__(self) -> None:
        super().__init__()
        self.cron: dict[str, Any] | None = None

    async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cron if kind.kind == "CronJob" else self.jobs.get(name)

    async def apply_if_changed(self, obj: dict[str, Any], live: dict[str, Any] | None) -> tuple[dict[str, Any], bool]:
        if obj["kind"] == "CronJob":
            self.cron = obj
            return obj, True
        return await super().apply_if_changed(obj, live)

    def dump_job(self, name: str, *, ok: bool, at: str, **report: Any) -> None:
        self.jobs[name] = {"metadata": {"name": name, "labels": {"app.kubernetes.io/component": "backup"}},
                           "status": {"conditions": [{"type": "Complete" if ok else "Failed", "status": "True",
                                                      "lastTransitionTime": at, "reason": "BackoffLimitExceeded"}]}}
        self.reports[name] = {"ok": ok, "action": "dump", **report}


def test_the_newest_finished_dump_is_recorded_once_with_its_file_or_its_error() -> None:
    from aitbc_operator.models.database import AitbcDatabaseStatus
    from aitbc_operator.reconcilers.database_backup import converge_backup

    world = BackupWorld()
    spec = AitbcDatabaseSpec.model_validate(database_spec(backup={"schedule": "0 3 * * *", "claimName": "d"}))

    def run(status: AitbcDatabaseStatus) -> Any:
        return asyncio.run(converge_backup(world, BODY, spec, status, server_version="18.1",  # type: ignore[arg-type]
                                           ca=False, suspend=False, now=NOW))

    world.dump_job("bk-backup-1", ok=False, at="2026-12-01T03:00:05Z",
                   error="pg_dump 15 is older than the server (PostgreSQL 18): use an image of that major")
    first = run(AitbcDatabaseStatus())
    assert first.status.last_failure_message.startswith("pg_dump 15 is older")
    assert first.events[0][:1] == ("BackupFailed",)
    assert first.events[0][2] is True, "a Warning"
    assert world.cron is not None
    assert world.cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "docker.io/library/postgres:18")
    assert first.status.next_schedule_time == datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    again = run(AitbcDatabaseStatus(backup=first.status))
    assert again.events == [], "recorded once"
    world.dump_job("bk-backup-2", ok=True, at="2026-12-01T04:00:05Z", file="db-20261201T040000Z.dump",
                   sizeBytes=2048, entries=7)
    done = run(AitbcDatabaseStatus(backup=first.status))
    assert (done.status.last_job, done.status.last_file, done.status.last_size_bytes) == (
        "bk-backup-2", "db-20261201T040000Z.dump", 2048)
    assert done.status.last_failure_message == first.status.last_failure_message, "the last failure stays known"
    suspended = asyncio.run(converge_backup(world, BODY, spec, AitbcDatabaseStatus(backup=done.status),  # type: ignore[arg-type]
                                            server_version="18.1", ca=False, suspend=True, now=NOW))
    assert world.cron["spec"]["suspend"] is True
    assert suspended.status.next_schedule_time is None
