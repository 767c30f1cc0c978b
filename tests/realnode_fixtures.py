"""Fixtures for the end-to-end tests on the real node (kubelet + containerd running the project's images).

- ``real_cluster`` (session): the images built from the Dockerfiles (cached), a control plane on the host's address
  with one real node (localcluster/node.py). At the end it is stopped and the host is checked: no iptables rule,
  bridge, cgroup, mount or process of the node may be left (a leftover fails the session).
- ``real_operator`` (session): the operator as a pod, from its image, through ``deploy/overlays/local`` (the kind
  overlay: generated RBAC, ServiceAccount, Deployment), Ready.
- ``real_pg`` (session): PostgreSQL 15 listening on 127.0.0.1 and on the host's address (pods connect there), with
  the operator's non-superuser admin.
- ``real_chain_root`` (session): a loop-mounted Btrfs at /var/lib/aitbc/e2e (under the operator's default allowed
  hostPath prefix); ``real_ns`` gives each test a namespace and a fresh directory on it, ``real_api`` typed access.

Every test using them is marked ``realnode``. They need root; with ``AITBC_REQUIRE_REALNODE=1`` (``make test`` as
root) a missing prerequisite is a failure, not a skip.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from localcluster.btrfs import LoopBtrfs, release_mount
from localcluster.btrfs import unavailable as btrfs_unavailable
from localcluster.cluster import REPO_ROOT, crd_files
from localcluster.images import Builder
from localcluster.node import RealNodeCluster, host_leftovers

from tests.cluster.fixtures import wait_until
from tests.pg.fixtures import ADMIN, PgTestServer
from tests.pg.server import PostgresServer, find_debian_bin_dir

REALNODE_FIXTURES = frozenset({"real_cluster", "real_kube", "real_operator", "real_pg", "real_chain_root", "real_ns"})
CHAIN_ROOT = Path("/var/lib/aitbc/e2e")
OPERATOR_NAMESPACE = "aitbc-system"


def _unavailable(reason: str) -> None:
    if os.environ.get("AITBC_REQUIRE_REALNODE") == "1":
        pytest.fail(f"real-node tests required (AITBC_REQUIRE_REALNODE=1) but {reason}")
    pytest.skip(reason)


def realnode_unavailable() -> str | None:
    """Why the real node cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (containerd, kubelet, iptables, cgroups)"
    for tool in ("containerd", "runc", "ctr", "buildah", "podman", "mmdebstrap", "iptables", "gcc"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (make system-deps)"
    return btrfs_unavailable()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a real-node fixture with `realnode`."""
    for item in items:
        if REALNODE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.realnode)


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNodeCluster]:
    """Control plane + real node, with the images imported; the host is checked clean after the session."""
    reason = realnode_unavailable()
    if reason:
        _unavailable(reason)
    images = Builder().all()
    # AITBC_REALNODE_WAIT: seconds to queue behind another run's real node on this host (one per host).
    cluster = RealNodeCluster(tmp_path_factory.mktemp("realnode"), images, crds=crd_files(),
                              wait_for_host=float(os.environ.get("AITBC_REALNODE_WAIT", "0")))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        leftovers = {k: v for k, v in host_leftovers().items() if v}
        assert not leftovers, f"the real node's teardown left these on the host: {leftovers}"


@dataclass
class OperatorPod:
    """The operator's Deployment on the real node."""

    kube: client.ApiClient
    namespace: str = OPERATOR_NAMESPACE
    name: str = "aitbc-operator"

    def pods(self) -> list[dict[str, Any]]:
        """The operator's pods (as dicts)."""
        found = client.CoreV1Api(self.kube).list_namespaced_pod(
            self.namespace, label_selector="app.kubernetes.io/name=aitbc-operator")
        return [self.kube.sanitize_for_serialization(p) for p in found.items]

    def ready_pod(self) -> dict[str, Any] | None:
        """The one Ready pod, if any."""
        for pod in self.pods():
            conditions = (pod.get("status") or {}).get("conditions") or []
            if not pod["metadata"].get("deletionTimestamp") and any(
                    c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return pod
        return None

    def logs(self, tail: int = 200) -> str:
        """The current pod's log tail (through the apiserver and the kubelet)."""
        pod = self.ready_pod() or (self.pods() or [None])[0]
        if pod is None:
            return "(no operator pod)"
        text: str = client.CoreV1Api(self.kube).read_namespaced_pod_log(
            pod["metadata"]["name"], self.namespace, tail_lines=tail)
        return text


@pytest.fixture(scope="session")
def real_kube(real_cluster: RealNodeCluster) -> Iterator[client.ApiClient]:
    """An admin API client for the real-node cluster."""
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(real_cluster.kubeconfig))
    try:
        yield api
    finally:
        api.close()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="session")
