"""High availability: of two replicas only the Lease holder runs kopf; the standby answers its probes and takes over
when the leader goes - and never while it still acts, even with a skewed clock and a paused apiserver."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from localcluster.cluster import LocalCluster, crd_files, kubeconfig_dict

from tests import rbac_audit as audit
from tests.cluster.fixtures import wait_until
from tests.factories import make_node
from tests.operator_fixtures import SCRIPT, OperatorProcess

LEASE = "aitbc-operator-leader"


def health(proc: OperatorProcess) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.health_port}/healthz", timeout=2) as resp:
        data = json.loads(resp.read() or b"{}")
    assert isinstance(data, dict)
    return data


def runs_kopf(proc: OperatorProcess) -> bool:
    """True once the health endpoint is kopf's (the standby's endpoint is closed just before kopf binds the port)."""
    try:
        return "standby" not in health(proc)
    except OSError:
        return False


def holder(kube: client.ApiClient, namespace: str) -> str | None:
    """The replica (pod name) holding the Lease: its holder is ``<pod name>_<process suffix>``."""
    try:
        lease = client.CoordinationV1Api(kube).read_namespaced_lease(LEASE, namespace)
    except client.ApiException:
        return None
    identity = lease.spec.holder_identity if lease.spec else None
    return identity.rpartition("_")[0] if identity else None


def test_one_leader_and_a_standby_that_takes_over(
    kubeconfig: Path, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    def replica(name: str) -> OperatorProcess:
        env = {"AITBC_LEADER_ELECTION": "true", "POD_NAMESPACE": namespace, "POD_NAME": name}
        return OperatorProcess(kubeconfig, tmp_path / f"{name}.log", namespaces=(namespace,), env=env, standalone=False)

    first = replica("replica-a").start()
    second = None
    try:
        wait_until(lambda: holder(kube, namespace) == "replica-a", 30, "replica-a to hold the lease")
        wait_until(lambda: runs_kopf(first), 30, "kopf's health endpoint on the leader")
        second = replica("replica-b").start()
        assert health(second) == {"standby": "waiting for the leader lease"}
        time.sleep(2)  # a renewal period: the standby must not steal a lease that is being renewed
        assert holder(kube, namespace) == "replica-a"
        assert "Activity '_startup'" not in second.text()  # kopf never started on the standby

        assert first.stop() == 0  # graceful: releases the lease
        wait_until(lambda: holder(kube, namespace) == "replica-b", 30, "replica-b to take the lease over")
        wait_until(lambda: "Activity '_startup' succeeded" in second.text(), 30, "kopf to start on replica-b")
        wait_until(lambda: runs_kopf(second), 30, "replica-b's kopf health endpoint")
    finally:
        first.stop()
        if second is not None:
            second.stop()


# --- two replicas, one clock skewed, the apiserver paused longer than the lease ---------------------------------------

OPS, APPS = "ha-ops", "ha-apps"
#: Longer than the lease duration (15 s): the leader cannot renew, the standby cannot reach the apiserver either.
PAUSE = 25.0
#: The standby's election clock runs this far ahead: by its clock the leader's renewTime is always a minute old.
SKEW = 60.0
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ \S+ (.*)$")


@dataclass
class Term:
    """One replica's time as leader: from taking the lease to having stopped (both from its own log)."""

    replica: str
    start: datetime
    end: datetime

    def overlaps(self, other: Term) -> bool:
        return self.start < other.end and other.start < self.end


