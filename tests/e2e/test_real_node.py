"""End to end on the real node: the operator as a pod from its image, a kubelet running the volume-preparation init
container and the stand-in AITBC node/RPC, chain data on a loop-mounted Btrfs, PostgreSQL on the host.

What is checked is what the cluster, the files and the RPC show, not the operator's word: pod order from watches
(tests/integration/test_node_operator.py's Recorder), NOCOW with ``lsattr``, heights with SQLite on the host and
``GET /rpc/head`` through the Service's ClusterIP (kube-proxy routes it from the host too).
"""

from __future__ import annotations

import itertools
import json
import shutil
import sqlite3
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from localcluster.images import OPERATOR, archive_image_id
from localcluster.node import RealNodeCluster

from tests.cluster.fixtures import wait_until
from tests.factories import make_database, make_node
from tests.integration.test_node_operator import (
    DEPLOY,
    NODE,
    NODE_POD,
    Api,
    Recorder,
    assert_node_then_rpc,
    condition,
    converged,
)
from tests.realnode_fixtures import OperatorPod, RealNamespace

pytestmark = pytest.mark.timeout(600)
STANDIN = "aitbc-standin:dev"
CHAINS = ["ait-mainnet", "ait-testnet"]
#: On a real kubelet a pod starts in a few seconds; a rollout of node then RPC in well under a minute.
STEP = 120.0


# --- helpers ----------------------------------------------------------------------------------------------------------

def standin_node(ns: RealNamespace, **spec: Any) -> dict[str, Any]:
    """An AitbcNode running the stand-in images on a hostPath of the test's Btrfs directory."""
    base: dict[str, Any] = {
        "chains": CHAINS, "chainId": CHAINS[0],
        "node": {"image": STANDIN, "imagePullPolicy": "Never", "args": ["node"], "port": 8080},
        "rpc": {"image": STANDIN, "imagePullPolicy": "Never", "args": ["rpc"], "port": 8006},
        "storage": {"pvc": None, "hostPath": {"path": str(ns.chain_dir), "nodeName": "aitbc-worker"}},
    }
    node = make_node(NODE, ns.name, **base)
    node["spec"]["storage"].pop("pvc", None)
    for key, value in spec.items():
        node["spec"][key] = value
    return node


def wait_ready(api: Api, what: str, *, changed_from: str | None = None) -> dict[str, Any]:
    """Wait until the AitbcNode is Idle/Ready (on a hash other than `changed_from`)."""
    seen: dict[str, Any] = {}

    def done() -> bool:
        seen["node"] = node = api.node()
        return converged(node) and (changed_from is None or node["status"]["configHash"] != changed_from)

    wait_until(done, STEP, what, interval=0.5)
    return seen["node"]


def rpc_url(api: Api) -> str:
    """The RPC Service by ClusterIP (reachable from the host through kube-proxy's rules)."""
    ip = api.core.read_namespaced_service(f"{NODE}-rpc", api.ns).spec.cluster_ip
    return f"http://{ip}:8006"


def rpc_height(base: str, chain: str = CHAINS[0]) -> int | None:
    """The RPC's head height, None when it does not answer (e.g. while restarting)."""
    try:
        with urllib.request.urlopen(f"{base}/rpc/head?chain_id={chain}", timeout=2) as response:
            return int(json.loads(response.read())["height"])
    except (OSError, ValueError, KeyError):
        return None


def file_height(chain_dir: Path, chain: str = CHAINS[0]) -> int:
    """MAX(height) in the chain database on the host (read-only; WAL readers need the -shm the node keeps)."""
    path = chain_dir / "data" / chain / "chain.db"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("SELECT MAX(height) FROM block").fetchone()
    finally:
        conn.close()
    return int(row[0] or 0)


def lsattr_flags(path: Path, *, directory: bool) -> str:
    """The attribute flags `lsattr` prints for a file or directory."""
    argv = ["lsattr", "-d", str(path)] if directory else ["lsattr", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()[0]


def create_database(api: Api, name: str, service: str) -> None:
    api.create("aitbcdatabases", make_database(name, api.ns, service=service,
                                               databaseName=f"{api.ns.replace('-', '_')}_{service}"[:63],
                                               roleName=f"{api.ns.replace('-', '_')}_{service}"[:63]))


def database_ready(api: Api, name: str) -> bool:
    obj = api.get("aitbcdatabases", name)
    return condition(obj, "Ready")[0] == "True" and \
        obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]