def real_operator(real_cluster: RealNodeCluster, real_kube: client.ApiClient) -> OperatorPod:
    """The operator from its image, as the kind/local overlay deploys it, Ready."""
    real_cluster.kubectl("apply", "--server-side", "--force-conflicts",
                         "-k", str(REPO_ROOT / "deploy" / "overlays" / "local"))
    real_cluster.kubectl("-n", OPERATOR_NAMESPACE, "rollout", "status", "deployment/aitbc-operator",
                         "--timeout=180s", timeout=200)
    operator = OperatorPod(real_kube)
    wait_until(lambda: operator.ready_pod() is not None, 60, "a Ready operator pod")
    return operator


@pytest.fixture(scope="session")
def real_pg(real_cluster: RealNodeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgTestServer]:
    """PostgreSQL 15 reachable from pods (the host's address), with the operator's admin role."""
    bin_dir = find_debian_bin_dir("15")
    if bin_dir is None:
        _unavailable("PostgreSQL 15 server not installed (make system-deps)")
    assert bin_dir is not None
    server = PostgresServer(bin_dir, name="pg-realnode", extra_listen=(real_cluster.host,))
    try:
        server.start()
        login = server.create_admin(ADMIN, secrets.token_urlsafe(18))
        yield PgTestServer(server, login, server.version_num() // 10000)
    finally:
        server.cleanup(keep_logs_in=tmp_path_factory.getbasetemp() / "postgres-logs")


@pytest.fixture(scope="session")
def real_chain_root(real_cluster: RealNodeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A Btrfs on a loop device, mounted where AitbcNodes of the tests keep their chain data (hostPath)."""
    created_parent = not CHAIN_ROOT.parent.exists()
    release_mount(CHAIN_ROOT)  # a killed run's (the real node's host lock makes the mount point ours)
    loop = LoopBtrfs(tmp_path_factory.mktemp("realnode-btrfs") / "chain.img", CHAIN_ROOT, size="768M")
    loop.open()
    try:
        yield CHAIN_ROOT
    finally:
        loop.close()
        with_parent = (CHAIN_ROOT, CHAIN_ROOT.parent) if created_parent else (CHAIN_ROOT,)
        for path in with_parent:
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()


@dataclass
class RealNamespace:
    """A test's namespace on the real-node cluster, the admin Secret in it, and its chain data directory."""

    name: str
    chain_dir: Path
    pg: PgTestServer
    host: str


@pytest.fixture
def real_ns(request: pytest.FixtureRequest, real_cluster: RealNodeCluster, real_operator: OperatorPod,
            real_pg: PgTestServer, real_chain_root: Path, real_kube: client.ApiClient) -> Iterator[RealNamespace]:
    """A fresh namespace with Secret `postgres-admin` (PostgreSQL on the host's address) and a chain directory."""
    core = client.CoreV1Api(real_kube)
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:36].strip("-")
    name = f"e2e-{slug}-{os.urandom(3).hex()}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    login = real_pg.admin_login
    core.create_namespaced_secret(name, client.V1Secret(
        metadata=client.V1ObjectMeta(name="postgres-admin"),
        string_data={"host": real_cluster.host, "port": str(login.port), "username": login.user,
                     "password": login.password}))
    chain_dir = real_chain_root / name
    try:
        yield RealNamespace(name, chain_dir, real_pg, real_cluster.host)
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"\n--- operator pod log tail ---\n{real_operator.logs(120)}")
        core.delete_namespace(name, propagation_policy="Foreground")
        _wait_namespace_gone(core, name)
        shutil.rmtree(chain_dir, ignore_errors=True)


def _wait_namespace_gone(core: client.CoreV1Api, name: str, timeout: float = 120) -> None:
    """Wait until the namespace (and so every pod that used the chain directory) is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(ns.metadata.name == name for ns in core.list_namespace().items):
            return
        time.sleep(0.5)
