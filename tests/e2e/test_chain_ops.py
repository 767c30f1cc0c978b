"""Chain-data day-2 on the real node: backups (scheduled, on demand, before a mempool migration), a restore, a VACUUM
window, a stale RPC healed, bad requests refused. The operator is the pod built from this checkout; the Jobs and the
health sidecar run its image under the real kubelet; the stand-in node writes a block per chain per second.

What is checked is what the files, the cluster and the RPC show: copies read with SQLite on the host (integrity,
MAX(height) against the name), the order of pod deletions and readiness from watches (the Recorder), heights from
``GET /rpc/head`` by the Service's ClusterIP.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from localcluster.node import RealNodeCluster

from tests.cluster.fixtures import wait_until
from tests.e2e.test_real_node import (
    CHAINS,
    STEP,
    HeightWatch,
    _replace_chain_db,
    file_height,
    lsattr_flags,
    rpc_height,
    rpc_url,
    standin_node,
    wait_ready,
)
from tests.integration.test_node_operator import NODE, NODE_POD, Api, Recorder, condition
from tests.realnode_fixtures import OperatorPod, RealNamespace

pytestmark = pytest.mark.timeout(900)
#: The stand-in's uid (the data owner): files the test writes into the chain directory are written as it.
DATA_UID = 1000


@pytest.fixture
def api(real_kube: client.ApiClient, real_ns: RealNamespace) -> Api:
    return Api(real_kube, real_ns.name)


@pytest.fixture
def recorder(real_cluster: RealNodeCluster, real_ns: RealNamespace) -> Iterator[Recorder]:
    rec = Recorder(real_cluster.kubeconfig, real_ns.name)
    yield rec
    rec.__exit__()


# --- helpers ----------------------------------------------------------------------------------------------------------

def status_of(api: Api, *path: str) -> Any:
    node: Any = api.node().get("status") or {}
    for key in path:
        node = (node or {}).get(key) if isinstance(node, dict) else None
    return node


def annotate(api: Api, key: str, value: str) -> None:
    api.patch("aitbcnodes", NODE, {"metadata": {"annotations": {key: value}}})


def backup_dir_on_host(api: Api) -> Path:
    """Where the backup claim's volume lies on the host (the hostpath provisioner's directory)."""
    pvc = api.core.read_namespaced_persistent_volume_claim(f"{NODE}-backups", api.ns)
    pv = api.core.read_persistent_volume(pvc.spec.volume_name)
    return Path(pv.spec.host_path.path)


def sqlite_one(path: Path, sql: str) -> Any:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchone()
    finally:
        conn.close()


def assert_verified_copy(directory: Path, copy: dict[str, Any]) -> None:
    """The copy the status names exists, is in the manifest as verified, passes integrity_check, and its name's
    height is MAX(height) in it."""
    path = directory / copy["name"]
    assert path.is_file(), f"{path} missing"
    manifest = json.loads((directory / "manifest.json").read_text())
    entry = next(e for e in manifest["backups"] if e["name"] == copy["name"])
    assert entry["verified"] is True
    assert entry["sha256"].startswith(copy["sha256"])
    assert sqlite_one(path, "PRAGMA integrity_check") == ("ok",)
    assert sqlite_one(path, "SELECT MAX(height) FROM block")[0] == copy["height"]
    assert copy["name"].endswith(f"-h{copy['height']}.db")


def last_success(api: Api, chain: str) -> dict[str, Any] | None:
    for entry in status_of(api, "backup", "chains") or []:
        if entry["chain"] == chain:
            return entry.get("lastSuccess")  # type: ignore[no-any-return]
    return None


def wait_backup_after(api: Api, after: str | None, what: str, timeout: float = STEP) -> dict[str, dict[str, Any]]:
    """Wait until every chain has a newer last successful copy than `after` (a name); the copies by chain."""
    seen: dict[str, dict[str, Any]] = {}

    def done() -> bool:
        for chain in CHAINS:
            copy = last_success(api, chain)
            if copy is None or (after is not None and copy["name"] <= after):
                return False
            seen[chain] = copy
        return status_of(api, "backup", "running") is None

    wait_until(done, timeout, what, interval=1)
    return seen


def pod_uid(api: Api, name: str) -> str | None:
    pod = api.pod(name)
    return None if pod is None else str(pod["metadata"]["uid"])


def events(api: Api, reason: str) -> list[str]:
    found = api.core.list_namespaced_event(api.ns, field_selector=f"involvedObject.name={NODE},reason={reason}")
    return [e.message for e in found.items]


def assert_stopped_then_started_in_order(rec: Recorder) -> None:
    """RPC pod gone before the node pod went; a new node pod Ready before the new RPC pod was created."""
    rec.check()
    rpc = rec.of("Pod", component="rpc")
    node = rec.of("Pod", component="node")
    rpc_gone = next(s.rv for s in rpc if s.event == "DELETED")
    node_gone = next(s.rv for s in node if s.event == "DELETED")
    assert rpc_gone < node_gone, f"the node pod went before the RPC pod:\n{rec.timeline()}"
    old_node = {s.uid for s in node if s.rv <= node_gone}
    node_ready = next(s.rv for s in node if s.uid not in old_node and s.ready)
    old_rpc = {s.uid for s in rpc if s.rv <= rpc_gone}
    rpc_new = next(s.rv for s in rpc if s.uid not in old_rpc)
    assert node_gone < node_ready < rpc_new, f"the RPC came back before the node was Ready:\n{rec.timeline()}"


# --- backups ----------------------------------------------------------------------------------------------------------

def operator_metrics(operator: OperatorPod) -> str:
    """The operator pod's /metrics, by its pod IP."""
    pod = operator.ready_pod()
    assert pod is not None
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:9090/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def job_seconds(api: Api, name: str) -> float:
    job = client.BatchV1Api(api.kube).read_namespaced_job(name, api.ns)
    return float((job.status.completion_time - job.status.start_time).total_seconds())


