"""AitbcNode end to end: the real operator (`aitbc-operator run`) against the local control plane (real apiserver,
controller-manager, scheduler, kwok nodes), and for the mempool a real PostgreSQL server behind an AitbcDatabase.

What the coordinated rollout promises is checked on what the cluster recorded, not on the operator's word: a
:class:`Recorder` watches StatefulSets, Deployments and Pods of the test's namespace and keeps every version it sees
(resourceVersion, pod-template config hash and restart marker, readiness). With a single etcd, resourceVersions are
etcd revisions and totally order the writes, so "the node pod was Ready on the new hash before the RPC template
changed" is a comparison of two revisions, independent of thread scheduling in the test.
"""

from __future__ import annotations

import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from aitbc_operator.builders.node_config import ANNOTATION_CONFIG_HASH, ANNOTATION_NODE_RESTART_MARKER
from tests.cluster.fixtures import wait_until
from tests.factories import DELETE, make_database, make_node
from tests.operator_fixtures import OperatorProcess
from tests.pg.fixtures import PgTestServer

GROUP, VERSION = "aitbc.io", "v1alpha1"
NODE = "aitbc1"
STS, DEPLOY, NODE_POD = f"{NODE}-node", f"{NODE}-rpc", f"{NODE}-node-0"
#: Generous per-step deadline: on kwok a whole rollout takes a few seconds.
STEP = 30.0

pytestmark = pytest.mark.timeout(120)


# --- API helpers ------------------------------------------------------------------------------------------------------