class HeightWatch:
    """Poll the RPC's height in the background; remember every answer (to check it never went backwards)."""

    def __init__(self, base: str) -> None:
        self.base, self.seen = base, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            height = rpc_height(self.base)
            if height is not None:
                self.seen.append(height)
            self._stop.wait(0.3)

    def __enter__(self) -> HeightWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def api(real_kube: client.ApiClient, real_ns: RealNamespace) -> Api:
    return Api(real_kube, real_ns.name)


@pytest.fixture
def recorder(real_cluster: RealNodeCluster, real_ns: RealNamespace) -> Iterator[Recorder]:
    rec = Recorder(real_cluster.kubeconfig, real_ns.name)
    yield rec
    rec.__exit__()


# --- the operator pod -------------------------------------------------------------------------------------------------

def test_operator_runs_as_a_pod_from_the_image_built_from_the_dockerfile(
        real_operator: OperatorPod, real_cluster: RealNodeCluster) -> None:
    pod = real_operator.ready_pod()
    assert pod is not None
    container = pod["spec"]["containers"][0]
    assert container["image"] == "aitbc-operator:dev"
    assert container["imagePullPolicy"] == "Never"
    assert pod["spec"]["serviceAccountName"] == "aitbc-operator"  # the generated RBAC, nothing else
    status = pod["status"]["containerStatuses"][0]
    archive = next(i.archive for i in real_cluster.node.images if i.ref == OPERATOR)
    assert status["imageID"] == archive_image_id(archive)  # exactly the image built here, not some other one
    assert status["restartCount"] == 0, "the operator pod restarted (crash loop?)"
    assert pod["spec"]["securityContext"]["runAsUser"] == 65532  # the uid without a passwd entry that crashed kopf
    assert "Traceback" not in real_operator.logs(), real_operator.logs()


# --- databases --------------------------------------------------------------------------------------------------------

def test_the_five_databases_become_ready_and_their_secrets_connect_from_a_pod(api: Api, real_ns: RealNamespace) -> None:
    services = ["coordinator", "exchange", "marketplace", "mempool", "wallet"]
    for service in services:
        create_database(api, service, service)
    wait_until(lambda: all(database_ready(api, s) for s in services), STEP, "five AitbcDatabases Ready")
    script = ("import os, sqlalchemy; e = sqlalchemy.create_engine(os.environ['DATABASE_URL']); "
              "c = e.connect(); print(c.exec_driver_sql('select current_user, current_database()').one()); "
              "c.exec_driver_sql('create table t (id int)'); c.commit()")
    for service in services:
        api.core.create_namespaced_pod(api.ns, {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"connect-{service}"},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "c", "image": STANDIN, "imagePullPolicy": "Never", "command": ["python", "-c", script],
                "envFrom": [{"secretRef": {"name": f"{service}-db"}}]}]}})

    def finished(service: str) -> str | None:
        pod = api.pod(f"connect-{service}")
        return (pod or {}).get("status", {}).get("phase")

    wait_until(lambda: all(finished(s) in ("Succeeded", "Failed") for s in services), STEP, "the connect pods")
    for service in services:
        log = api.core.read_namespaced_pod_log(f"connect-{service}", api.ns)
        assert finished(service) == "Succeeded", f"{service}: {log}"
        role = f"{api.ns.replace('-', '_')}_{service}"[:63]
        assert role in log  # connected as the database's own role, and it could create a table (owner)


# --- the node on Btrfs ------------------------------------------------------------------------------------------------

