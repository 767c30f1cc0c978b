"""The day-2 decider with a frozen clock: each phase's exit condition, the interlock, fixed Job names, a lost status
write, an operator restart mid-phase, failures that still bring node and RPC back, and the pre-migration freeze."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aitbc_operator.chainops import (
    ANNOTATION_BACKUP_NOW,
    ANNOTATION_MAINTAIN_NOW,
    JobState,
    OpsDecision,
    OpsSnapshot,
    Workloads,
    decide_ops,
    job_name,
    work_holds,
)
from aitbc_operator.models.chainops import BackupStatus, MaintenanceStatus, WorkStatus
from aitbc_operator.models.node import AitbcNodeSpec
from tests.factories import node_spec

T0 = datetime(2026, 12, 1, 10, 0, 30, tzinfo=UTC)
UP = Workloads(rpc_stopped=False, node_stopped=False, node_ready=True, rpc_available=True, node_host="worker-1",
               rollout_idle=True)


def spec(**overrides: Any) -> AitbcNodeSpec:
    return AitbcNodeSpec.model_validate(node_spec(**overrides))


def snap(s: AitbcNodeSpec, *, backup: BackupStatus | None = None, restore: WorkStatus | None = None,
         maintenance: MaintenanceStatus | None = None, jobs: dict[str, JobState] | None = None,
         workloads: Workloads = UP, annotations: dict[str, str] | None = None, migration: str | None = None,
         now: datetime = T0) -> OpsSnapshot:
    return OpsSnapshot(owner="aitbc1", spec=s, backup=backup or BackupStatus(), restore=restore,
                       maintenance=maintenance or MaintenanceStatus(), jobs=jobs or {}, workloads=workloads,
                       annotations=annotations or {}, migration_target=migration, now=now)


def after(d: OpsDecision, prev: OpsSnapshot, **changes: Any) -> OpsSnapshot:
    """The next reconcile's snapshot: the decision's status written, the world changed as given."""
    return replace(prev, backup=d.backup, restore=d.restore, maintenance=d.maintenance, **changes)


def done(name: str, report: dict[str, Any] | None, *, ok: bool = True, reason: str | None = None) -> JobState:
    return JobState(name=name, finished=True, succeeded=ok, reason=reason,
                    report=None if report is None else json.dumps(report))


def backup_report(*chains: tuple[str, int]) -> dict[str, Any]:
    return {"ok": True, "chains": [{"chain": c, "copy": {"name": f"chain-20261201T100030Z-h{h}.db",
                                                         "time": "2026-12-01T10:00:30Z", "height": h, "size": 4096,
                                                         "sha256": "ab" * 32, "verified": True}} for c, h in chains]}


# --- schedules and on-demand backups ----------------------------------------------------------------------------------

def test_a_schedule_seen_first_runs_nothing_then_its_next_slot_runs_once_under_a_fixed_name() -> None:
    s = spec(backup={"schedule": "0 2 * * *"})
    first = decide_ops(snap(s))
    assert first.create is None
    assert first.backup.last_schedule_time == datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    assert first.backup.next_schedule_time == datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
    assert first.requeue_after == pytest.approx(16 * 3600 - 29, abs=2)
    tomorrow = after(first, snap(s), now=datetime(2026, 12, 2, 2, 0, 4, tzinfo=UTC))
    run = decide_ops(tomorrow)
    assert run.create is not None
    assert run.create.name == "aitbc1-backup-20261202t020000z"
    assert run.create.stamp == datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # the copies carry the slot's time
    assert run.backup.running is not None
    # A lost status write: the same slot is decided again, under the same name (the reconciler finds that Job).
    again = decide_ops(tomorrow)
    assert again.create is not None
    assert again.create.name == run.create.name


def test_a_backup_result_goes_to_status_per_chain_with_an_event() -> None:
    s = spec()
    started = decide_ops(snap(s, annotations={ANNOTATION_BACKUP_NOW: "t1"}))
    assert started.create is not None
    name = started.create.name
    assert name == job_name("aitbc1", "backup-now-" + name.rsplit("-", 1)[1])
    running = decide_ops(after(started, snap(s), jobs={name: JobState(name)},
                               annotations={ANNOTATION_BACKUP_NOW: "t1"}))
    assert running.create is None
    assert running.backup.running is not None
    assert running.requeue_after == 5.0
    finished = decide_ops(after(running, snap(s), jobs={name: done(name, backup_report(("ait-mainnet", 42),
                                                                                      ("ait-testnet", 7)))},
                                annotations={ANNOTATION_BACKUP_NOW: "t1"}))
    assert finished.backup.running is None
    assert [(c.chain, c.last_success.height if c.last_success else None) for c in finished.backup.chains] == [
        ("ait-mainnet", 42), ("ait-testnet", 7)]
    assert finished.backup.chains[0].last_success is not None
    assert finished.backup.chains[0].last_success.sha256 == "ab" * 8  # status keeps 16 characters of it
    assert finished.events[-1][0] == "BackupSucceeded"
    # The token was handled: nothing new.
    assert decide_ops(after(finished, snap(s), annotations={ANNOTATION_BACKUP_NOW: "t1"})).create is None


def test_a_failed_backup_job_is_recorded_from_its_condition_when_it_left_no_report() -> None:
    s = spec()
    started = decide_ops(snap(s, annotations={ANNOTATION_BACKUP_NOW: "t1"}))
    assert started.create is not None
    name = started.create.name
    failed = decide_ops(after(started, snap(s), jobs={name: done(name, None, ok=False, reason="DeadlineExceeded")}))
    assert all(c.last_success is None and "ran past its deadline" in (c.last_failure or "")
               for c in failed.backup.chains)
    assert failed.events[-1][0] == "BackupFailed"
    assert failed.events[-1][2] is True


# --- the interlock ----------------------------------------------------------------------------------------------------

def test_one_thing_at_a_time_a_due_slot_waits_for_the_running_restore() -> None:
    s = spec(backup={"schedule": "* * * * *"}, restore={"chain": "ait-mainnet", "token": "r1"})
    restoring = WorkStatus(phase="StoppingNode", token="r1", chain="ait-mainnet", backup="latest-verified",
                           node_name="worker-1", started_at=T0)
    d = decide_ops(snap(s, restore=restoring, backup=BackupStatus(last_schedule_time=T0 - timedelta(minutes=5))))
    assert d.create is None  # the node is not stopped yet, and the slot waits
    assert d.backup.running is None
    assert d.holds.stop_node
    assert d.holds.stop_rpc


def test_nothing_new_starts_while_a_rollout_runs() -> None:
    s = spec()
    d = decide_ops(snap(s, annotations={ANNOTATION_BACKUP_NOW: "t1"}, workloads=replace(UP, rollout_idle=False)))
    assert d.create is None
    assert d.backup.manual_token is None  # still unhandled: it starts once the rollout is done


# --- restore ----------------------------------------------------------------------------------------------------------

def restore_report(ok: bool = True, **extra: Any) -> dict[str, Any]:
    return {"ok": ok, "chain": "ait-mainnet", "backup": "chain-20261201T020000Z-h40.db", "height": 40, **extra}


def test_restore_phases_stop_rpc_then_node_run_then_start_node_then_rpc() -> None:
    s = spec(restore={"chain": "ait-mainnet", "backup": "latest", "token": "r1"})
    world = snap(s)
    phases, holds = [], []
    steps = [
        {},  # -> Verifying (check Job)
        {"jobs": "check-ok"},  # -> StoppingRpc
        {"workloads": replace(UP, rpc_stopped=True, rpc_available=False)},  # -> StoppingNode
        {"workloads": replace(UP, rpc_stopped=True, rpc_available=False, node_stopped=True, node_ready=False)},
        {"jobs": "run-ok", "workloads": replace(UP, rpc_stopped=True, rpc_available=False, node_stopped=True,
                                                node_ready=False)},  # -> StartingNode
        {"workloads": replace(UP, rpc_stopped=True, rpc_available=False)},  # node Ready -> StartingRpc
        {"workloads": UP},  # RPC available -> Succeeded
    ]
    d: OpsDecision | None = None
    created: list[str] = []
    for step in steps:
        jobs = dict(world.jobs)
        if step.get("jobs") == "check-ok":
            name = created[-1]
            jobs[name] = done(name, restore_report(checkOnly=True))
        if step.get("jobs") == "run-ok":
            name = created[-1]
            jobs[name] = done(name, restore_report(movedAside="chain.db.pre-restore-x"))
        world = replace(world if d is None else after(d, world), jobs=jobs, workloads=step.get("workloads", UP))
        d = decide_ops(world)
        if d.create is not None:
            created.append(d.create.name)
            world = replace(world, jobs={**world.jobs, d.create.name: JobState(d.create.name)})
        assert d.restore is not None
        phases.append(d.restore.phase)
        holds.append((d.holds.stop_rpc, d.holds.stop_node))
    assert phases == ["Verifying", "StoppingRpc", "StoppingNode", "Running", "StartingNode", "StartingRpc",
                      "Succeeded"]
    assert holds == [(False, False), (True, False), (True, True), (True, True), (True, False), (False, False),
                     (False, False)]
    assert created == [job_name("aitbc1", f"restore-{created[0].split('-')[2]}-check"),
                       created[0].replace("-check", "-run")]
    assert d is not None
    assert d.restore is not None
    assert (d.restore.backup, d.restore.height) == ("chain-20261201T020000Z-h40.db", 40)
    assert d.events[-1][0] == "RestoreSucceeded"


def test_a_restore_of_a_missing_backup_is_refused_and_holds_nothing() -> None:
    s = spec(restore={"chain": "ait-mainnet", "backup": "chain-20200101T000000Z-h1.db", "token": "r1"})
    started = decide_ops(snap(s))
    assert started.create is not None
    check = started.create.name
    report = {"ok": False, "chain": "ait-mainnet", "checkOnly": True,
              "error": "no backup 'chain-20200101T000000Z-h1.db' (newest copies: none)"}
    refused = decide_ops(after(started, snap(s), jobs={check: done(check, report, ok=False)}))
    assert refused.restore is not None
    assert refused.restore.phase == "Refused"
    assert "no backup 'chain-20200101T000000Z-h1.db'" in (refused.restore.error or "")
    assert not refused.holds.active
    assert refused.events[-1][:1] == ("RestoreRefused",)
    # The same token is not tried again; a new one is.
    assert decide_ops(after(refused, snap(s))).create is None


def test_a_failed_restore_job_still_starts_node_and_rpc_before_it_reports_failed() -> None:
    s = spec(restore={"chain": "ait-mainnet", "token": "r1"})
    running = WorkStatus(phase="Running", token="r1", chain="ait-mainnet", backup="chain-20261201T020000Z-h40.db",
                         node_name="worker-1", started_at=T0, job="aitbc1-restore-x-run")
    stopped = replace(UP, rpc_stopped=True, node_stopped=True, node_ready=False, rpc_available=False)
    failed_job = done("aitbc1-restore-x-run", restore_report(ok=False, error="the staged copy failed"), ok=False)
    d = decide_ops(snap(s, restore=running, jobs={failed_job.name: failed_job}, workloads=stopped))
    assert d.restore is not None
    assert d.restore.phase == "StartingNode"
    assert d.holds.stop_rpc
    assert not d.holds.stop_node  # the node is started again
    d = decide_ops(after(d, snap(s, restore=d.restore), workloads=replace(UP, rpc_available=False, rpc_stopped=True)))
    assert d.restore is not None
    assert d.restore.phase == "StartingRpc"
    d = decide_ops(after(d, snap(s, restore=d.restore), workloads=UP))
    assert d.restore is not None
    assert (d.restore.phase, d.restore.error) == ("Failed", "the staged copy failed")


def test_stopping_past_the_time_limit_gives_up_and_starts_both_again() -> None:
    s = spec(maintenance={"vacuum": True, "timeLimit": "5m"})
    window = WorkStatus(phase="StoppingNode", token="m1", node_name="worker-1", started_at=T0)
    d = decide_ops(snap(s, maintenance=MaintenanceStatus(window=window), workloads=replace(UP, rpc_stopped=True),
                        now=T0 + timedelta(minutes=6)))
    assert d.maintenance.window is not None
    assert d.maintenance.window.phase == "StartingNode"
    assert "time limit of 300s passed while StoppingNode" in (d.maintenance.window.error or "")
    assert d.create is None


def test_a_lost_job_create_is_asked_for_again_under_the_same_name() -> None:
    """The status said Running (Job name stored) but the create never reached the apiserver."""
    s = spec(maintenance={"vacuum": True})
    window = WorkStatus(phase="Running", token="m1", node_name="worker-1", started_at=T0, job="aitbc1-maint-now-x")
    stopped = replace(UP, rpc_stopped=True, node_stopped=True, node_ready=False, rpc_available=False)
    d = decide_ops(snap(s, maintenance=MaintenanceStatus(window=window), workloads=stopped))
    assert d.create is not None
    assert d.create.kind == "maintain"
    assert d.holds.stop_node


# --- maintenance ------------------------------------------------------------------------------------------------------

def test_a_window_without_vacuum_runs_while_the_node_writes() -> None:
    s = spec(maintenance={"checkpoint": True})
    d = decide_ops(snap(s, annotations={ANNOTATION_MAINTAIN_NOW: "m1"}))
    assert d.create is not None
    assert d.create.kind == "maintain"
    assert not d.holds.active
    report = {"ok": True, "chains": [{"chain": "ait-mainnet", "checkpoint": "ok", "integrity": "ok",
                                      "bytesBefore": 9000, "bytesAfter": 5000}]}
    name = d.create.name
    d = decide_ops(after(d, snap(s), jobs={name: done(name, report)}, annotations={ANNOTATION_MAINTAIN_NOW: "m1"}))
    assert d.maintenance.window is not None
    assert d.maintenance.window.phase == "Succeeded"
    assert d.maintenance.reclaimed_bytes == 4000
    assert "4000 bytes reclaimed" in (d.maintenance.window.message or "")


@pytest.mark.parametrize(("phase", "stop_rpc", "stop_node", "freeze"), [
    ("StoppingRpc", True, False, False), ("StoppingNode", True, True, False), ("Running", True, True, False),
    ("StartingNode", True, False, False), ("StartingRpc", False, False, True), ("Succeeded", False, False, False),
])
def test_holds_of_each_phase(phase: str, stop_rpc: bool, stop_node: bool, freeze: bool) -> None:
    holds = work_holds(WorkStatus(phase=phase, chain="ait-mainnet"))  # type: ignore[arg-type]
    assert (holds.stop_rpc, holds.stop_node, holds.freeze_node) == (stop_rpc, stop_node, freeze)


# --- before a migration -----------------------------------------------------------------------------------------------

def test_a_mempool_migration_freezes_the_node_until_every_chain_is_backed_up() -> None:
    s = spec(mempool={"databaseRef": {"name": "mempool"}})
    d = decide_ops(snap(s, migration="newhash0123456789"))
    assert d.create is not None
    assert d.create.name == "aitbc1-backup-pm-newhash01234"
    assert d.holds.freeze_node
    name = d.create.name
    ok = decide_ops(after(d, snap(s, migration="newhash0123456789"),
                          jobs={name: done(name, backup_report(("ait-mainnet", 5), ("ait-testnet", 5)))}))
    assert ok.backup.pre_migration is not None
    assert ok.backup.pre_migration.phase == "Succeeded"
    assert not ok.holds.active  # the node may roll


def test_a_failed_pre_migration_backup_degrades_and_rolls_nothing_until_a_manual_backup_succeeds() -> None:
    s = spec(mempool={"databaseRef": {"name": "mempool"}})
    d = decide_ops(snap(s, migration="H1"))
    assert d.create is not None
    name = d.create.name
    failed = decide_ops(after(d, snap(s, migration="H1"), jobs={name: done(name, {"ok": False, "chains": [
        {"chain": "ait-mainnet", "error": "disk full"}]}, ok=False)}))
    assert failed.degraded is not None
    assert failed.degraded[0] == "BackupFailed"
    assert "disk full" in failed.degraded[1]
    assert failed.holds.freeze_node
    again = decide_ops(after(failed, snap(s, migration="H1")))
    assert again.create is None  # not retried in a loop
    manual = decide_ops(after(again, snap(s, migration="H1"), annotations={ANNOTATION_BACKUP_NOW: "retry"}))
    assert manual.create is not None
    mname = manual.create.name
    good = decide_ops(after(manual, snap(s, migration="H1"), annotations={ANNOTATION_BACKUP_NOW: "retry"},
                            jobs={mname: done(mname, backup_report(("ait-mainnet", 9), ("ait-testnet", 9)))}))
    assert good.degraded is None
    assert not good.holds.active


def test_long_owner_names_give_job_names_within_63_characters() -> None:
    owner = "a" * 47
    names = {job_name(owner, "backup-20261201t020000z"), job_name(owner, "restore-0123abcd-check")}
    assert all(len(n) <= 63 for n in names)
    assert job_name("aitbc1", "backup-20261201t020000z") == "aitbc1-backup-20261201t020000z"