@dataclass
class Api:
    """Typed-enough access to the objects these tests look at, in one namespace."""

    kube: client.ApiClient
    ns: str

    def __post_init__(self) -> None:
        self.custom = client.CustomObjectsApi(self.kube)
        self.apps = client.AppsV1Api(self.kube)
        self.core = client.CoreV1Api(self.kube)

    def _obj(self, obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = self.kube.sanitize_for_serialization(obj)
        return out

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, plural, body)
        return out

    def get(self, plural: str, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, plural, name)
        return out

    def patch(self, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch (None removes a key)."""
        out: dict[str, Any] = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns, plural, name, patch, _content_type="application/merge-patch+json")
        return out

    def node(self) -> dict[str, Any]:
        return self.get("aitbcnodes", NODE)

    def patch_node(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.patch("aitbcnodes", NODE, {"spec": spec})

    def sts(self) -> dict[str, Any]:
        return self._obj(self.apps.read_namespaced_stateful_set(STS, self.ns))

    def deploy(self) -> dict[str, Any]:
        return self._obj(self.apps.read_namespaced_deployment(DEPLOY, self.ns))

    def pod(self, name: str) -> dict[str, Any] | None:
        try:
            return self._obj(self.core.read_namespaced_pod(name, self.ns))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def pods(self, component: str) -> list[dict[str, Any]]:
        found = self.core.list_namespaced_pod(self.ns, label_selector=f"app.kubernetes.io/component={component}")
        return [self._obj(p) for p in found.items]

    def exists(self, read: Callable[[str, str], Any], name: str) -> bool:
        try:
            read(name, self.ns)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True


def template_annotations(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"].get("annotations") or {}


def condition(obj: dict[str, Any], kind: str) -> tuple[str | None, str | None]:
    """(status, reason) of a condition in obj.status.conditions."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return cond["status"], cond.get("reason")
    return None, None


def pod_ready(pod: dict[str, Any] | None) -> bool:
    return pod is not None and condition(pod, "Ready")[0] == "True"


def converged(node: dict[str, Any], config_hash: str | None = None) -> bool:
    """Idle and Ready on the current generation (and on `config_hash` when given)."""
    status = node.get("status") or {}
    return (
        status.get("observedGeneration") == node["metadata"]["generation"]
        and (status.get("rollout") or {}).get("phase") == "Idle"
        and condition(node, "Ready") == ("True", "RolloutComplete")
        and (config_hash is None or status.get("configHash") == config_hash)
    )


def wait_converged(api: Api, what: str, *, changed_from: str | None = None, to: str | None = None) -> dict[str, Any]:
    """Wait until the AitbcNode is Idle/Ready (on a hash other than `changed_from`, or on `to`); return it."""
    seen: dict[str, Any] = {}

    def done() -> bool:
        seen["node"] = node = api.node()
        ok = converged(node, to)
        return ok and (changed_from is None or node["status"]["configHash"] != changed_from)

    wait_until(done, STEP, what)
    return seen["node"]


def hostpath_node(ns: str, **spec: Any) -> dict[str, Any]:
    """The sample node with hostPath storage on worker-1 (nothing on the machine is touched: kwok runs no pods)."""
    storage = {"pvc": DELETE, "hostPath": {"path": f"/var/lib/aitbc/{ns}", "nodeName": "worker-1"}}
    return make_node(NODE, ns, storage=storage, **spec)


# --- what the cluster recorded ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    """One version of one object, as a watch delivered it."""

    rv: int
    at: float
    kind: str  # StatefulSet, Deployment, Pod
    name: str
    uid: str
    event: str  # ADDED, MODIFIED, DELETED (LISTED for the initial list)
    component: str | None
    config_hash: str | None  # pod template annotation (workloads) or pod annotation (pods)
    marker: str | None  # the RPC template's node-restart marker
    ready: bool  # pods: Ready condition; workloads: every replica ready/available and up to date


KINDS = ("StatefulSet", "Deployment", "Pod")
#: Seconds a Recorder.sync() serves later queries (those of one assertion, made in quick succession).
SYNC_REUSE = 0.2


class Recorder:
    """Watch StatefulSets, Deployments and Pods of a namespace from a list onwards; keep every version seen."""

    def __init__(self, kubeconfig: Path, ns: str) -> None:
        self.kubeconfig, self.ns = kubeconfig, ns
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.errors: list[BaseException] = []
        self._cycle_started: dict[str, float] = {}  # per kind: when the last completed watch stream began
        self._synced_at = -1.0

    def __enter__(self) -> Recorder:
        for kind in KINDS:
            ready = threading.Event()
            thread = threading.Thread(target=self._run, args=(kind, ready), daemon=True, name=f"watch-{kind}")
            thread.start()
            if not ready.wait(10):
                raise RuntimeError(f"watch on {kind} did not start")
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.errors:
            self.sync()  # the recording is complete up to here, and final
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _run(self, kind: str, started: threading.Event) -> None:
        api_client: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig))
        try:
            lister = {
                "StatefulSet": client.AppsV1Api(api_client).list_namespaced_stateful_set,
                "Deployment": client.AppsV1Api(api_client).list_namespaced_deployment,
                "Pod": client.CoreV1Api(api_client).list_namespaced_pod,
            }[kind]
            listing = api_client.sanitize_for_serialization(lister(self.ns))
            for item in listing["items"]:
                self._record(kind, "LISTED", item)
            rv = listing["metadata"]["resourceVersion"]
            started.set()
            while not self._stop.is_set():
                began = time.monotonic()
                w = watch.Watch()
                for ev in w.stream(lister, self.ns, resource_version=rv, timeout_seconds=1,
                                   allow_watch_bookmarks=True):
                    obj = api_client.sanitize_for_serialization(ev["object"])
                    rv = obj["metadata"]["resourceVersion"]
                    if ev["type"] != "BOOKMARK":
                        self._record(kind, ev["type"], obj)
                    if self._stop.is_set():
                        w.stop()
                with self._lock:  # a stream from `rv` that began at `began` has ended: all up to then is recorded
                    self._cycle_started[kind] = began
        except BaseException as exc:  # reported by the test through check()
            self.errors.append(exc)
            started.set()
        finally:
            api_client.close()  # type: ignore[no-untyped-call]

    def _record(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        labels = meta.get("labels") or {}
        status = obj.get("status") or {}
        if kind == "Pod":
            annotations = meta.get("annotations") or {}
            ready = pod_ready(obj) and event != "DELETED" and meta.get("deletionTimestamp") is None
        else:
            annotations = obj["spec"]["template"]["metadata"].get("annotations") or {}
            replicas = obj["spec"].get("replicas", 1)
            fresh = status.get("observedGeneration") == meta.get("generation")
            ready_key = "availableReplicas" if kind == "Deployment" else "readyReplicas"
            ready = fresh and status.get(ready_key, 0) >= replicas and status.get("updatedReplicas", 0) >= replicas
        sample = Sample(
            rv=int(meta["resourceVersion"]), at=time.monotonic(), kind=kind, name=meta["name"], uid=meta["uid"],
            event=event, component=labels.get("app.kubernetes.io/component"),
            config_hash=annotations.get(ANNOTATION_CONFIG_HASH), marker=annotations.get(ANNOTATION_NODE_RESTART_MARKER),
            ready=ready,
        )
        with self._lock:
            self.samples.append(sample)

    # --- queries ---

    def check(self) -> None:
        """Fail when a watch thread broke (the recording would be incomplete)."""
        assert not self.errors, f"watch failed: {self.errors!r}"

    def sync(self, timeout: float = 15.0) -> None:
        """Wait until every watch has recorded all that happened before this call.

        The watches run in their own threads and may lag the operator (a test that waits for the operator's verdict
        could otherwise query before the last events arrived): a watch stream that began after this call and then
        ended has delivered every event up to the call.
        """
        if self._stop.is_set():  # closed: synced on the way out, nothing is added any more
            return
        barrier = time.monotonic()
        deadline = barrier + timeout
        while True:
            with self._lock:
                done = all(self._cycle_started.get(kind, -1.0) > barrier for kind in KINDS)
            if done or self.errors:
                self._synced_at = time.monotonic()
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the recording watches did not catch up within {timeout:.0f} s")
            time.sleep(0.05)

    def of(self, kind: str, name: str | None = None, component: str | None = None) -> list[Sample]:
        if time.monotonic() - self._synced_at > SYNC_REUSE:  # the queries of one assertion share a sync
            self.sync()
        with self._lock:
            samples = sorted(self.samples, key=lambda s: s.rv)
        return [s for s in samples if s.kind == kind and (name is None or s.name == name)
                and (component is None or s.component == component)]

    def templates(self, kind: str, name: str) -> list[tuple[int, str | None, str | None]]:
        """(rv, hash, marker) of each pod-template version of a workload, in order (the first one included)."""
        out: list[tuple[int, str | None, str | None]] = []
        for s in self.of(kind, name):
            if not out or (out[-1][1], out[-1][2]) != (s.config_hash, s.marker):
                out.append((s.rv, s.config_hash, s.marker))
        return out

    def first_node_pod_ready(self, config_hash: str, *, after: int = 0) -> Sample | None:
        """The first node-pod version that is Ready on `config_hash` (optionally after a revision)."""
        return next((s for s in self.of("Pod", component="node")
                     if s.ready and s.config_hash == config_hash and s.rv > after), None)

    def rpc_template_change(self, config_hash: str, marker: str | None = None, *, after: int = 0) -> Sample | None:
        """The first Deployment version after a revision whose template carries `config_hash` (and `marker`)."""
        return next((s for s in self.of("Deployment", DEPLOY) if s.rv > after
                     and s.config_hash == config_hash and (marker is None or s.marker == marker)), None)

    def timeline(self) -> str:
        """For failure messages."""
        with self._lock:
            samples = sorted(self.samples, key=lambda s: s.rv)
        return "\n".join(f"{s.rv} {s.event:8} {s.kind:11} {s.name:22} hash={s.config_hash} marker={s.marker} "
                         f"ready={s.ready}" for s in samples)


def assert_node_then_rpc(rec: Recorder, config_hash: str, *, marker: str | None = None, after: int = 0) -> None:
    """The node pod was Ready on `config_hash` before the RPC template was changed to it (after revision `after`)."""
    rec.check()
    node_ready = rec.first_node_pod_ready(config_hash, after=after)
    rpc_change = rec.rpc_template_change(config_hash, marker, after=after)
    assert node_ready is not None, f"no Ready node pod on {config_hash}:\n{rec.timeline()}"
    assert rpc_change is not None, f"RPC template never changed to {config_hash}:\n{rec.timeline()}"
    assert node_ready.rv < rpc_change.rv, f"RPC template changed before the node was Ready:\n{rec.timeline()}"


@pytest.fixture
def api(kube: client.ApiClient, namespace: str) -> Api:
    return Api(kube, namespace)


@pytest.fixture
def recorder(kubeconfig: Path, namespace: str) -> Iterator[Recorder]:
    """Start recording (call as a context manager from the point of interest on)."""
    rec = Recorder(kubeconfig, namespace)
    yield rec
    rec.__exit__()


def reconciles(operator: OperatorProcess) -> int:
    """AitbcNode reconciles the operator finished so far (any outcome), from its metrics."""
    total = 0.0
    for line in operator.metrics().splitlines():
        if line.startswith("aitbc_reconcile_total{") and 'kind="AitbcNode"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def wait_reconciles(operator: OperatorProcess, count: int) -> None:
    """Wait until the operator has reconciled AitbcNodes `count` more times (the re-checks do every poll interval)."""
    start = reconciles(operator)
    wait_until(lambda: reconciles(operator) >= start + count, STEP, f"{count} more AitbcNode reconciles")


def create_ready_node(api: Api, **spec: Any) -> dict[str, Any]:
    """Create the hostPath sample node and wait until it is Idle/Ready."""
    api.create("aitbcnodes", hostpath_node(api.ns, **spec))
    return wait_converged(api, "the new AitbcNode to become Ready")


# --- creation, steady state, deletion ---------------------------------------------------------------------------------

def test_hostpath_node_gets_every_child_and_becomes_ready_then_resync_writes_nothing(
    api: Api, operator: OperatorProcess
) -> None:
    node = create_ready_node(api)
    uid, status = node["metadata"]["uid"], node["status"]

    # Children, each owned by the AitbcNode (garbage-collected with it).
    children = {
        ("ConfigMap", f"{NODE}-config"): api.core.read_namespaced_config_map,
        ("ConfigMap", f"{NODE}-rpc-config"): api.core.read_namespaced_config_map,
        ("Service", f"{NODE}-node"): api.core.read_namespaced_service,
        ("Service", f"{NODE}-rpc"): api.core.read_namespaced_service,
        ("StatefulSet", STS): api.apps.read_namespaced_stateful_set,
        ("Deployment", DEPLOY): api.apps.read_namespaced_deployment,
    }
    for (kind, name), read in children.items():
        child = api._obj(read(name, api.ns))
        owners = [(o["kind"], o["uid"]) for o in child["metadata"].get("ownerReferences") or []]
        assert owners == [("AitbcNode", uid)], f"{kind}/{name} owners {owners}"
    assert api.core.list_namespaced_persistent_volume_claim(api.ns).items == []
    cm = api._obj(api.core.read_namespaced_config_map(f"{NODE}-config", api.ns))
    assert cm["data"]["CHAIN_DB_URL_AIT_TESTNET"] == "sqlite:////var/lib/aitbc/data/ait-testnet/chain.db"

    # Status: Idle, conditions, and the hash both workloads carry.
    config_hash = status["configHash"]
    assert config_hash
    assert len(config_hash) == 16
    assert template_annotations(api.sts())[ANNOTATION_CONFIG_HASH] == config_hash
    rpc = template_annotations(api.deploy())
    assert rpc[ANNOTATION_CONFIG_HASH] == config_hash
    node_pod = api.pod(NODE_POD)
    assert node_pod is not None
    assert pod_ready(node_pod)
    assert rpc[ANNOTATION_NODE_RESTART_MARKER] == f"{node_pod['metadata']['uid']}/0"
    assert status["rollout"]["phase"] == "Idle"
    assert status["rollout"]["targetHash"] == config_hash
    for kind, expected in {"Ready": ("True", "RolloutComplete"), "Progressing": ("False", "RolloutComplete"),
                           "Degraded": ("False", "RolloutComplete"), "NodeReady": ("True", "PodReady"),
                           "RpcReady": ("True", "Available")}.items():
        assert condition(node, kind) == expected, f"condition {kind}: {condition(node, kind)}"
    assert [c["chainId"] for c in status["chains"]] == ["ait-mainnet", "ait-testnet"]

    # Both pods on the Kubernetes node holding the data.
    rpc_pods = api.pods("rpc")
    assert [p["spec"].get("nodeName") for p in [node_pod, *rpc_pods]] == ["worker-1", "worker-1"]

    # A steady node costs reads only: nothing changes over several re-checks (poll interval 2 s).
    def versions() -> dict[str, str]:
        out = {"AitbcNode": api.node()["metadata"]["resourceVersion"]}
        for (kind, name), read in children.items():
            out[f"{kind}/{name}"] = read(name, api.ns).metadata.resource_version
        return out

    # The first re-check probes the RPC for head heights (unreachable on kwok) and records that once.
    wait_until(lambda: all("heightError" in c or "height" in c for c in api.node()["status"]["chains"]), STEP,
               "the first RPC head-height probe")
    before = versions()
    wait_reconciles(operator, 3)
    assert versions() == before


def test_pvc_node_binds_its_claim_and_keeps_it_when_deleted(api: Api, operator: OperatorProcess,
                                                           tmp_path: Path) -> None:
    # No provisioner in this cluster: a PersistentVolume reserved for the claim the operator will create.
    pv_name = f"{api.ns}-chain"
    api.core.create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(tmp_path / "pv")},
                 "claimRef": {"namespace": api.ns, "name": f"{NODE}-data"}},
    })
    try:
        api.create("aitbcnodes", make_node(NODE, api.ns, storage={"pvc": {"size": "1Gi", "storageClassName": ""}}))
        node = wait_converged(api, "the AitbcNode on a PVC to become Ready")
        pvc = api.core.read_namespaced_persistent_volume_claim(f"{NODE}-data", api.ns)
        assert pvc.status.phase == "Bound"
        assert pvc.spec.volume_name == pv_name
        assert not pvc.metadata.owner_references  # retained: garbage collection must never take it
        assert pvc.metadata.annotations["aitbc.io/retained-from-uid"] == node["metadata"]["uid"]
        volumes = api.sts()["spec"]["template"]["spec"]["volumes"]
        assert volumes[0]["persistentVolumeClaim"] == {"claimName": f"{NODE}-data"}

        api.custom.delete_namespaced_custom_object(GROUP, VERSION, api.ns, "aitbcnodes", NODE)

        def children_gone() -> bool:
            return not any((api.exists(api.apps.read_namespaced_stateful_set, STS),
                            api.exists(api.apps.read_namespaced_deployment, DEPLOY),
                            api.exists(api.core.read_namespaced_config_map, f"{NODE}-config"),
                            api.exists(api.core.read_namespaced_service, f"{NODE}-rpc")))

        wait_until(children_gone, STEP, "garbage collection of the deleted AitbcNode's children")
        assert not api.exists(lambda n, ns: api.get("aitbcnodes", n), NODE)
        kept = api.core.read_namespaced_persistent_volume_claim(f"{NODE}-data", api.ns)
        assert kept.metadata.uid == pvc.metadata.uid
        assert kept.metadata.deletion_timestamp is None
    finally:
        api.core.delete_persistent_volume(pv_name)