def test_node_on_btrfs_is_prepared_by_the_init_container_and_heights_grow(
        api: Api, real_ns: RealNamespace) -> None:
    api.create("aitbcnodes", standin_node(real_ns))
    node = wait_ready(api, "the AitbcNode to become Ready on the real node")
    volume = node["status"]["volume"]
    assert volume["fs"] == "btrfs"
    assert volume["nocow"] == "set"
    assert condition(node, "StorageReady") == ("True", "Prepared")
    for chain in CHAINS:
        chain_dir = real_ns.chain_dir / "data" / chain
        assert "C" in lsattr_flags(chain_dir, directory=True), f"no NOCOW on {chain_dir}"
        wait_until(lambda c=chain_dir: (c / "chain.db").exists(), 30, f"{chain_dir}/chain.db")  # type: ignore[misc]
        assert "C" in lsattr_flags(chain_dir / "chain.db", directory=False)
        conn = sqlite3.connect(f"file:{chain_dir / 'chain.db'}?mode=ro", uri=True)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
    first = file_height(real_ns.chain_dir)
    wait_until(lambda: file_height(real_ns.chain_dir) >= first + 3, 30, "the node to write blocks")

    def reported() -> list[int]:
        chains = api.node()["status"].get("chains") or []
        return [c.get("height") or 0 for c in chains]

    wait_until(lambda: min(reported()) > 0, 60, "the operator to report RPC heights")
    before = reported()
    wait_until(lambda: all(a > b for a, b in zip(reported(), before, strict=True)), 60, "the heights to grow")


# --- coordinated rollout ----------------------------------------------------------------------------------------------

def test_database_change_rolls_node_then_rpc_and_the_rpc_serves_the_new_files(
        api: Api, real_ns: RealNamespace, recorder: Recorder) -> None:
    create_database(api, "mempool", "mempool")
    api.create("aitbcnodes", standin_node(real_ns))
    first = wait_ready(api, "the first rollout")
    wait_until(lambda: database_ready(api, "mempool"), STEP, "the mempool AitbcDatabase")
    with recorder:
        api.patch_node({"mempool": {"databaseRef": {"name": "mempool"}}})
        after = wait_ready(api, "the rollout onto the PostgreSQL mempool", changed_from=first["status"]["configHash"])
        assert_node_then_rpc(recorder, after["status"]["configHash"])
    base = rpc_url(api)
    wait_until(lambda: (rpc_height(base) or 0) >= file_height(real_ns.chain_dir) - 2, 30,
               "the RPC to serve the node's current height")
    with real_ns.pg.server.superuser(f"{api.ns.replace('-', '_')}_mempool"[:63]) as conn:
        rows = conn.execute("SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'mempool_tx'").fetchall()
    assert rows, "the node did not create its mempool table in PostgreSQL"
    assert int(rows[0][0]) > 0


def test_node_pod_deleted_restarts_the_rpc_after_the_node_and_heights_never_go_back(
        api: Api, real_ns: RealNamespace, recorder: Recorder) -> None:
    api.create("aitbcnodes", standin_node(real_ns))
    wait_ready(api, "the AitbcNode")
    base = rpc_url(api)
    wait_until(lambda: (rpc_height(base) or 0) > 0, 60, "the RPC to answer")
    old_node_uid = api.pod(NODE_POD)["metadata"]["uid"]  # type: ignore[index]
    with HeightWatch(base) as heights, recorder:
        api.core.delete_namespaced_pod(NODE_POD, api.ns)
        wait_until(lambda: (api.pod(NODE_POD) or {}).get("metadata", {}).get("uid") not in (None, old_node_uid),
                   STEP, "a new node pod")
        node = wait_ready(api, "the AitbcNode after the node pod was replaced")
        new_uid = api.pod(NODE_POD)["metadata"]["uid"]  # type: ignore[index]
        marker = node["status"]["rollout"]["nodeRestartMarker"]
        assert marker.startswith(new_uid)
        assert_node_then_rpc(recorder, node["status"]["configHash"], marker=marker)
        wait_until(lambda: (rpc_height(base) or 0) >= file_height(real_ns.chain_dir) - 2, 60,
                   "the restarted RPC to serve the current height")
    seen = heights.seen
    assert len(seen) > 5
    assert all(b >= a for a, b in itertools.pairwise(seen)), f"the RPC height went backwards: {seen}"


