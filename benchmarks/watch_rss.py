"""Operator memory with unrelated objects in the cluster: bounded watches (server-side label selectors) at work.

On a throwaway local control plane (real apiserver, kwok nodes), the operator runs cluster-wide (the chart's default)
twice, each time a fresh process, and its resident memory is read from ``/proc/<pid>/status`` (``VmRSS``) once it
has settled (at least ``--settle`` seconds after it answered its health probe, then until ten samples one second
apart are within 1 % of each other):

1. in the empty cluster;
2. after ``--secrets`` unrelated Secrets of ``--secret-kib`` KiB each (Helm-release-like, in five namespaces) and
   ``--pods`` unrelated Pods (Running on kwok nodes, in four namespaces) were created.

It prints both figures, the ratio (target: at most 1.10), the peak (``VmHWM``) of each run, and how many handler
runs the operator logged in the second run (target: 0; kopf logs every handler run as "Handler '...' succeeded" or
failed). ``--source DIR`` runs the operator from another source root (e.g. an older checkout's ``operator/``) for
a before/after comparison.

    python -m benchmarks.watch_rss [--secrets 5000 --secret-kib 10 --pods 2000]        # or: make bench-watch
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.procstat import settled_rss, status_kib
from kubernetes import client, config
from localcluster.cluster import LocalCluster
from tests.cluster.fixtures import crd_files
from tests.operator_fixtures import OperatorProcess

PODS_PER_NODE = 110  # localcluster.cluster.fake_node's capacity
SECRET_NAMESPACES, POD_NAMESPACES = 5, 4
HANDLER_LINE = re.compile(r"Handler '[^']+' (succeeded|failed)")


@dataclass(frozen=True)
class Memory:
    """One operator run: settled resident memory, its peak, and the handler runs it logged (KiB, KiB, count)."""

    rss_kib: int
    peak_kib: int
    handler_runs: int


def measure(kubeconfig: Path, log: Path, *, settle: float, source: Path | None) -> Memory:
    """Start the operator cluster-wide, wait until its memory settles, stop it."""
    env = {"PYTHONPATH": str(source)} if source else {}
    proc = OperatorProcess(kubeconfig, log, env=env).start(timeout=120)
    try:
        assert proc.proc is not None
        rss = settled_rss(proc.proc.pid, settle=settle)
        peak = status_kib(proc.proc.pid, "VmHWM")
    finally:
        proc.stop()
    return Memory(rss, peak, len(HANDLER_LINE.findall(proc.text())))


def in_parallel(work: Callable[[int], object], count: int, threads: int = 16) -> None:
    """Run work(0..count-1) on a thread pool, re-raising the first failure."""
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(work, range(count)):
            pass


def create_namespaces(core: client.CoreV1Api, names: Iterable[str]) -> None:
    for name in names:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))


def create_unrelated(api: client.ApiClient, *, secrets: int, secret_kib: int, pods: int, nodes: list[str]) -> None:
    """Helm-release-like Secrets and plain Pods on the kwok nodes, none of them the operator's."""
    core = client.CoreV1Api(api)
    create_namespaces(core, [f"unrelated-s{i}" for i in range(SECRET_NAMESPACES)])
    create_namespaces(core, [f"unrelated-p{i}" for i in range(POD_NAMESPACES)])
    blob = base64.b64encode(os.urandom(secret_kib * 1024)).decode()

    def secret(i: int) -> None:
        core.create_namespaced_secret(f"unrelated-s{i % SECRET_NAMESPACES}", client.V1Secret(
            metadata=client.V1ObjectMeta(name=f"sh.helm.release.v1.app{i}.v1", labels={"owner": "helm"}),
            type="helm.sh/release.v1", data={"release": blob}))

    def pod(i: int) -> None:
        core.create_namespaced_pod(f"unrelated-p{i % POD_NAMESPACES}", client.V1Pod(
            metadata=client.V1ObjectMeta(name=f"web-{i}", labels={"app": "web"}),
            spec=client.V1PodSpec(node_name=nodes[i % len(nodes)], containers=[
                client.V1Container(name="web", image="registry.example/web:1")])))

    began = time.monotonic()
    in_parallel(secret, secrets)
    in_parallel(pod, pods)
    print(f"created {secrets} Secrets of {secret_kib} KiB and {pods} Pods in {time.monotonic() - began:.0f} s",
          flush=True)
    wait_running(core, pods)


def wait_running(core: client.CoreV1Api, count: int, timeout: float = 600.0) -> None:
    """Until kwok reports every unrelated Pod Running (their status writes are over before the measurement)."""
    deadline = time.monotonic() + timeout
    while True:
        pods = core.list_pod_for_all_namespaces(label_selector="app=web", field_selector="status.phase=Running")
        if len(pods.items) >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pods.items)} of {count} Pods Running after {timeout:.0f} s")
        time.sleep(2.0)


def run(args: argparse.Namespace) -> int:
    nodes = [f"kwok-{i}" for i in range(max(1, -(-args.pods // PODS_PER_NODE)))]
    with tempfile.TemporaryDirectory(prefix="aitbc-bench-watch-") as tmp, \
            LocalCluster(Path(tmp) / "k8s", crds=crd_files(), nodes=nodes) as cluster:
        empty = measure(cluster.kubeconfig, Path(tmp) / "empty.log", settle=args.settle, source=args.source)
        print(f"empty cluster: RSS {empty.rss_kib / 1024:.1f} MiB (peak {empty.peak_kib / 1024:.1f} MiB)", flush=True)
        api: Any = config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
        try:
            create_unrelated(api, secrets=args.secrets, secret_kib=args.secret_kib, pods=args.pods, nodes=nodes)
        finally:
            api.close()
        loaded = measure(cluster.kubeconfig, Path(tmp) / "loaded.log", settle=args.settle, source=args.source)
    ratio = loaded.rss_kib / empty.rss_kib
    print(f"with {args.secrets} Secrets of {args.secret_kib} KiB and {args.pods} Pods: RSS "
          f"{loaded.rss_kib / 1024:.1f} MiB (peak {loaded.peak_kib / 1024:.1f} MiB), handler runs logged: "
          f"{loaded.handler_runs}")
    print(f"ratio loaded/empty RSS: {ratio:.3f} (target <= 1.10); peak ratio {loaded.peak_kib / empty.peak_kib:.3f}")
    return 0 if ratio <= 1.10 and loaded.handler_runs == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secrets", type=int, default=5000)
    parser.add_argument("--secret-kib", type=int, default=10)
    parser.add_argument("--pods", type=int, default=2000)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds at least between health and measurement")
    parser.add_argument("--source", type=Path, help="run the operator from this source root (e.g. another checkout)")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