# --- coordinated rollouts ---------------------------------------------------------------------------------------------

def test_node_pod_deleted_restarts_rpc_after_the_new_node_pod_is_ready(
    api: Api, operator: OperatorProcess, recorder: Recorder
) -> None:
    node = create_ready_node(api)
    config_hash = node["status"]["configHash"]
    old_pod = api.pod(NODE_POD)
    assert old_pod is not None
    old_marker = template_annotations(api.deploy())[ANNOTATION_NODE_RESTART_MARKER]

    with recorder:
        api.core.delete_namespaced_pod(NODE_POD, api.ns)

        def rpc_follows() -> bool:
            pod = api.pod(NODE_POD)
            if pod is None or pod["metadata"]["uid"] == old_pod["metadata"]["uid"]:
                return False
            marker = f"{pod['metadata']['uid']}/0"
            return template_annotations(api.deploy()).get(ANNOTATION_NODE_RESTART_MARKER) == marker

        wait_until(rpc_follows, STEP, "the RPC to be restarted after the new node pod")
        node = wait_converged(api, "the AitbcNode to be Ready again", to=config_hash)

    new_pod = api.pod(NODE_POD)
    assert new_pod is not None
    new_marker = f"{new_pod['metadata']['uid']}/0"
    assert new_marker != old_marker
    assert node["status"]["rollout"]["nodeRestartMarker"] == new_marker
    assert_node_then_rpc(recorder, config_hash, marker=new_marker)
    templates = recorder.templates("Deployment", DEPLOY)
    assert [(h, m) for _, h, m in templates] == [(config_hash, old_marker), (config_hash, new_marker)]
    assert [h for _, h, _ in recorder.templates("StatefulSet", STS)] == [config_hash]  # the node did not roll