def log_time(stamp: str) -> datetime:
    """A log line's local time (the replicas share the test's time zone), as UTC."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").astimezone(UTC)


def terms(replica: str, log: str, until: datetime) -> list[Term]:
    """Leadership terms from the log: "leading: ..." opens one, "stopped leading: ..." closes it (`until` if open)."""
    out: list[Term] = []
    start: datetime | None = None
    for line in log.splitlines():
        if not (m := LOG_LINE.match(line)):
            continue
        if m[2].startswith("leading: lease"):
            start = log_time(m[1])
        elif m[2].startswith("stopped leading") and start is not None:
            out.append(Term(replica, start, log_time(m[1])))
            start = None
    if start is not None:
        out.append(Term(replica, start, until))
    return out


@dataclass(frozen=True)
class Write:
    """A write the apiserver received, by whom, on what, when (its own clock)."""

    user: str
    verb: str
    resource: str
    name: str | None
    at: datetime


def writes(events: list[dict[str, Any]], users: dict[str, str]) -> list[Write]:
    """Every write (not the Lease) the replicas' users made, once per audit ID, by replica name."""
    seen: dict[str, Write] = {}
    for event in events:
        user = (event.get("user") or {}).get("username")
        ref = event.get("objectRef") or {}
        if user in users and event.get("verb") in ("create", "update", "patch", "delete") and \
                ref.get("resource") not in (None, "leases"):
            at = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            seen[event["auditID"]] = Write(users[user], event["verb"], ref["resource"], ref.get("name"), at)
    return sorted(seen.values(), key=lambda w: w.at)


@pytest.fixture(scope="module")
def ha_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A control plane of this test alone: its apiserver is paused, and its audit log tells who wrote what."""
    cluster = LocalCluster(tmp_path_factory.mktemp("k8s-ha"), crds=crd_files(), audit=True)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def replica_kubeconfigs(cluster: LocalCluster, names: tuple[str, ...], directory: Path) -> dict[str, Path]:
    """A ServiceAccount per replica (so the audit log tells them apart), cluster-admin; a kubeconfig with its token."""
    cluster.kubectl("create", "namespace", OPS)
    cluster.kubectl("create", "namespace", APPS)
    out = {}
    for name in names:
        cluster.kubectl("create", "serviceaccount", name, "-n", OPS)
        token = cluster.kubectl("create", "token", name, "-n", OPS, "--duration=1h").stdout.strip()
        user = f"system:serviceaccount:{OPS}:{name}"
        path = directory / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig_dict(cluster.server, cluster.pki / "ca.crt", user, token)))
        out[name] = path
    subjects = [f"--serviceaccount={OPS}:{n}" for n in names]
    cluster.kubectl("create", "clusterrolebinding", "ha-replicas", "--clusterrole=cluster-admin", *subjects)
    return out


def node_ready(custom: client.CustomObjectsApi, name: str, generation_at_least: int = 1) -> bool:
    try:
        obj = custom.get_namespaced_custom_object("aitbc.io", "v1alpha1", APPS, "aitbcnodes", name)
    except client.ApiException:
        return False
    status = obj.get("status") or {}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
    observed = status.get("observedGeneration", 0)
    return bool(ready and observed == obj["metadata"]["generation"] and observed >= generation_at_least)


def hold(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    """Assert `predicate` stays true for `seconds` (an observation window, not a synchronisation)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), what
        time.sleep(0.5)


