"""pytest fixtures for the local control plane (a real kube-apiserver, controllers, a scheduler and kwok nodes).

- `k8s_cluster` (session): starts a LocalCluster in a pytest temp dir (kept after the run, logs included), or reuses
  the cluster of AITBC_TEST_KUBECONFIG. Stopped at the end of the session, also when tests fail or are interrupted.
- `aitbc_crds` (session): applies crds/*.yaml and waits until they are Established.
- `kubeconfig` (session): the kubeconfig path, e.g. for an operator started as a subprocess.
- `kube` (session): a kubernetes.client.ApiClient for that kubeconfig, with the CRDs installed.
- `namespace` (function): a fresh namespace per test (with its `default` ServiceAccount), deleted afterwards.

Every test that uses one of them gets the `cluster` marker automatically, so `-m "not cluster"` never starts it.
When a cluster test fails, the summary ends with the tails of the component logs and where the full logs are.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from localcluster.cluster import Cluster, LocalCluster, crd_files

CLUSTER_FIXTURES = frozenset({"k8s_cluster", "aitbc_crds", "kubeconfig", "kube", "namespace"})
_CLUSTER_KEY = pytest.StashKey[Cluster]()
_FAILED_KEY = pytest.StashKey[list[str]]()


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll `predicate()` until it is truthy; fail the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a cluster fixture with `cluster`."""
    for item in items:
        if CLUSTER_FIXTURES.intersection(getattr(item, "fixturenames", ())) and not item.get_closest_marker("cluster"):
            item.add_marker(pytest.mark.cluster)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None],
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember the cluster tests that failed, for the log tails in the summary."""
    report = yield
    if report.failed and item.get_closest_marker("cluster"):
        item.config.stash.setdefault(_FAILED_KEY, []).append(item.nodeid)
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """After failed cluster tests: show the tails of the component logs and where the full logs are."""
    failed = config.stash.get(_FAILED_KEY, [])
    cluster = config.stash.get(_CLUSTER_KEY, None)
    if not failed or cluster is None or cluster.logs_dir is None:
        return
    terminalreporter.section("local control plane logs (tails)")
    terminalreporter.write_line(f"{len(failed)} cluster test(s) failed; full component logs: {cluster.logs_dir}")
    terminalreporter.write_line(cluster.log_tails(25))


@pytest.fixture(scope="session")
def k8s_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The control plane: started once per session (or reused from AITBC_TEST_KUBECONFIG), stopped at its end."""
    if reuse := os.environ.get("AITBC_TEST_KUBECONFIG"):
        cluster = Cluster(Path(reuse))
        request.config.stash[_CLUSTER_KEY] = cluster
        yield cluster
        return
    local = LocalCluster(tmp_path_factory.mktemp("k8s"), crds=crd_files())
    request.config.stash[_CLUSTER_KEY] = local
    local.start()  # on failure: ComponentNotReady names the component and shows its log tail
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def aitbc_crds(k8s_cluster: Cluster) -> list[str]:
    """Install the generated CRDs (server-side apply, so a reused cluster gets the current ones); their names."""
    return k8s_cluster.apply_crds(crd_files())


@pytest.fixture(scope="session")
def kubeconfig(k8s_cluster: Cluster, aitbc_crds: list[str]) -> Path:
    """Path of the admin kubeconfig of the test cluster (CRDs installed)."""
    return k8s_cluster.kubeconfig


@pytest.fixture(scope="session")
def kube(kubeconfig: Path) -> Iterator[client.ApiClient]:
    """A Kubernetes API client for the test cluster (CRDs installed)."""
    api: client.ApiClient = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    try:
        yield api
    finally:
        api.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube: client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, ready for pods (its `default` ServiceAccount exists); deleted afterwards."""
    core = client.CoreV1Api(kube)
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{slug}-{os.urandom(3).hex()}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"aitbc.io/test": "true"})))

    def has_default_sa() -> bool:
        accounts = core.list_namespaced_service_account(name).items
        return any(sa.metadata is not None and sa.metadata.name == "default" for sa in accounts)

    wait_until(has_default_sa, 30, f"ServiceAccount default in namespace {name}")
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")