def test_two_quick_changes_roll_the_rpc_once_to_the_last(
    api: Api, operator: OperatorProcess, recorder: Recorder
) -> None:
    first = create_ready_node(api)["status"]["configHash"]

    with recorder:
        api.patch_node({"redisUrl": "redis://redis-a:6379"})
        api.patch_node({"redisUrl": "redis://redis-b:6379"})
        node = wait_converged(api, "the AitbcNode to be Ready on the last change", changed_from=first)
        last = node["status"]["configHash"]
        assert api.get("aitbcnodes", NODE)["metadata"]["generation"] == node["metadata"]["generation"]

    cm = api._obj(api.core.read_namespaced_config_map(f"{NODE}-rpc-config", api.ns))
    assert cm["data"]["REDIS_URL"] == "redis://redis-b:6379"
    rpc_templates = recorder.templates("Deployment", DEPLOY)
    assert [h for _, h, _ in rpc_templates] == [first, last], recorder.timeline()
    assert_node_then_rpc(recorder, last)


def test_node_that_never_becomes_ready_stalls_and_leaves_the_rpc_alone(
    api: Api, operator: OperatorProcess, recorder: Recorder
) -> None:
    node = create_ready_node(api, rolloutTimeout="5s")
    good = node["status"]["configHash"]
    rpc_before = api.deploy()
    rpc_pod = api.pods("rpc")[0]

    with recorder:
        # A new configuration whose pod cannot be scheduled anywhere: the node rolls and never becomes Ready.
        api.patch_node({"redisUrl": "redis://redis-new:6379", "placement": {"nodeSelector": {"aitbc.io/nowhere": "x"}}})

        def stalled() -> bool:
            n = api.node()
            return (n["status"].get("rollout") or {}).get("phase") == "Stalled"

        wait_until(stalled, STEP, "the rollout to be Stalled")
        node = api.node()
        status = node["status"]
        assert condition(node, "Ready") == ("False", "NodeRolloutTimeout")
        assert condition(node, "Degraded") == ("True", "NodeRolloutTimeout")
        assert condition(node, "Progressing")[0] == "False"
        assert condition(node, "NodeReady") == ("False", "PodNotReady")
        assert status["configHash"] == good  # still the configuration both workloads are on
        target = status["rollout"]["targetHash"]
        assert target != good
        assert status["rollout"]["rpcHash"] == good
        assert "within 5s" in status["rollout"]["message"]
        pod = api.pod(NODE_POD)
        assert pod is not None
        assert pod["status"]["phase"] == "Pending"
        assert template_annotations(api.sts())[ANNOTATION_CONFIG_HASH] == target
        rpc_after = api.deploy()
        assert rpc_after["metadata"]["generation"] == rpc_before["metadata"]["generation"]
        assert template_annotations(rpc_after) == template_annotations(rpc_before)
        assert [p["metadata"]["uid"] for p in api.pods("rpc")] == [rpc_pod["metadata"]["uid"]]
        recorder.check()
        assert len(recorder.templates("Deployment", DEPLOY)) == 1

        # Fixing the placement lets the node become Ready on the new configuration: the rollout resumes, RPC second.
        api.patch_node({"placement": {"nodeSelector": None}})
        wait_converged(api, "the rollout to resume once the node can be scheduled", to=target)
    assert condition(api.node(), "Degraded") == ("False", "RolloutComplete")
    assert [h for _, h, _ in recorder.templates("Deployment", DEPLOY)] == [good, target]
    assert_node_then_rpc(recorder, target)