def test_scheduled_and_on_demand_backups_are_verified_and_height_stamped_while_the_node_writes(
        api: Api, real_ns: RealNamespace, real_operator: OperatorPod) -> None:
    api.create("aitbcnodes", standin_node(real_ns, backup={"schedule": "* * * * *", "volume": {"size": "1Gi"},
                                                           "keep": {"count": 3}}))
    wait_ready(api, "the AitbcNode with a backup schedule")
    assert status_of(api, "backup", "nextScheduleTime")
    scheduled = wait_backup_after(api, None, "the first scheduled backup of every chain", timeout=150)
    directory = backup_dir_on_host(api)
    for chain, copy in scheduled.items():
        assert copy["time"].endswith(":00Z"), f"a scheduled copy is named after its minute slot: {copy}"
        assert_verified_copy(directory / chain, copy)
        # The node went on writing while and after the copy was taken.
        wait_until(lambda c=chain, h=copy["height"]: file_height(real_ns.chain_dir, c) > h + 2, 30,  # type: ignore[misc]
                   f"{chain} to grow past the copy")

    annotate(api, "aitbc.io/backup-now", "e2e-1")
    manual = wait_backup_after(api, scheduled[CHAINS[0]]["name"], "the on-demand backup")
    for chain, copy in manual.items():
        assert_verified_copy(directory / chain, copy)
        assert copy["height"] > scheduled[chain]["height"], "the later copy holds the blocks written meanwhile"
    assert any("Manual backup" in m for m in events(api, "BackupSucceeded")), events(api, "BackupSucceeded")
    assert status_of(api, "backup", "manualToken") == "e2e-1"
    job = next(j.metadata.name for j in client.BatchV1Api(api.kube).list_namespaced_job(api.ns).items
               if j.metadata.labels.get("aitbc.io/trigger") == "Manual")
    print(f"\non-demand backup Job of 2 small chains: {job_seconds(api, job):.0f} s from start to completion")
    # The series only a real node produces (tests/integration/test_rbac_usage.py leaves them to this test).
    labels = f'chain="{CHAINS[0]}",name="{NODE}",namespace="{api.ns}"'
    wait_until(lambda: all(f"{series}{{{labels}}}" in operator_metrics(real_operator) for series in (
        "aitbc_backup_last_success_timestamp_seconds", "aitbc_backup_last_size_bytes", "aitbc_chain_file_height",
        "aitbc_chain_rpc_height", "aitbc_chain_wal_bytes")), 30, "the backup and chain series on /metrics")


