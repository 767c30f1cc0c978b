"""AitbcNode rollout benchmark: a config change through the operator against the same two rollouts done by kubectl.

On the local control plane (real apiserver, controller-manager and scheduler, kwok nodes), in one namespace:

* operator: patch the AitbcNode's configuration (``redisUrl``) and time until the node StatefulSet and the RPC
  Deployment are both rolled out and Ready on the new config hash (node first, then RPC, as the operator drives it);
  also until the AitbcNode reports Idle/Ready on it;
* kubectl: the same two rollouts of a plain StatefulSet and Deployment of the same shape (built by the same builders,
  not owned by anything) driven directly: ``kubectl patch`` the StatefulSet's template, ``kubectl rollout status``,
  then the same for the Deployment;
* API client: those two rollouts once more through the Python client, with the readiness polling of the operator
  measurement (no kubectl process start-up, no ``rollout status`` back-off): the tighter floor.

Each round runs all three; the medians and the operator's overhead (median differences) are printed. The operator runs
with a 30 s node poll interval, so its progress comes from watch events, not from polling.

    python -m benchmarks.node_bench [--rounds 5] [--kubeconfig PATH]     # or: make bench-node

Without ``--kubeconfig`` (or AITBC_TEST_KUBECONFIG) a throwaway cluster is started and stopped (``make cluster-bins``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from localcluster.cluster import Cluster, LocalCluster
from tests.cluster.fixtures import crd_files
from tests.factories import DELETE, make_node
from tests.operator_fixtures import OperatorProcess

from aitbc_operator.builders import node as b
from aitbc_operator.builders.common import LABEL_MANAGED_BY
from aitbc_operator.models.node import AitbcNodeSpec

GROUP, VERSION = "aitbc.io", "v1alpha1"
NODE, PLAIN = "bench", "plain"
TIMEOUT = 60.0
POLL = 0.02


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> float:
    """Poll until true; the monotonic time it was first seen true."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL)


def _hash(workload: dict[str, Any]) -> str | None:
    annotations = workload["spec"]["template"]["metadata"].get("annotations") or {}
    value = annotations.get(b.ANNOTATION_CONFIG_HASH)
    return str(value) if value is not None else None


def sts_ready(sts: dict[str, Any]) -> bool:
    """The StatefulSet controller saw the latest template, finished the update and its pod is Ready."""
    status = sts.get("status") or {}
    return (
        status.get("observedGeneration") == sts["metadata"]["generation"]
        and status.get("currentRevision") == status.get("updateRevision")
        and status.get("readyReplicas", 0) == status.get("updatedReplicas", 0) == sts["spec"]["replicas"]
    )


def deployment_ready(deploy: dict[str, Any]) -> bool:
    """The Deployment controller saw the latest template and only new, available pods are left."""
    status = deploy.get("status") or {}
    want = deploy["spec"]["replicas"]
    return (
        status.get("observedGeneration") == deploy["metadata"]["generation"]
        and status.get("updatedReplicas", 0) == status.get("availableReplicas", 0) == status.get("replicas", 0) == want
    )


class Bench:
    """The objects of one benchmark namespace."""

    def __init__(self, cluster: Cluster, ns: str) -> None:
        self.cluster, self.ns = cluster, ns
        self.api_client: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(cluster.kubeconfig))
        self.apps = client.AppsV1Api(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)

    def read(self, kind: str, name: str) -> dict[str, Any]:
        obj: Any
        if kind == "StatefulSet":
            obj = self.apps.read_namespaced_stateful_set(name, self.ns)
        elif kind == "Deployment":
            obj = self.apps.read_namespaced_deployment(name, self.ns)
        else:
            obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, "aitbcnodes", name)
        out: dict[str, Any] = self.api_client.sanitize_for_serialization(obj)
        return out

    def node_idle_on(self, config_hash: str | None) -> bool:
        status = self.read("AitbcNode", NODE).get("status") or {}
        phase = (status.get("rollout") or {}).get("phase")
        return config_hash is not None and phase == "Idle" and status.get("configHash") == config_hash

    def both_ready_on_new(self, old: str) -> str | None:
        """The new hash, once the node StatefulSet and the RPC Deployment are both Ready on it."""
        sts, deploy = self.read("StatefulSet", f"{NODE}-node"), self.read("Deployment", f"{NODE}-rpc")
        new = _hash(sts)
        if new is None or new == old or _hash(deploy) != new:
            return None
        return new if sts_ready(sts) and deployment_ready(deploy) else None

    def kubectl(self, *args: str) -> None:
        self.cluster.kubectl("--namespace", self.ns, *args)