# --- the mempool on PostgreSQL (an AitbcDatabase on a real server) ----------------------------------------------------

def admin_secret(ns: str, pg: PgTestServer) -> dict[str, Any]:
    login = pg.admin_login
    uri = (f"postgresql://{urllib.parse.quote(login.user)}:{urllib.parse.quote(login.password)}"
           f"@{login.host}:{login.port}/postgres")
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "postgres-admin", "namespace": ns},
            "stringData": {"uri": uri}}


def create_ready_database(api: Api, pg: PgTestServer) -> dict[str, Any]:
    """The mempool AitbcDatabase (unique names on the shared server), Ready with its Secret."""
    api.core.create_namespaced_secret(api.ns, admin_secret(api.ns, pg))
    prefix = f"t{secrets.token_hex(4)}"
    api.create("aitbcdatabases", make_database("mempool", api.ns, databaseName=f"{prefix}_mempool",
                                               roleName=f"{prefix}_mempool"))
    seen: dict[str, Any] = {}

    def ready() -> bool:
        seen["db"] = db = api.get("aitbcdatabases", "mempool")
        return condition(db, "Ready")[0] == "True" and bool((db.get("status") or {}).get("secretName"))

    wait_until(ready, STEP, "the mempool AitbcDatabase to become Ready")
    return seen["db"]