def test_adding_the_mempool_database_backs_up_every_chain_before_the_node_rolls(
        api: Api, real_ns: RealNamespace) -> None:
    from tests.e2e.test_real_node import create_database, database_ready

    create_database(api, "mempool", "mempool")
    api.create("aitbcnodes", standin_node(real_ns))
    first = wait_ready(api, "the AitbcNode on the SQLite mempool")
    wait_until(lambda: database_ready(api, "mempool"), STEP, "the mempool AitbcDatabase")
    old_pod = pod_uid(api, NODE_POD)
    api.patch_node({"mempool": {"databaseRef": {"name": "mempool"}}})
    after = wait_ready(api, "the rollout onto the PostgreSQL mempool", changed_from=first["status"]["configHash"])
    pre = after["status"]["backup"]["preMigration"]
    assert (pre["phase"], pre["targetHash"]) == ("Succeeded", after["status"]["configHash"])
    new_pod = api.pod(NODE_POD)
    assert new_pod is not None
    assert new_pod["metadata"]["uid"] != old_pod
    rolled_at = datetime.fromisoformat(new_pod["metadata"]["creationTimestamp"])  # to the second, like the times below
    # Without spec.backup the copies go to the chain volume's backups/ directory.
    for chain in CHAINS:
        directory = real_ns.chain_dir / "backups" / chain
        manifest = json.loads((directory / "manifest.json").read_text())
        (entry,) = manifest["backups"]
        assert entry["verified"] is True
        assert sqlite_one(directory / entry["name"], "PRAGMA integrity_check") == ("ok",)
        copied = datetime.fromisoformat(entry["time"])
        assert copied <= rolled_at, f"{chain}: copy at {copied}, node rolled at {rolled_at}"
    job = client.BatchV1Api(api.kube).read_namespaced_job(
        f"{NODE}-backup-pm-{after['status']['configHash'][:12]}", api.ns)
    finished = job.status.completion_time
    assert finished <= rolled_at, f"the backup Job finished at {finished}, after the node pod was made at {rolled_at}"


# --- restore ----------------------------------------------------------------------------------------------------------