def node_spec_dict(ns: str) -> dict[str, Any]:
    storage = {"pvc": DELETE, "hostPath": {"path": f"/var/lib/aitbc/bench/{ns}", "nodeName": "worker-1"}}
    return make_node(NODE, ns, storage=storage)


def plain_workloads(ns: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The node StatefulSet and RPC Deployment (plus ConfigMaps and Service) of the same shape, owned by nothing."""
    owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AitbcNode",
             "metadata": {"name": PLAIN, "namespace": ns, "uid": "00000000-0000-0000-0000-000000000000"}}
    model = AitbcNodeSpec.model_validate(spec)
    objs = [
        b.node_configmap(owner, model), b.rpc_configmap(owner, model), b.node_service(owner, model),
        b.node_statefulset(owner, model, config_hash="plain-0", operator_image="ghcr.io/aitbc/aitbc-operator:bench"),
        b.rpc_deployment(owner, model, config_hash="plain-0", node_restart_marker="plain"),
    ]
    for obj in objs:
        obj["metadata"].pop("ownerReferences", None)  # the owner does not exist: the GC would delete them
        for labels in (obj["metadata"].get("labels"), ((obj.get("spec") or {}).get("template") or {}).get(
                "metadata", {}).get("labels")):
            if labels is not None:
                labels[LABEL_MANAGED_BY] = "kubectl-bench"  # not the operator's: its child watches ignore them
    return objs


def operator_round(bench: Bench, i: int) -> tuple[float, float]:
    """(seconds to both workloads Ready on the new hash, seconds to the AitbcNode Idle on it)."""
    old = bench.read("AitbcNode", NODE)["status"]["configHash"]
    patch = {"spec": {"redisUrl": f"redis://bench-{i}:6379"}}
    start = time.monotonic()
    bench.custom.patch_namespaced_custom_object(GROUP, VERSION, bench.ns, "aitbcnodes", NODE, patch,
                                                _content_type="application/merge-patch+json")
    found: dict[str, str] = {}

    def ready() -> bool:
        new = bench.both_ready_on_new(old)
        if new:
            found["hash"] = new
        return new is not None

    both = wait_for(ready, "node and RPC Ready on the new configuration")
    idle = wait_for(lambda: bench.node_idle_on(found["hash"]), "the AitbcNode Idle on the new configuration")
    return both - start, idle - start


def kubectl_round(bench: Bench, i: int) -> float:
    """Seconds for: patch the StatefulSet template, rollout status, patch the Deployment template, rollout status."""
    patch = f'{{"spec":{{"template":{{"metadata":{{"annotations":{{"{b.ANNOTATION_CONFIG_HASH}":"plain-{i}"}}}}}}}}}}'
    start = time.monotonic()
    bench.kubectl("patch", "statefulset", f"{PLAIN}-node", "--type=merge", f"--patch={patch}")
    bench.kubectl("rollout", "status", f"statefulset/{PLAIN}-node", f"--timeout={TIMEOUT:.0f}s")
    bench.kubectl("patch", "deployment", f"{PLAIN}-rpc", "--type=merge", f"--patch={patch}")
    bench.kubectl("rollout", "status", f"deployment/{PLAIN}-rpc", f"--timeout={TIMEOUT:.0f}s")
    return time.monotonic() - start


def api_round(bench: Bench, i: int) -> float:
    """The same two rollouts through the API client, with the operator measurement's own readiness polling."""
    patch = {"spec": {"template": {"metadata": {"annotations": {b.ANNOTATION_CONFIG_HASH: f"api-{i}"}}}}}
    start = time.monotonic()
    bench.apps.patch_namespaced_stateful_set(f"{PLAIN}-node", bench.ns, patch)
    wait_for(lambda: sts_ready(bench.read("StatefulSet", f"{PLAIN}-node")), "the plain StatefulSet")
    bench.apps.patch_namespaced_deployment(f"{PLAIN}-rpc", bench.ns, patch)
    return wait_for(lambda: deployment_ready(bench.read("Deployment", f"{PLAIN}-rpc")), "the plain Deployment") - start


@contextmanager
def cluster_from(kubeconfig: str | None) -> Iterator[Cluster]:
    """The cluster of `kubeconfig`, or a throwaway local one."""
    if kubeconfig:
        yield Cluster(Path(kubeconfig))
        return
    with tempfile.TemporaryDirectory(prefix="aitbc-bench-") as tmp, LocalCluster(Path(tmp)) as local:
        yield local


def run(rounds: int, kubeconfig: str | None) -> int:
    with cluster_from(kubeconfig) as cluster, tempfile.TemporaryDirectory(prefix="aitbc-bench-op-") as tmp:
        cluster.apply_crds(crd_files())
        ns = f"bench-{os.urandom(3).hex()}"
        cluster.kubectl("create", "namespace", ns)
        bench = Bench(cluster, ns)
        operator = OperatorProcess(cluster.kubeconfig, Path(tmp) / "operator.log", namespaces=(ns,),
                                   env={"AITBC_NODE_POLL_INTERVAL": "30"})
        try:
            wait_for(lambda: any(sa.metadata.name == "default"
                                 for sa in bench.core.list_namespaced_service_account(ns).items), "ServiceAccount")
            operator.start()
            node = node_spec_dict(ns)
            bench.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "aitbcnodes", node)
            cluster.kubectl("--namespace", ns, "apply", "--server-side", "-f", "-",
                            input=yaml.safe_dump_all(plain_workloads(ns, node["spec"])))
            wait_for(lambda: bench.node_idle_on(bench.read("AitbcNode", NODE).get("status", {}).get("configHash")),
                     "the AitbcNode to become Ready")
            bench.kubectl("rollout", "status", f"statefulset/{PLAIN}-node", f"--timeout={TIMEOUT:.0f}s")
            bench.kubectl("rollout", "status", f"deployment/{PLAIN}-rpc", f"--timeout={TIMEOUT:.0f}s")

            results: dict[str, list[float]] = {"operator": [], "idle": [], "kubectl": [], "api": []}
            print(f"{'round':>5}  {'operator':>9}  {'AitbcNode Idle':>14}  {'kubectl':>8}  {'API':>6}")
            for i in range(1, rounds + 1):
                both, idle = operator_round(bench, i)
                direct, api = kubectl_round(bench, i), api_round(bench, i)
                for key, value in zip(results, (both, idle, direct, api), strict=True):
                    results[key].append(value)
                print(f"{i:>5}  {both:>8.2f}s  {idle:>13.2f}s  {direct:>7.2f}s  {api:>5.2f}s", flush=True)
            med = {key: statistics.median(values) for key, values in results.items()}
            print(f"\nmedians of {rounds} rounds (config change -> node and RPC both Ready on it):")
            print(f"  operator       {med['operator']:.2f} s   (AitbcNode Idle/Ready at {med['idle']:.2f} s)")
            print(f"  kubectl        {med['kubectl']:.2f} s   patch + rollout status, StatefulSet then Deployment")
            print(f"  API client     {med['api']:.2f} s   the same two rollouts, polled like the operator run")
            print(f"  overhead vs kubectl {med['operator'] - med['kubectl']:+.2f} s, "
                  f"vs API client {med['operator'] - med['api']:+.2f} s (target < 1 s)")
        finally:
            operator.stop()
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="config changes to time (default 5)")
    parser.add_argument("--kubeconfig", default=os.environ.get("AITBC_TEST_KUBECONFIG"),
                        help="an existing cluster (default: AITBC_TEST_KUBECONFIG, else a throwaway local cluster)")
    args = parser.parse_args(argv)
    try:
        return run(args.rounds, args.kubeconfig)
    except (TimeoutError, subprocess.CalledProcessError) as exc:
        print(f"node_bench: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