def mempool_env(api: Api) -> dict[str, Any] | None:
    container = api.sts()["spec"]["template"]["spec"]["containers"][0]
    return next((e for e in container.get("env") or [] if e["name"] == "MEMPOOL_DB_URL"), None)


def test_mempool_to_postgres_and_back_rolls_node_then_rpc(
    api: Api, operator: OperatorProcess, recorder: Recorder, pg15: PgTestServer
) -> None:
    db = create_ready_database(api, pg15)
    # kwok completes Job pods without a report, so a backup before the migration would fail here (as
    # tests/integration/test_node_chainops.py shows): this test is about the rollout, the backup is proven on the real
    # node (tests/e2e/test_chain_ops.py).
    sqlite_hash = create_ready_node(api, backup={"destination": "ChainVolume", "beforeMigration": False})[
        "status"]["configHash"]
    assert mempool_env(api) is None

    with recorder:
        api.patch_node({"mempool": {"databaseRef": {"name": "mempool"}}})
        pg_hash = wait_converged(api, "the node on the PostgreSQL mempool", changed_from=sqlite_hash)[
            "status"]["configHash"]
        assert mempool_env(api) == {"name": "MEMPOOL_DB_URL", "valueFrom": {"secretKeyRef": {
            "name": db["status"]["secretName"], "key": "DATABASE_URL"}}}
        assert_node_then_rpc(recorder, pg_hash)

        api.patch_node({"mempool": {"databaseRef": None}})  # the rollback
        wait_converged(api, "the node back on the SQLite mempool", to=sqlite_hash)
    assert mempool_env(api) is None
    start = recorder.rpc_template_change(pg_hash)
    assert start is not None
    assert_node_then_rpc(recorder, sqlite_hash, after=start.rv)
    assert [h for _, h, _ in recorder.templates("Deployment", DEPLOY)] == [sqlite_hash, pg_hash, sqlite_hash]
    assert [h for _, h, _ in recorder.templates("StatefulSet", STS)] == [sqlite_hash, pg_hash, sqlite_hash]


def test_password_rotation_rolls_node_then_rpc_once(
    api: Api, operator: OperatorProcess, recorder: Recorder, pg15: PgTestServer
) -> None:
    db = create_ready_database(api, pg15)
    secret_name = db["status"]["secretName"]
    before = create_ready_node(api, mempool={"databaseRef": {"name": "mempool"}})["status"]["configHash"]
    old_password = api.core.read_namespaced_secret(secret_name, api.ns).data["password"]
    generations = (api.sts()["metadata"]["generation"], api.deploy()["metadata"]["generation"])

    with recorder:
        api.patch("aitbcdatabases", "mempool", {"metadata": {"annotations": {"aitbc.io/rotate-password": "1"}}})
        wait_until(lambda: api.core.read_namespaced_secret(secret_name, api.ns).data["password"] != old_password,
                   STEP, "the rotated password in the connection Secret")
        after = wait_converged(api, "the node on the rotated password", changed_from=before)["status"]["configHash"]
        wait_reconciles(operator, 2)  # later resyncs must not roll anything again

    assert_node_then_rpc(recorder, after)
    assert [h for _, h, _ in recorder.templates("Deployment", DEPLOY)] == [before, after], recorder.timeline()
    assert [h for _, h, _ in recorder.templates("StatefulSet", STS)] == [before, after]
    # One spec change each, not just one hash change: nothing else in the templates moved either.
    assert (api.sts()["metadata"]["generation"], api.deploy()["metadata"]["generation"]) == (
        generations[0] + 1, generations[1] + 1)
    # Every node pod ran the old or the new configuration, and exactly one Ready node incarnation ran the new one
    # before the RPC moved. (The number of pod objects is the StatefulSet controller's and kwok's business: under
    # load a pod can be re-created once more without any template change; the template assertions above are what
    # says the operator rolled the node once.)
    node_samples = [s for s in recorder.of("Pod", component="node") if s.event != "DELETED"]
    assert {s.config_hash for s in node_samples} <= {before, after}, recorder.timeline()
    rpc_move = recorder.rpc_template_change(after)
    assert rpc_move is not None
    ready_on_new = {s.uid for s in node_samples if s.ready and s.config_hash == after and s.rv < rpc_move.rv}
    assert len(ready_on_new) == 1, recorder.timeline()