def test_never_two_leaders_with_a_skewed_clock_and_a_paused_apiserver(ha_cluster: LocalCluster, tmp_path: Path) -> None:
    cluster = ha_cluster
    configs = replica_kubeconfigs(cluster, ("replica-a", "replica-b"), tmp_path)
    users = {f"system:serviceaccount:{OPS}:{n}": n for n in configs}
    api: client.ApiClient = config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
    custom = client.CustomObjectsApi(api)

    def replica(name: str, command: tuple[str, ...] = (str(SCRIPT),)) -> OperatorProcess:
        env = {"AITBC_LEADER_ELECTION": "true", "POD_NAMESPACE": OPS, "POD_NAME": name}
        return OperatorProcess(configs[name], tmp_path / f"{name}.log", namespaces=(APPS,), env=env,
                               standalone=False, command=command)

    a = replica("replica-a")
    b = replica("replica-b", (sys.executable, "-m", "tests.skewed_operator", str(SKEW)))
    apiserver = cluster.components["kube-apiserver"].proc
    assert apiserver is not None
    paused = False
    try:
        a.start()
        wait_until(lambda: holder(api, OPS) == "replica-a", 30, "replica-a to lead")
        custom.create_namespaced_custom_object("aitbc.io", "v1alpha1", APPS, "aitbcnodes", make_node("n1"))
        wait_until(lambda: node_ready(custom, "n1"), 60, "n1 Ready (reconciled by replica-a)")

        # The standby's clock says the leader's renewTime is a minute old: it must still wait, the lease is renewed.
        b.start()
        hold(lambda: holder(api, OPS) == "replica-a" and "leading:" not in b.text(), 20,
             "replica-b took a lease replica-a renews")

        # The apiserver stops answering for longer than the lease: the leader must stop acting on its own.
        os.kill(apiserver.pid, signal.SIGSTOP)
        paused, paused_at = True, time.monotonic()
        wait_until(lambda: a.proc is not None and a.proc.poll() is not None, PAUSE, "replica-a to stop leading")
        assert a.proc is not None
        assert a.proc.returncode == 2, a.tail()
        stopped_after = time.monotonic() - paused_at
        time.sleep(max(0.0, paused_at + PAUSE - time.monotonic()))  # the rest of the pause (its length is the test)
        os.kill(apiserver.pid, signal.SIGCONT)
        paused = False

        # Leadership recovers: replica-b (it saw no change for longer than the lease); replica-a comes back (as its
        # kubelet would restart it) and waits.
        a.start()
        wait_until(lambda: holder(api, OPS) == "replica-b", 60, "replica-b to lead after the pause")
        custom.create_namespaced_custom_object("aitbc.io", "v1alpha1", APPS, "aitbcnodes", make_node("n2"))
        generation = custom.patch_namespaced_custom_object(
            "aitbc.io", "v1alpha1", APPS, "aitbcnodes", "n1", {"spec": {"redisUrl": "redis://redis-b:6379"}},
        )["metadata"]["generation"]
        wait_until(lambda: node_ready(custom, "n2") and node_ready(custom, "n1", generation), 60,
                   "n2 Ready and n1 on its new spec (reconciled by replica-b)")
        assert holder(api, OPS) == "replica-b"
    finally:
        if paused:
            os.kill(apiserver.pid, signal.SIGCONT)
        a.stop()  # the standby first: it would take the lease replica-b releases
        b.stop()
        api.close()  # type: ignore[no-untyped-call]

    ended = datetime.now(UTC)
    all_terms = terms("replica-a", a.text(), ended) + terms("replica-b", b.text(), ended)
    recorded = writes(audit.read_events(cluster.audit_log), users)
    print(f"\nreplica-a stopped leading {stopped_after:.1f} s into the pause")
    for term in all_terms:
        mine = [w for w in recorded if w.user == term.replica and term.start <= w.at <= term.end]
        on = sorted({f"{w.resource}/{w.name}" for w in mine})
        print(f"{term.replica} led {term.start:%H:%M:%S.%f} - {term.end:%H:%M:%S.%f}: {len(mine)} writes on {on}")

    assert [t.replica for t in all_terms] == ["replica-a", "replica-b"], all_terms
    first, second = all_terms
    assert not first.overlaps(second), f"two leaders at once: {first} / {second}"
    # Every write lies in its replica's term: nobody acted while not leading.
    outside = [w for w in recorded if not any(t.replica == w.user and t.start <= w.at <= t.end for t in all_terms)]
    assert not outside, "writes outside their replica's leadership:\n" + "\n".join(map(str, outside))
    # Who reconciled what: n1 first by replica-a, n2 (and n1's new spec) only by replica-b.
    assert {w.user for w in recorded if w.name == "n1"} == {"replica-a", "replica-b"}
    assert {w.user for w in recorded if w.name and w.name.startswith("n2")} == {"replica-b"}
    assert stopped_after < 15.0, "the leader acted past the lease duration"