def test_password_rotation_rolls_both_and_the_mempool_keeps_writing_to_postgresql(
        api: Api, real_ns: RealNamespace, recorder: Recorder) -> None:
    create_database(api, "mempool", "mempool")
    wait_until(lambda: database_ready(api, "mempool"), STEP, "the mempool AitbcDatabase")
    api.create("aitbcnodes", standin_node(real_ns, mempool={"databaseRef": {"name": "mempool"}}))
    first = wait_ready(api, "the AitbcNode on the PostgreSQL mempool")
    dbname = f"{api.ns.replace('-', '_')}_mempool"[:63]

    def inserts() -> int:
        with real_ns.pg.server.superuser(dbname) as conn:
            row = conn.execute("SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'mempool_tx'").fetchone()
        return int(row[0]) if row else 0

    wait_until(lambda: inserts() > 0, 60, "mempool writes to PostgreSQL")
    with recorder:
        api.patch("aitbcdatabases", "mempool", {"metadata": {"annotations": {"aitbc.io/rotate-password": "e2e-1"}}})
        after = wait_ready(api, "the rollout after the rotation", changed_from=first["status"]["configHash"])
        assert_node_then_rpc(recorder, after["status"]["configHash"])
    rotated_at = inserts()
    wait_until(lambda: inserts() >= rotated_at + 5, 60, "mempool writes with the new password")


def test_a_mempool_database_verified_by_its_ca_is_reached_over_tls_from_the_node(
        api: Api, real_ns: RealNamespace) -> None:
    """sslMode verify-ca with caSecretRef: MEMPOOL_DB_URL names sslrootcert=/etc/aitbc/postgres-ca/ca.crt, the node
    pod mounts the Secret's ca.crt there, and the node's connections to PostgreSQL use TLS."""
    ca_pem = real_ns.pg.server.ca_pem
    assert ca_pem, "the real node's PostgreSQL runs with its own CA"
    api.core.create_namespaced_secret(api.ns, client.V1Secret(metadata=client.V1ObjectMeta(name="postgres-ca"),
                                                              string_data={"ca.crt": ca_pem}))
    dbname = f"{api.ns.replace('-', '_')}_mempool"[:63]
    api.create("aitbcdatabases", make_database(
        "mempool", api.ns, service="mempool", databaseName=dbname, roleName=dbname,
        server={"sslMode": "verify-ca", "caSecretRef": {"name": "postgres-ca", "key": "ca.crt"}}))
    wait_until(lambda: database_ready(api, "mempool"), STEP, "the mempool AitbcDatabase (verify-ca)")
    api.create("aitbcnodes", standin_node(real_ns, mempool={"databaseRef": {"name": "mempool"}}))
    wait_ready(api, "the AitbcNode on the TLS-verified PostgreSQL mempool")
    volumes = api.sts()["spec"]["template"]["spec"]["volumes"]
    ca_volume = next(v for v in volumes if v["name"] == "postgres-ca")
    assert ca_volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]

    def node_connections() -> list[tuple[Any, ...]]:
        with real_ns.pg.server.superuser("postgres") as conn:
            return conn.execute("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                                "WHERE a.usename = %s", (dbname,)).fetchall()

    wait_until(lambda: node_connections(), 60, "the node's connection to its mempool database")
    assert all(row[0] for row in node_connections()), "every connection of the node's role uses TLS"


@pytest.mark.parametrize("privileged", [False, True])
def test_volume_preparation_least_privilege_and_privileged_both_set_nocow(
        api: Api, real_ns: RealNamespace, privileged: bool) -> None:
    api.create("aitbcnodes", standin_node(real_ns, volumePrep={"privileged": privileged}))
    node = wait_ready(api, f"the AitbcNode with volumePrep.privileged={privileged}")
    assert node["status"]["volume"]["nocow"] == "set"
    sts = api.sts()
    init = sts["spec"]["template"]["spec"]["initContainers"][0]
    assert bool(init["securityContext"].get("privileged")) is privileged


def test_operator_pod_killed_mid_rollout_the_new_pod_resumes_in_order(
        api: Api, real_ns: RealNamespace, real_operator: OperatorPod, recorder: Recorder) -> None:
    api.create("aitbcnodes", standin_node(real_ns))
    first = wait_ready(api, "the AitbcNode")
    with recorder:
        api.patch_node({"redisUrl": "redis://redis-e2e:6379"})
        wait_until(lambda: (api.node()["status"].get("rollout") or {}).get("phase") == "RollingNode", 30,
                   "the rollout to start")
        old = real_operator.ready_pod()
        assert old is not None
        api.core.delete_namespaced_pod(old["metadata"]["name"], real_operator.namespace, grace_period_seconds=0)
        wait_until(lambda: (p := real_operator.ready_pod()) is not None and p["metadata"]["uid"] !=
                   old["metadata"]["uid"], STEP, "a new operator pod")
        after = wait_ready(api, "the rollout finished by the new operator pod",
                           changed_from=first["status"]["configHash"])
        assert_node_then_rpc(recorder, after["status"]["configHash"])
    deploys = recorder.templates("Deployment", DEPLOY)
    assert [h for _, h, _ in deploys][-1] == after["status"]["configHash"]


# --- the bug the ordering exists for ----------------------------------------------------------------------------------

def _replace_chain_db(db: Path) -> None:
    """Put a copy of chain.db in its place (a new inode) and move the old file's -wal/-shm aside, as a restore or a
    NOCOW re-creation does (SQLite would otherwise pair the new file with the old WAL)."""
    fresh = db.with_name("chain.db.new")
    src, dst = sqlite3.connect(f"file:{db}?mode=ro", uri=True), sqlite3.connect(fresh)
    src.backup(dst)
    dst.close()
    src.close()
    shutil.chown(fresh, db.stat().st_uid, db.stat().st_gid)
    for suffix in ("-wal", "-shm"):
        sidecar = Path(f"{db}{suffix}")
        if sidecar.exists():
            sidecar.rename(db.with_name(f"chain.db.replaced{suffix}"))
    fresh.rename(db)


def _plain_pod(name: str, args: list[str], chain_dir: Path) -> dict[str, Any]:
    """The stand-in as a bare pod on the chain directory (what a hand-made setup without the operator runs)."""
    env = [{"name": "DATA_DIR", "value": "/var/lib/aitbc"}, {"name": "CHAINS", "value": ",".join(CHAINS)},
           {"name": "CHAIN_ID", "value": CHAINS[0]}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"e2e": name}},
            "spec": {"nodeName": "aitbc-worker", "containers": [{
                "name": "c", "image": STANDIN, "imagePullPolicy": "Never", "args": args, "env": env,
                "securityContext": {"runAsUser": 0},
                "volumeMounts": [{"name": "data", "mountPath": "/var/lib/aitbc"}]}],
                "volumes": [{"name": "data", "hostPath": {"path": str(chain_dir), "type": "DirectoryOrCreate"}}]}}