# --- refusing what the AitbcNode does not own -------------------------------------------------------------------------

def test_children_names_held_by_hand_made_objects_are_a_name_conflict_and_nothing_is_written(
    api: Api, operator: OperatorProcess
) -> None:
    """`foo` with `foo-node`, `foo-rpc` and `foo-config` made by hand: refused, named, untouched, nothing else made."""
    labels = {"app": "mine"}
    hand_made = {
        ("ConfigMap", "foo-config"): api.core.create_namespaced_config_map(api.ns, {
            "metadata": {"name": "foo-config", "labels": labels}, "data": {"DATA_DIR": "/mine"}}),
        ("Service", "foo-node"): api.core.create_namespaced_service(api.ns, {
            "metadata": {"name": "foo-node", "labels": labels},
            "spec": {"selector": labels, "ports": [{"port": 80}]}}),
        ("Deployment", "foo-rpc"): api.apps.create_namespaced_deployment(api.ns, {
            "metadata": {"name": "foo-rpc", "labels": labels},
            "spec": {"replicas": 0, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}}),
    }
    generations = {key: obj.metadata.generation for key, obj in hand_made.items()}
    storage = {"pvc": DELETE, "hostPath": {"path": f"/var/lib/aitbc/{api.ns}", "nodeName": "worker-1"}}
    api.create("aitbcnodes", make_node("foo", api.ns, storage=storage))

    def degraded() -> dict[str, Any] | None:
        node = api.get("aitbcnodes", "foo")
        return node if condition(node, "Degraded") == ("True", "NameConflict") else None

    wait_until(degraded, STEP, "the AitbcNode to be Degraded/NameConflict")
    node = api.get("aitbcnodes", "foo")
    message = next(c["message"] for c in node["status"]["conditions"] if c["type"] == "Degraded")
    for kind, name in hand_made:
        assert f"{kind} {name} already exists and is controlled by no controller (not made by this operator), " \
               "not by AitbcNode foo: refusing to take it over" in message, message
    assert condition(node, "Ready") == ("False", "NameConflict")

    wait_reconciles(operator, 2)  # the re-checks retry: still nothing is written
    reads = {
        ("ConfigMap", "foo-config"): api.core.read_namespaced_config_map,
        ("Service", "foo-node"): api.core.read_namespaced_service,
        ("Deployment", "foo-rpc"): api.apps.read_namespaced_deployment,
    }
    for key, read in reads.items():
        live = read(key[1], api.ns)  # (the Deployment controller writes its status: resourceVersions move)
        managers = {f.manager for f in live.metadata.managed_fields or []}
        assert "aitbc-operator" not in managers, f"{key} was written: {managers}"
        assert live.metadata.generation == generations[key]
        assert not live.metadata.owner_references
        assert live.metadata.labels == labels
    assert not api.exists(api.apps.read_namespaced_stateful_set, "foo-node")
    assert not api.exists(api.core.read_namespaced_config_map, "foo-rpc-config")
    assert not api.exists(api.core.read_namespaced_service, "foo-rpc")

    # Removing the hand-made objects lets the AitbcNode make its own.
    for kind, name in hand_made:
        {"ConfigMap": api.core.delete_namespaced_config_map, "Service": api.core.delete_namespaced_service,
         "Deployment": api.apps.delete_namespaced_deployment}[kind](name, api.ns)
    wait_until(lambda: condition(api.get("aitbcnodes", "foo"), "Ready")[0] == "True", STEP,
               "the AitbcNode to become Ready once the names are free")


# --- workload errors surface within seconds (pod status written as a kubelet would) -----------------------------------

def patch_pod_status(api: Api, name: str, *, ready: bool, containers: list[dict[str, Any]] | None = None,
                     init: list[dict[str, Any]] | None = None, phase: str = "Running") -> None:
    """Write a pod's status as the kubelet would (kwok leaves a Running pod's status alone)."""
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [{"type": t, "status": "True" if ready else "False"} for t in ("Ready", "ContainersReady")],
    }
    if containers is not None:
        status["containerStatuses"] = containers
    if init is not None:
        status["initContainerStatuses"] = init
    api.core.patch_namespaced_pod_status(name, api.ns, {"status": status})


def container_status(name: str, image: str, state: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": image, "imageID": "", "ready": "running" in state, "restartCount": 0,
            "state": state, **extra}


def degraded_with(api: Api, reason: str) -> Callable[[], bool]:
    return lambda: condition(api.node(), "Degraded") == ("True", reason)


def degraded_message(api: Api) -> str:
    return str(next(c["message"] for c in api.node()["status"]["conditions"] if c["type"] == "Degraded"))