def test_restore_refuses_a_missing_copy_then_restores_an_older_one_in_order(
        api: Api, real_ns: RealNamespace, recorder: Recorder) -> None:
    api.create("aitbcnodes", standin_node(real_ns, backup={"volume": {"size": "1Gi"}}))
    wait_ready(api, "the AitbcNode")
    base = rpc_url(api)
    annotate(api, "aitbc.io/backup-now", "before-restore")
    copy = wait_backup_after(api, None, "the backup to restore later")[CHAINS[0]]
    wait_until(lambda: file_height(real_ns.chain_dir) > copy["height"] + 20, 60, "20 blocks past the copy")

    node_uid = pod_uid(api, NODE_POD)
    api.patch_node({"restore": {"chain": CHAINS[0], "backup": "chain-20200101T000000Z-h1.db", "token": "r1"}})
    wait_until(lambda: status_of(api, "restore", "phase") == "Refused", STEP, "the refusal")
    assert "no backup 'chain-20200101T000000Z-h1.db'" in status_of(api, "restore", "error")
    assert pod_uid(api, NODE_POD) == node_uid, "a refused restore stopped nothing"
    assert not list((real_ns.chain_dir / "data" / CHAINS[0]).glob("chain.db.pre-restore-*"))

    before = file_height(real_ns.chain_dir)
    next_block = sqlite_one(real_ns.chain_dir / "data" / CHAINS[0] / "chain.db",
                            f"SELECT timestamp FROM block WHERE height = {copy['height'] + 1}")[0]
    with recorder, HeightWatch(base) as heights:
        started, requested_at = time.monotonic(), time.time()
        api.patch_node({"restore": {"chain": CHAINS[0], "backup": copy["name"], "token": "r2"}})
        wait_until(lambda: status_of(api, "restore", "phase") in ("Succeeded", "Failed"), 300, "the restore")
        took = time.monotonic() - started
        restore = status_of(api, "restore")
        assert restore["phase"] == "Succeeded", restore
        assert (restore["backup"], restore["height"]) == (copy["name"], copy["height"])
        wait_ready(api, "the AitbcNode after the restore")
        assert_stopped_then_started_in_order(recorder)
    print(f"\nrestore of a {copy['size']}-byte chain.db: {took:.1f} s from request to Succeeded")
    restored = real_ns.chain_dir / "data" / CHAINS[0] / "chain.db"
    assert "C" in lsattr_flags(restored, directory=False), "the restored file is NOCOW"
    assert sqlite_one(restored, "PRAGMA journal_mode") == ("wal",)
    assert list(restored.parent.glob("chain.db.pre-restore-*")), "the replaced file was moved aside, not deleted"
    # The node went on from the copy's height: the block after it was written again, after the restore began.
    rewritten = sqlite_one(restored, f"SELECT timestamp FROM block WHERE height = {copy['height'] + 1}")[0]
    assert next_block < requested_at - 1 <= rewritten, (next_block, requested_at, rewritten)
    # The RPC, restarted after the node, serves that file (it answered with the old heights up to the stop).
    wait_until(lambda: abs((rpc_height(base) or -100) - file_height(real_ns.chain_dir)) <= 2, 60,
               "the RPC to serve the restored file's height")
    assert max(heights.seen) >= before - 2, "the RPC served the pre-restore heights before it was stopped"


# --- maintenance ------------------------------------------------------------------------------------------------------

def test_vacuum_window_stops_rpc_then_node_and_brings_both_back(
        api: Api, real_ns: RealNamespace, recorder: Recorder) -> None:
    api.create("aitbcnodes", standin_node(real_ns, maintenance={"vacuum": True, "timeLimit": "5m"}))
    wait_ready(api, "the AitbcNode")
    with recorder:
        annotate(api, "aitbc.io/maintain-now", "m1")
        wait_until(lambda: (status_of(api, "maintenance", "window") or {}).get("phase") in ("Succeeded", "Failed"),
                   300, "the maintenance window")
        wait_ready(api, "the AitbcNode after the window")
        assert_stopped_then_started_in_order(recorder)
    window = status_of(api, "maintenance", "window")
    assert window["phase"] == "Succeeded", window
    assert "VACUUM" in window["message"]
    assert status_of(api, "maintenance", "reclaimedBytes") is not None
    took = (_time(window["finishedAt"]) - _time(window["startedAt"]))
    print(f"\nVACUUM window (2 chains, RPC and node stopped and started): {took:.0f} s")
    assert any("VACUUM" in m for m in events(api, "MaintenanceSucceeded"))
    base = rpc_url(api)
    wait_until(lambda: (rpc_height(base) or 0) >= file_height(real_ns.chain_dir) - 2, 60, "the RPC serving again")


def _time(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# --- stale RPC --------------------------------------------------------------------------------------------------------

#: Appends N blocks to a chain database and prints the new MAX(height) (run as the data owner, by the system Python:
#: the virtualenv's interpreter lies under root's home).
ADVANCE = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=10)
top, chain = conn.execute("SELECT MAX(height), chain_id FROM block").fetchone()
rows = [(top + i, f"{top + i:064x}", f"{top + i - 1:064x}", chain, int(time.time()), 0)
        for i in range(1, int(sys.argv[2]) + 1)]
conn.executemany("INSERT INTO block (height, hash, parent_hash, chain_id, timestamp, tx_count) VALUES (?,?,?,?,?,?)",
                 rows)