def _pod_ip(api: Api, name: str) -> str | None:
    pod = api.pod(name) or {}
    ready = condition(pod, "Ready")[0] == "True"
    return (pod.get("status") or {}).get("podIP") if ready else None


def test_without_the_ordering_a_replaced_database_leaves_the_rpc_stale(api: Api, real_ns: RealNamespace) -> None:
    """The stand-in reproduces the runbook's bug: node restarted alone after chain.db was replaced, the RPC keeps
    its cached engine on the old file and serves a frozen height while the node writes the new one."""
    data = real_ns.chain_dir
    for chain in CHAINS:  # the runbook's `mkdir -p /var/lib/aitbc/data/<chain>` (the init container's job otherwise)
        (data / "data" / chain).mkdir(parents=True)
    for name, args in (("plain-node", ["node"]), ("plain-rpc", ["rpc"])):
        api.core.create_namespaced_pod(api.ns, _plain_pod(name, args, data))
    wait_until(lambda: _pod_ip(api, "plain-rpc") is not None, STEP, "the plain RPC pod")
    base = f"http://{_pod_ip(api, 'plain-rpc')}:8006"
    wait_until(lambda: (rpc_height(base) or 0) > 3, 60, "the plain RPC to serve blocks")
    _replace_chain_db(data / "data" / CHAINS[0] / "chain.db")
    api.core.delete_namespaced_pod("plain-node", api.ns)  # the node restarted alone, as `systemctl restart node`
    wait_until(lambda: api.pod("plain-node") is None, STEP, "the plain node pod to stop")
    frozen = rpc_height(base)
    assert frozen is not None
    api.core.create_namespaced_pod(api.ns, _plain_pod("plain-node", ["node"], data))
    wait_until(lambda: file_height(data) > frozen + 5, 60, "the restarted node to write past the RPC's height")
    assert rpc_height(base) == frozen, "expected the stale-engine bug: the unrestarted RPC serves the old file"