def test_node_pod_that_cannot_start_degrades_at_once_and_recovers(api: Api, operator: OperatorProcess) -> None:
    create_ready_node(api)
    image = api.pod(NODE_POD)["spec"]["containers"][0]["image"]  # type: ignore[index]
    pull = f'failed to pull and unpack image "{image}": not found'
    started = time.monotonic()
    patch_pod_status(api, NODE_POD, ready=False, containers=[
        container_status("node", image, {"waiting": {"reason": "ErrImagePull", "message": pull}})])
    wait_until(degraded_with(api, "ErrImagePull"), STEP, "Degraded/ErrImagePull")
    assert time.monotonic() - started < 15, "not within seconds"  # the rollout timeout is 10 minutes
    assert degraded_message(api) == f"pod {NODE_POD}: container node ErrImagePull: {pull}"
    assert condition(api.node(), "Ready")[0] == "False"

    # The init container failed, its report names what: that is the message.
    report = ('{"fs":"ext4","nocow":"unsupported","chains":[],"actions":[],"changed":false,"ok":false,'
              '"error":"corrupt database /var/lib/aitbc/data/ait-mainnet/chain.db (quick check: malformed)"}')
    patch_pod_status(api, NODE_POD, ready=False, phase="Pending", init=[container_status(
        "volume-prep", "ghcr.io/aitbc/aitbc-operator:test",
        {"terminated": {"exitCode": 1, "reason": "Error", "message": report}})],
        containers=[container_status("node", image, {"waiting": {"reason": "PodInitializing"}})])
    wait_until(degraded_with(api, "InitContainerFailed"), STEP, "Degraded/InitContainerFailed")
    assert degraded_message(api) == (f"pod {NODE_POD}: init container volume-prep failed: exit code 1, Error: corrupt"
                                     " database /var/lib/aitbc/data/ait-mainnet/chain.db (quick check: malformed)")

    # Back to running: the condition clears (no rollout was ever pending).
    patch_pod_status(api, NODE_POD, ready=True, init=[container_status(
        "volume-prep", "ghcr.io/aitbc/aitbc-operator:test", {"terminated": {"exitCode": 0, "reason": "Completed"}})],
        containers=[container_status("node", image, {"running": {"startedAt": "2026-01-01T00:00:00Z"}})])
    wait_until(lambda: converged(api.node()), STEP, "the AitbcNode to be Ready again")
    assert condition(api.node(), "Degraded") == ("False", "RolloutComplete")


def test_rpc_pod_in_crash_loop_degrades_at_once(api: Api, operator: OperatorProcess) -> None:
    create_ready_node(api)
    (rpc_pod,) = api.pods("rpc")
    name, image = rpc_pod["metadata"]["name"], rpc_pod["spec"]["containers"][0]["image"]
    back_off = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting failed container"}}
    patch_pod_status(api, name, ready=False, containers=[container_status(
        "rpc", image, back_off,
        lastState={"terminated": {"exitCode": 1, "reason": "Error", "message": "database is locked"}})])
    wait_until(degraded_with(api, "CrashLoopBackOff"), STEP, "Degraded/CrashLoopBackOff")
    assert degraded_message(api) == (f"pod {name}: container rpc CrashLoopBackOff: back-off 20s restarting failed"
                                     " container (last run: exit code 1, Error: database is locked)")


def test_pod_the_statefulset_controller_cannot_create_is_failed_create(api: Api, operator: OperatorProcess) -> None:
    """Pod Security `baseline` refuses the node pod (hostPath, LINUX_IMMUTABLE): the controller's Event says so."""
    api.core.patch_namespace(api.ns, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "baseline"}}})
    api.create("aitbcnodes", hostpath_node(api.ns))
    wait_until(degraded_with(api, "FailedCreate"), STEP, "Degraded/FailedCreate")
    message = degraded_message(api)
    assert message.startswith(f'StatefulSet {STS}: create Pod {NODE_POD} in StatefulSet {STS} failed error: pods'
                              f' "{NODE_POD}" is forbidden: violates PodSecurity "baseline:latest"'), message
    assert "hostPath volumes" in message
    assert api.node()["status"]["rollout"]["phase"] == "RollingNode"  # not Stalled: the timeout is 10 minutes


def test_pod_the_deployment_cannot_create_is_failed_create(api: Api, operator: OperatorProcess) -> None:
    """A pod quota of one: the node pod fits, the RPC's ReplicaSet cannot create its pod (ReplicaFailure)."""
    api.core.create_namespaced_resource_quota(api.ns, {"metadata": {"name": "one-pod"},
                                                       "spec": {"hard": {"pods": "1"}}})
    wait_until(lambda: (api.core.read_namespaced_resource_quota("one-pod", api.ns).status.hard or {}).get("pods"),
               STEP, "the quota controller to compute the quota")
    api.create("aitbcnodes", hostpath_node(api.ns))
    wait_until(degraded_with(api, "FailedCreate"), STEP, "Degraded/FailedCreate from the RPC Deployment")
    message = degraded_message(api)
    assert message.startswith(f"Deployment {DEPLOY}: pods "), message
    assert "exceeded quota: one-pod" in message