conn.commit()
conn.close()
print(rows[-1][0])
"""


def _advance_file(db: Path, blocks: int) -> int:
    """Append blocks to the file at the path (what a node restarted on it would write); the new MAX(height)."""
    done = subprocess.run(["/usr/bin/python3", "-c", ADVANCE, str(db), str(blocks)], capture_output=True, text=True,
                          check=True, user=DATA_UID, group=DATA_UID)
    return int(done.stdout.strip())


def test_a_stale_rpc_is_detected_and_restarted_within_the_grace_period(api: Api, real_ns: RealNamespace) -> None:
    """chain.db replaced under the running RPC (a new inode) and written on: the RPC's cached engine keeps reading
    the old file, the sidecar reads the new one. RpcStale, then one restart, then the RPC serves the file."""
    grace = 15
    api.create("aitbcnodes", standin_node(real_ns, health={"staleRpc": {"threshold": 5,
                                                                          "gracePeriod": f"{grace}s"}}))
    wait_ready(api, "the AitbcNode")
    base = rpc_url(api)
    wait_until(lambda: (rpc_height(base) or 0) > 3, 60, "the RPC to serve blocks")
    wait_until(lambda: condition(api.node(), "RpcStale") == ("False", "RpcCurrent"), 60, "RpcStale=False")
    rpc_pod = api.pods("rpc")[0]["metadata"]["uid"]
    db = real_ns.chain_dir / "data" / CHAINS[0] / "chain.db"
    _replace_chain_db(db)
    top = _advance_file(db, 2000)
    replaced = time.monotonic()
    assert (rpc_height(base) or 0) < top - 1000, "the RPC still reads the old file"

    try:
        wait_until(lambda: condition(api.node(), "RpcStale")[0] == "True", grace + 60, "RpcStale=True")
    except BaseException:
        pod = api.pod(NODE_POD) or {}
        print("status:", json.dumps(api.node().get("status"), indent=1, default=str))
        print("rpc:", rpc_height(base), "file:", file_height(real_ns.chain_dir))
        ip = (pod.get("status") or {}).get("podIP")
        with urllib.request.urlopen(f"http://{ip}:8090/chains", timeout=5) as resp:
            print("sidecar:", resp.read().decode())
        raise
    wait_until(lambda: (p := api.pods("rpc")) and p[0]["metadata"]["uid"] != rpc_pod, 60, "the RPC restarted")
    wait_until(lambda: (rpc_height(base) or 0) >= top, 60, "the restarted RPC to serve the file's height")
    healed = time.monotonic() - replaced
    print(f"\nstale RPC healed {healed:.0f} s after the file was replaced (grace period {grace} s, poll 5 s)")
    assert healed < grace + 60
    assert status_of(api, "health", "rpcRestarts") == 1
    assert events(api, "RpcStale"), "an Event says so"
    template = api.deploy()["spec"]["template"]["metadata"]["annotations"]
    assert template["aitbc.io/rpc-restarts"] == "1"
    wait_until(lambda: condition(api.node(), "RpcStale")[0] == "False", 60, "RpcStale=False again")


# --- bad requests -----------------------------------------------------------------------------------------------------

def test_bad_requests_are_refused_with_a_clear_reason(api: Api, real_ns: RealNamespace) -> None:
    bad = standin_node(real_ns, backup={"schedule": "every night"})
    with pytest.raises(ApiException) as refused:
        api.create("aitbcnodes", bad)
    assert "schedule must be a cron expression of five fields" in refused.value.body
    with pytest.raises(ApiException) as refused:
        api.create("aitbcnodes", standin_node(real_ns, restore={"chain": "ait-devnet", "token": "x"}))
    assert "restore.chain must be one of chains" in refused.value.body
    # A schedule of the right shape that cron cannot read: the operator says what is wrong.
    api.create("aitbcnodes", standin_node(real_ns, backup={"schedule": "0 25 * * *"}))
    wait_until(lambda: condition(api.node(), "Degraded") == ("True", "InvalidSpec"), STEP, "Degraded/InvalidSpec")
    message = next(c["message"] for c in api.node()["status"]["conditions"] if c["type"] == "Degraded")
    assert "backup.schedule" in message
    assert "Bad hour" in message