def test_with_the_operator_a_replaced_database_is_served_fresh_after_the_node_restarts(
        api: Api, real_ns: RealNamespace, recorder: Recorder) -> None:
    """The same replacement and node restart under the operator: the RPC is restarted after the node is Ready and
    serves the file the node writes."""
    api.create("aitbcnodes", standin_node(real_ns))
    wait_ready(api, "the AitbcNode")
    base = rpc_url(api)
    wait_until(lambda: (rpc_height(base) or 0) > 3, 60, "the RPC to serve blocks")
    _replace_chain_db(real_ns.chain_dir / "data" / CHAINS[0] / "chain.db")
    old = api.pod(NODE_POD)["metadata"]["uid"]  # type: ignore[index]
    with recorder:
        api.core.delete_namespaced_pod(NODE_POD, api.ns)
        wait_until(lambda: (api.pod(NODE_POD) or {}).get("metadata", {}).get("uid") not in (None, old), STEP,
                   "a new node pod")
        node = wait_ready(api, "the AitbcNode after the node restart")
        marker = node["status"]["rollout"]["nodeRestartMarker"]
        assert_node_then_rpc(recorder, node["status"]["configHash"], marker=marker)
    wait_until(lambda: file_height(real_ns.chain_dir) > 10, 60, "blocks in the new file")
    wait_until(lambda: abs((rpc_height(base) or -100) - file_height(real_ns.chain_dir)) <= 2, 60,
               "the RPC to follow the file the node writes")


# --- workload errors, as a real kubelet reports them --------------------------------------------------------------

def _degraded_within(api: Api, seconds: float) -> tuple[str | None, str]:
    """Wait until the AitbcNode is Degraded; (reason, message)."""
    seen: dict[str, Any] = {}

    def degraded() -> bool:
        node = api.node()
        for cond in (node.get("status") or {}).get("conditions") or []:
            if cond["type"] == "Degraded" and cond["status"] == "True":
                seen.update(cond)
                return True
        return False

    wait_until(degraded, seconds, "the AitbcNode to be Degraded", interval=0.5)
    return seen.get("reason"), seen.get("message", "")


@pytest.mark.parametrize(
    ("change", "reason", "words"),
    [
        # an image the node does not have, never pulled
        ({"node": {"image": "aitbc-standin:absent", "imagePullPolicy": "Never", "args": ["node"], "port": 8080}},
         "ErrImageNeverPull", "aitbc-standin:absent"),
        # the node process exits at once (an unknown role): the kubelet backs off
        ({"node": {"image": STANDIN, "imagePullPolicy": "Never", "args": ["no-such-role"], "port": 8080}},
         "CrashLoopBackOff", "container node"),
        # a Secret key the pod needs is missing
        ({"node": {"image": STANDIN, "imagePullPolicy": "Never", "args": ["node"], "port": 8080,
                   "env": [{"name": "EXTRA", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]}},
         "CreateContainerConfigError", "absent"),
    ],
    ids=["image-never-pulled", "crash-loop", "missing-secret"],
)
def test_a_pod_that_cannot_run_makes_the_node_degraded_within_seconds(
        api: Api, real_ns: RealNamespace, change: dict[str, Any], reason: str, words: str) -> None:
    began = time.monotonic()
    api.create("aitbcnodes", standin_node(real_ns, **change))
    got, message = _degraded_within(api, 90)
    assert got == reason, message
    assert words in message
    assert time.monotonic() - began < 90  # not the 10-minute rollout timeout
    assert not api.exists(api.apps.read_namespaced_deployment, DEPLOY)  # the RPC never went ahead of the node


def test_a_corrupt_chain_database_fails_the_init_container_and_says_so(api: Api, real_ns: RealNamespace) -> None:
    db = real_ns.chain_dir / "data" / CHAINS[0] / "chain.db"
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE block (height INTEGER PRIMARY KEY, hash TEXT)")
    conn.executemany("INSERT INTO block VALUES (?, ?)", ((h, "x" * 64) for h in range(5000)))
    conn.commit()
    conn.close()
    with db.open("r+b") as f:  # damage the b-tree pages after the schema page
        f.seek(4096)
        f.write(b"\xa5" * (db.stat().st_size - 4096))
    before = db.read_bytes()
    api.create("aitbcnodes", standin_node(real_ns))
    got, message = _degraded_within(api, 90)
    assert got == "InitContainerFailed", message
    assert "corrupt" in message or "malformed" in message, message
    assert db.read_bytes() == before  # left byte for byte as it was: never repaired automatically
