"""High availability: of two replicas only the Lease holder runs kopf; the standby answers its probes and takes over."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from kubernetes import client

from tests.cluster.fixtures import wait_until
from tests.operator_fixtures import OperatorProcess

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
    try:
        lease = client.CoordinationV1Api(kube).read_namespaced_lease(LEASE, namespace)
    except client.ApiException:
        return None
    return lease.spec.holder_identity if lease.spec else None


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
