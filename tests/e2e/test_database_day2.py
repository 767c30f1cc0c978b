"""AitbcDatabase day-2 end to end on the real node: the operator as a pod from its image, consumer Deployments of the
stand-in image opening PostgreSQL connections, dump and restore Jobs of a pg_dump image (``aitbc-pgtools:dev``,
Debian's postgresql-client-15, named in ``spec.backup.image``), dumps on a hostPath volume of the test's Btrfs.

What is checked is what the pods' logs, the server and the volume show, not the operator's word.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from localcluster.node import RealNodeCluster

from tests.cluster.fixtures import wait_until
from tests.factories import make_database
from tests.integration.test_node_operator import Api, condition
from tests.pg.server import find_debian_bin_dir
from tests.realnode_fixtures import RealNamespace

pytestmark = pytest.mark.timeout(900)
STANDIN = "aitbc-standin:dev"
PGTOOLS = "aitbc-pgtools:dev"
STEP = 120.0
#: Opens a new connection through the Secret it was started with every 50 ms; prints every failure.
CLIENT = """
import os, sys, time, psycopg
ok = 0
while True:
    try:
        with psycopg.connect(os.environ["uri"], connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        ok += 1
        if ok % 40 == 1:
            print("OK", ok, flush=True)
    except Exception as exc:
        print("FAIL", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "", flush=True)
    time.sleep(0.05)
"""


@pytest.fixture
def api(real_kube: client.ApiClient, real_ns: RealNamespace) -> Api:
    return Api(real_kube, real_ns.name)


def unique(ns: RealNamespace, what: str) -> str:
    """A database/role name unique on the shared server."""
    return f"{ns.name.replace('-', '_')}_{what}"[:55]


def client_deployment(name: str, secret: str) -> dict[str, Any]:
    """A consumer: the stand-in image running CLIENT with the connection Secret as its environment."""
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "terminationGracePeriodSeconds": 2,
                         "containers": [{"name": "client", "image": STANDIN, "imagePullPolicy": "Never",
                                         "command": ["python", "-c", CLIENT],
                                         "envFrom": [{"secretRef": {"name": secret}}]}]}}}}


def ready(api: Api, name: str) -> bool:
    obj = api.get("aitbcdatabases", name)
    return condition(obj, "Ready")[0] == "True" and \
        obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]


def secret(api: Api, name: str) -> dict[str, str]:
    data = api.core.read_namespaced_secret(name, api.ns).data or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def client_pods(api: Api, name: str) -> list[dict[str, Any]]:
    found = api.core.list_namespaced_pod(api.ns, label_selector=f"app={name}")
    return [api.kube.sanitize_for_serialization(p) for p in found.items]


def running_pod(api: Api, name: str) -> str | None:
    for pod in client_pods(api, name):
        conds = (pod.get("status") or {}).get("conditions") or []
        if not pod["metadata"].get("deletionTimestamp") and any(
                c["type"] == "Ready" and c["status"] == "True" for c in conds):
            return str(pod["metadata"]["name"])
    return None


class LogFollower:
    """Follows a pod's log until the pod ends, keeping every line (the old pod's log is gone with it)."""

    def __init__(self, api: Api, pod: str) -> None:
        self.lines: list[str] = []
        self._api, self._pod = api, pod
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            stream = self._api.core.read_namespaced_pod_log(self._pod, self._api.ns, follow=True,
                                                            _preload_content=False)
            for raw in stream:
                self.lines.extend(raw.decode(errors="replace").splitlines())
        except (ApiException, OSError):
            return

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def failures(self) -> list[str]:
        return [line for line in self.lines if line.startswith("FAIL")]

    @property
    def successes(self) -> int:
        return sum(1 for line in self.lines if line.startswith("OK"))


class HostClient:
    """The same client on the host, with the old Secret's URI: a consumer that has not been rolled yet."""

    def __init__(self, uri: str) -> None:
        self.uri, self.ok, self.failures = uri, 0, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.uri, connect_timeout=3) as conn:
                    conn.execute("SELECT 1")
                self.ok += 1
            except psycopg.Error as exc:
                self.failures.append(str(exc).splitlines()[0])
            self._stop.wait(0.05)

    def __enter__(self) -> HostClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def works(uri: str) -> bool:
    try:
        with psycopg.connect(uri, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def test_alternating_roles_rotation_never_fails_a_client_of_the_old_secret_until_it_is_rolled(
        api: Api, real_ns: RealNamespace) -> None:
    name = unique(real_ns, "ex")
    api.apps.create_namespaced_deployment(api.ns, client_deployment("client", "ex-db"))
    api.create("aitbcdatabases", make_database(
        "ex", api.ns, service="exchange", databaseName=name, roleName=f"{name}_app",
        server={"adminSecretRef": {"name": "postgres-admin"}, "sslMode": "disable"},
        password={"rotationStrategy": "AlternatingRoles", "gracePeriod": "10m"},
        consumers=[{"kind": "Deployment", "name": "client"}]))
    wait_until(lambda: ready(api, "ex"), STEP, "the AitbcDatabase Ready")
    wait_until(lambda: running_pod(api, "client") is not None, STEP, "the client pod Ready")
    old = secret(api, "ex-db")
    assert old["username"] == f"{name}_app_a"
    first_pod = running_pod(api, "client")
    assert first_pod is not None
    old_pod_log = LogFollower(api, first_pod)
    wait_until(lambda: old_pod_log.successes >= 1, 60, "the client connecting")

    # Hold the consumer back (paused rollout) for a while after the switch: the old Secret must keep working.
    api.apps.patch_namespaced_deployment("client", api.ns, {"spec": {"paused": True}})
    with HostClient(old["uri"]) as host:
        api.patch("aitbcdatabases", "ex", {"spec": {"password": {"rotationToken": "e2e-1"}}})
        wait_until(lambda: secret(api, "ex-db")["username"] == f"{name}_app_b", STEP, "the Secret switched")
        assert works(secret(api, "ex-db")["uri"]), "the new Secret works at once"
        switched_at = time.monotonic()
        wait_until(lambda: time.monotonic() - switched_at > 10 and host.ok > 150, 60, "10 s of the old Secret")
        assert api.get("aitbcdatabases", "ex")["status"]["rotation"]["phase"] == "Switched"
        api.apps.patch_namespaced_deployment("client", api.ns, {"spec": {"paused": False}})
    assert host.failures == [], f"the old Secret failed before its consumer was rolled: {host.failures[:3]}"

    wait_until(lambda: api.get("aitbcdatabases", "ex")["status"]["rotation"]["phase"] == "Idle", STEP,
               "the old login retired once the client rolled")
    old_pod_log.join(30)
    assert old_pod_log.failures == [], f"the old pod failed to connect: {old_pod_log.failures[:3]}"
    assert old_pod_log.successes >= 3
    new_pod = running_pod(api, "client")
    assert new_pod is not None
    assert new_pod != first_pod
    new_log = LogFollower(api, new_pod)
    wait_until(lambda: new_log.successes >= 2, 60, "the rolled client connecting with the new Secret")
    assert new_log.failures == []
    assert not works(old["uri"]), "the retired login's password no longer works"
    status = api.get("aitbcdatabases", "ex")["status"]
    assert [(c["name"], c["current"]) for c in status["consumers"]] == [("client", True)]


# --- backups and restore ------------------------------------------------------------------------------------------


@pytest.fixture
def dumps(api: Api, real_ns: RealNamespace) -> Iterator[Path]:
    """A hostPath PersistentVolume on the test's Btrfs directory, bound to claim `dumps`, writable by uid 999."""
    path = real_ns.chain_dir / "dumps"
    path.mkdir(parents=True)
    os.chown(path, 999, 999)
    pv_name = f"{api.ns}-dumps"
    api.core.create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(path), "type": "Directory"},
                 "claimRef": {"namespace": api.ns, "name": "dumps"}}})
    api.core.create_namespaced_persistent_volume_claim(api.ns, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "dumps"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv_name,
                 "resources": {"requests": {"storage": "1Gi"}}}})
    try:
        yield path
    finally:
        try:
            api.core.delete_persistent_volume(pv_name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def rows(uri: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(uri, connect_timeout=5) as conn:
        return conn.execute("SELECT id, note FROM trades ORDER BY id").fetchall()


def backup_status(api: Api) -> dict[str, Any]:
    return dict(api.get("aitbcdatabases", "bk").get("status", {}).get("backup") or {})


def restore_status(api: Api) -> dict[str, Any]:
    return dict(api.get("aitbcdatabases", "bk").get("status", {}).get("restore") or {})


class Watcher:
    """Samples the consumer's replicas and the CronJob's suspend flag in the background while a restore runs."""

    def __init__(self, api: Api) -> None:
        self.replicas: set[int] = set()
        self.suspended: set[bool] = set()
        self._api, self._stop = api, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        batch = client.BatchV1Api(self._api.kube)
        while not self._stop.is_set():
            self.replicas.add(int(self._api.apps.read_namespaced_deployment("client", self._api.ns).spec.replicas))
            self.suspended.add(bool(batch.read_namespaced_cron_job("bk-backup", self._api.ns).spec.suspend))
            self._stop.wait(0.3)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_dumps_on_demand_and_from_the_cron_job_then_a_restore_that_stops_and_brings_back_the_consumers(
        api: Api, real_ns: RealNamespace, real_cluster: RealNodeCluster, dumps: Path) -> None:
    name = unique(real_ns, "bk")
    api.apps.create_namespaced_deployment(api.ns, client_deployment("client", "bk-db"))
    api.create("aitbcdatabases", make_database(
        "bk", api.ns, service="wallet", databaseName=name, roleName=f"{name}_app",
        server={"adminSecretRef": {"name": "postgres-admin"}, "sslMode": "disable"},
        consumers=[{"kind": "Deployment", "name": "client"}],
        backup={"schedule": "0 3 * * *", "keep": 5, "claimName": "dumps", "image": PGTOOLS}))
    wait_until(lambda: ready(api, "bk"), STEP, "the AitbcDatabase Ready")
    uri = secret(api, "bk-db")["uri"]
    with psycopg.connect(uri) as conn:
        conn.execute("CREATE TABLE trades (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO trades VALUES (1, 'dumped'), (2, 'dumped')")

    api.patch("aitbcdatabases", "bk", {"metadata": {"annotations": {"aitbc.io/backup-now": "e2e-1"}}})
    wait_until(lambda: backup_status(api).get("lastFile") is not None or backup_status(api).get("lastFailureMessage"),
               STEP, "the on-demand dump")
    status = backup_status(api)
    assert status.get("lastFailureMessage") is None, status
    dump = status["lastFile"]
    assert (dumps / dump).stat().st_size == status["lastSizeBytes"]
    pg_restore = find_debian_bin_dir("15")
    assert pg_restore is not None
    listed = subprocess.run([str(pg_restore / "pg_restore"), "--list", str(dumps / dump)], capture_output=True,
                            text=True, check=True).stdout
    assert "TABLE DATA public trades" in listed

    # A Job made from the CronJob's own template (what the schedule runs) is recorded too.
    real_cluster.kubectl("-n", api.ns, "create", "job", "bk-manual", "--from=cronjob/bk-backup")
    wait_until(lambda: backup_status(api).get("lastJob") == "bk-manual", STEP, "the CronJob's dump recorded")
    assert backup_status(api)["lastFile"] != dump

    with psycopg.connect(uri) as conn:
        conn.execute("UPDATE trades SET note = 'changed'")
        conn.execute("INSERT INTO trades VALUES (3, 'after the dump')")

    # A missing dump is refused: nothing stopped, nothing dropped.
    generation = api.apps.read_namespaced_deployment("client", api.ns).metadata.generation
    api.patch("aitbcdatabases", "bk", {"spec": {"restore": {"name": "missing", "file": "nope.dump"}}})
    wait_until(lambda: restore_status(api).get("phase") == "Failed", STEP, "the missing dump refused")
    assert "nope.dump not found" in restore_status(api)["message"]
    assert api.apps.read_namespaced_deployment("client", api.ns).metadata.generation == generation
    assert len(rows(uri)) == 3

    with Watcher(api) as seen:
        api.patch("aitbcdatabases", "bk", {"spec": {"restore": {"name": "r1", "file": dump}}})
        wait_until(lambda: restore_status(api).get("name") == "r1"
                   and restore_status(api).get("phase") in ("Succeeded", "Failed"), 300, "the restore")
    final = restore_status(api)
    assert final["phase"] == "Succeeded", final
    assert "error" not in final, "nothing of the refused request is left in status"
    assert rows(uri) == [(1, "dumped"), (2, "dumped")], "the database is back at the dump"
    assert (dumps / final["preRestoreFile"]).exists(), "a dump was taken before the restore"
    assert final["preRestoreFile"].startswith(f"{name}-pre-restore-")
    assert 0 in seen.replicas, "the consumer was scaled to zero during the restore"
    assert True in seen.suspended, "the schedule was suspended during the restore"
    assert api.apps.read_namespaced_deployment("client", api.ns).spec.replicas == 1, "the consumer is back"
    wait_until(lambda: running_pod(api, "client") is not None, STEP, "the consumer running again")
    batch = client.BatchV1Api(api.kube)
    assert batch.read_namespaced_cron_job("bk-backup", api.ns).spec.suspend is False
