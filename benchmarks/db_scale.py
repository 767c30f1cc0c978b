"""The scale run of the AitbcDatabase benchmark (``python -m benchmarks.db_bench --scale 200,1000,2000 --nodes 200``):
does the operator stay linear up to thousands of AitbcDatabases next to hundreds of AitbcNodes, and what does it
cost when idle?

On its own PostgreSQL 15 and local control plane (enough kwok nodes for the AitbcNodes' pods), in one namespace:

1. floors: for every batch (the differences between the totals, e.g. 200, 800, 1000), the SQL floor of that many
   databases (benchmarks/db_floor.py) on the still empty server, dropped again: seconds per database;
2. ``--nodes`` AitbcNodes (hostPath, spread over the kwok nodes): seconds until all are Ready, operator CPU; then
   its CPU per second with them all Ready (what the batches' CPU figures include besides the creations);
3. each batch of AitbcDatabases applied at once, until all so far are Ready: seconds and operator CPU per resource
   (vs the floor's seconds per database for the same batch size), the operator's settled RSS afterwards (``--profile
   DIR``: py-spy records each batch);
4. a restart: a fresh operator until it resumed everything (seconds from its start, CPU, writes; from outside:
   resourceVersions of every resource and child, Events, DDL lines in the server log);
5. that operator's drift checks of every AitbcDatabase (AITBC_DRIFT_INTERVAL ``--drift-interval``): CPU per check,
   and again nothing may change; then its settled RSS, idle.

Disk: every database is a copy of template1 (~7.5 MiB), so 2,000 need ~15 GiB on the server's filesystem (checked
before it starts); everything is dropped at the end.
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from benchmarks import operator_cost, procstat, pyspy
from benchmarks.db_bench import (
    ADMIN_ROLE,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    Admin,
    drop_prefixed,
    event_count,
    kubernetes_cluster,
    measure_floor_of,
    mib,
    ms,
    postgres_server,
    quiet_text,
    say,
    server_version,
    wait_all_ready,
)
from kubernetes import client, config
from tests.factories import DELETE, make_database, make_node
from tests.operator_fixtures import OperatorProcess, release_finalizers

NODE_KIND, NODE_PLURAL = "AitbcNode", "aitbcnodes"
#: kwok nodes hold 110 pods each (localcluster.cluster.fake_node); an AitbcNode runs two (node and RPC).
PODS_PER_KWOK_NODE = 100
DATABASE_MIB = 8.0
#: The operator's CPU with just the AitbcNodes, all Ready, before the first batch: in this many windows of seconds.
NODES_IDLE_WINDOWS, NODES_IDLE_WINDOW = 3, 10.0
NAMESPACE = "aitbc-scale"
CHILD_LISTS = {
    "secret": lambda api, ns: client.CoreV1Api(api).list_namespaced_secret(ns).items,
    "configmap": lambda api, ns: client.CoreV1Api(api).list_namespaced_config_map(ns).items,
    "service": lambda api, ns: client.CoreV1Api(api).list_namespaced_service(ns).items,
    "statefulset": lambda api, ns: client.AppsV1Api(api).list_namespaced_stateful_set(ns).items,
    "deployment": lambda api, ns: client.AppsV1Api(api).list_namespaced_deployment(ns).items,
}


@dataclass
class Step:
    """One batch of AitbcDatabases: how many, to what total, seconds to all Ready, operator CPU, RSS after."""

    batch: int
    total: int
    seconds: float = 0.0
    cpu: float = 0.0
    rss_kib: int = 0
    floor_seconds: float = 0.0


@dataclass
class Scale:
    nodes: int
    steps: list[Step]
    drift_interval: float
    pg_version: str = ""
    load_before: str = ""
    load_after: str = ""
    nodes_seconds: float = 0.0
    nodes_cpu: float = 0.0
    #: Operator CPU seconds per second with just the AitbcNodes, all Ready, in each ``NODES_IDLE_WINDOW``.
    nodes_idle_cpu: list[float] = field(default_factory=list)
    rss_empty_kib: int = 0
    #: ``procstat.rss_by_mapping`` of the first operator in the empty namespace, of the restarted one idle.
    mappings_empty: dict[str, int] = field(default_factory=dict)
    mappings_idle: dict[str, int] = field(default_factory=dict)
    restart: operator_cost.Window = field(default_factory=operator_cost.Window)
    drift: operator_cost.Window = field(default_factory=operator_cost.Window)
    rss_idle_kib: int = 0
    peak_kib: int = 0
    #: ``--profile DIR``: py-spy records the AitbcNodes' idle windows and each batch into DIR/<what>.txt
    #: (``nodes-idle``, ``batch-<total>``); the summaries, by that name.
    profile: Path | None = None
    profiles: dict[str, str] = field(default_factory=dict)


def versions_of_all(api: client.ApiClient, namespace: str) -> dict[str, str]:
    """resourceVersion of every custom resource and every child kind the operator writes, in the namespace."""
    crs = client.CustomObjectsApi(api)
    found: dict[str, str] = {}
    for plural in (PLURAL, NODE_PLURAL):
        listed = cast(dict[str, Any], crs.list_namespaced_custom_object(GROUP, VERSION, namespace, plural))
        found.update({f"{plural}/{o['metadata']['name']}": str(o["metadata"]["resourceVersion"])
                      for o in listed["items"]})
    for kind, list_items in CHILD_LISTS.items():
        for obj in list_items(api, namespace):
            found[f"{kind}/{obj.metadata.name}"] = str(obj.metadata.resource_version)
    return found


def ready_nodes(api: client.ApiClient, namespace: str) -> int:
    listed = cast(dict[str, Any], client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, NODE_PLURAL))
    return sum(1 for o in listed["items"] if any(
        c["type"] == "Ready" and c["status"] == "True" for c in (o.get("status") or {}).get("conditions", [])))


def create_nodes(api: client.ApiClient, namespace: str, count: int, kwok_nodes: list[str]) -> None:
    crs = client.CustomObjectsApi(api)

    def create(i: int) -> None:
        storage = {"pvc": DELETE, "hostPath": {"path": f"/var/lib/aitbc/scale/n{i:04d}",
                                                "nodeName": kwok_nodes[i % len(kwok_nodes)]}}
        crs.create_namespaced_custom_object(GROUP, VERSION, namespace, NODE_PLURAL,
                                            make_node(f"n{i:04d}", storage=storage))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(count)))


def create_databases(api: client.ApiClient, namespace: str, first: int, count: int) -> None:
    crs = client.CustomObjectsApi(api)

    def create(i: int) -> None:
        crs.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, make_database(
            f"db-{i:05d}", service="mempool", databaseName=f"bench_op_{i:05d}", roleName=f"bench_op_{i:05d}"))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(first, first + count)))


def check_disk(path: Path, databases: int) -> None:
    need = databases * DATABASE_MIB * 1024 * 1024
    free = shutil.disk_usage(path).free
    if free < 1.5 * need:
        raise SystemExit(f"{databases} databases need ~{need / 2**30:.0f} GiB under {path}; "
                         f"{free / 2**30:.0f} GiB free (want 1.5x)")
    say(f"disk: ~{need / 2**30:.1f} GiB needed, {free / 2**30:.0f} GiB free under {path}")


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(1.0)


def operator(kubeconfig: Path, log: Path, drift_interval: float, workers: int) -> OperatorProcess:
    env = {"AITBC_DRIFT_INTERVAL": f"{drift_interval:g}", "AITBC_NODE_POLL_INTERVAL": "300",
           "AITBC_MAX_WORKERS": str(workers)}
    return OperatorProcess(kubeconfig, log, namespaces=(NAMESPACE,), env=env)


def grow(api: client.ApiClient, proc: OperatorProcess, scale: Scale, kwok_nodes: list[str], timeout: float) -> None:
    """Steps 2 and 3: the AitbcNodes, then each batch of AitbcDatabases, timed and costed."""
    assert proc.proc is not None
    pid = proc.proc.pid
    scale.rss_empty_kib = procstat.settled_rss(pid, settle=5.0)
    scale.mappings_empty = procstat.mapping_kib(pid)
    say(f"creating {scale.nodes} AitbcNodes")
    before, began = procstat.cpu_seconds(pid), time.monotonic()
    create_nodes(api, NAMESPACE, scale.nodes, kwok_nodes)
    wait_until(lambda: ready_nodes(api, NAMESPACE) >= scale.nodes, timeout, f"{scale.nodes} AitbcNodes Ready")
    scale.nodes_seconds, scale.nodes_cpu = time.monotonic() - began, procstat.cpu_seconds(pid) - before
    with pyspy.recorded(pid, scale.profile, "nodes-idle", scale.profiles):
        for _ in range(NODES_IDLE_WINDOWS):
            before = procstat.cpu_seconds(pid)
            time.sleep(NODES_IDLE_WINDOW)
            scale.nodes_idle_cpu.append((procstat.cpu_seconds(pid) - before) / NODES_IDLE_WINDOW)
    for step in scale.steps:
        say(f"creating {step.batch} AitbcDatabases (to {step.total})")
        before, began = procstat.cpu_seconds(pid), time.monotonic()
        with pyspy.recorded(pid, scale.profile, f"batch-{step.total}", scale.profiles):
            create_databases(api, NAMESPACE, step.total - step.batch, step.batch)
            ready = wait_all_ready(api, NAMESPACE, step.total, began + timeout)
        if ready < step.total:
            raise SystemExit(f"only {ready}/{step.total} Ready after {timeout:.0f} s; see {proc.log}")
        step.seconds, step.cpu = time.monotonic() - began, procstat.cpu_seconds(pid) - before
        step.rss_kib = procstat.settled_rss(pid, settle=5.0)


def idle(api: client.ApiClient, kubeconfig: Path, workdir: Path, scale: Scale, outside: operator_cost.Outside,
         workers: int, timeout: float) -> None:
    """Steps 4 and 5: restart, then the drift checks of the restarted operator, then its idle RSS."""
    total = scale.steps[-1].total
    say("restarting the operator, until it resumed everything")
    proc, scale.restart = operator_cost.restart(
        lambda: operator(kubeconfig, workdir / "operator-restart.log", scale.drift_interval, workers), outside,
        {KIND: total, NODE_KIND: scale.nodes}, timeout=timeout)
    try:
        assert proc.proc is not None
        say(f"waiting for the drift checks of all {total} (every {scale.drift_interval:g} s)")
        scale.drift = operator_cost.idle_window(proc, outside, KIND, total, timeout=3 * scale.drift_interval)
        scale.rss_idle_kib = procstat.settled_rss(proc.proc.pid, settle=10.0)
        scale.mappings_idle = procstat.mapping_kib(proc.proc.pid)
        scale.peak_kib = procstat.status_kib(proc.proc.pid, "VmHWM")
    finally:
        proc.stop(timeout=60)


def report(scale: Scale) -> str:
    total = scale.steps[-1].total
    lines = [f"AitbcDatabase scale run: {total} AitbcDatabases + {scale.nodes} AitbcNodes (kwok), PostgreSQL "
             f"{scale.pg_version}", f"before: {scale.load_before}; after: {scale.load_after}",
             f"operator RSS in the empty namespace: {mib(scale.rss_empty_kib)}",
             f"{scale.nodes} AitbcNodes to Ready: {scale.nodes_seconds:.1f} s "
             f"({ms(scale.nodes_seconds / scale.nodes)} each), operator CPU {ms(scale.nodes_cpu / scale.nodes)} each; "
             f"then, all Ready, CPU per second in {NODES_IDLE_WINDOW:g} s windows: "
             f"{', '.join(ms(c) for c in scale.nodes_idle_cpu)}",
             "batch    total   all Ready  per resource  floor per db  ratio  CPU per resource  RSS after"]
    for s in scale.steps:
        per, floor = s.seconds / s.batch, s.floor_seconds / s.batch
        lines.append(f"{s.batch:>5}  {s.total:>7}  {s.seconds:>8.1f} s  {ms(per):>12}  {ms(floor):>12}  "
                     f"{per / floor:>4.2f}x  {ms(s.cpu / s.batch):>16}  {mib(s.rss_kib):>9}")
    r, d = scale.restart, scale.drift
    lines += [
        f"restart -> all resumed: {r.seconds:.1f} s (target <= 30 s), CPU {r.cpu:.1f} s; {quiet_text(r)}",
        f"drift checks of all {total}: {d.cpu:.1f} s CPU for {d.reconciles.get(KIND, 0):.0f} checks = "
        f"{ms(d.per(KIND))} per check ({d.reconciles.get(NODE_KIND, 0):.0f} AitbcNode polls in the "
        f"{d.seconds:.0f} s window); {quiet_text(d)}",
        f"operator RSS idle with {total} + {scale.nodes}: {mib(scale.rss_idle_kib)} (target <= 110 MiB; "
        f"peak {mib(scale.peak_kib)})",
        f"  by mapping, empty -> idle: {procstat.mapping_change(scale.mappings_empty, scale.mappings_idle)}",
    ]
    for what, text in scale.profiles.items():
        lines += [f"py-spy, {what} ({scale.profile}/{what}.txt):", text]
    return "\n".join(lines)


def run_scale(args: argparse.Namespace) -> int:
    """The scale run (arguments of benchmarks.db_bench)."""
    totals = sorted({int(t) for t in args.scale.split(",")})
    batches = [b - a for a, b in zip([0, *totals], totals, strict=False)]
    scale = Scale(args.nodes, [Step(b, t) for b, t in zip(batches, totals, strict=True)],
                  drift_interval=args.drift_interval, load_before=procstat.load(), profile=args.profile)
    kwok_nodes = [f"worker-{i + 1}" for i in range(max(2, math.ceil(2 * args.nodes / PODS_PER_KWOK_NODE)))]
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aitbc-db-scale-")))
        admin, server = stack.enter_context(postgres_server(args.admin_uri))
        if server is not None:
            check_disk(server.data_dir, totals[-1] + max(batches))
        scale.pg_version = server_version(admin)
        for step in scale.steps:
            step.floor_seconds = measure_floor_of(admin, step.batch)
        kubeconfig = stack.enter_context(kubernetes_cluster(None, workdir, nodes=kwok_nodes))
        api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        stack.callback(api.close)
        prepare_namespace(api, admin)
        stack.callback(drop_prefixed, admin, "bench_op_")
        stack.callback(cleanup, api)
        outside = operator_cost.Outside(
            versions=lambda: versions_of_all(api, NAMESPACE), events=lambda: event_count(api, NAMESPACE),
            log_offset=server.log_size if server else None,
            ddl_since=(lambda offset: len(server.ddl_statements(ADMIN_ROLE, since=offset))) if server else None)
        proc = operator(kubeconfig, workdir / "operator.log", 3600.0, args.workers).start()
        try:
            grow(api, proc, scale, kwok_nodes, args.timeout)
        finally:
            proc.stop(timeout=60)
        idle(api, kubeconfig, workdir, scale, outside, args.workers, args.timeout)
        scale.load_after = procstat.load()
        say("cleaning up (dropping every database)")
    print(report(scale))
    return 0


def prepare_namespace(api: client.ApiClient, admin: Admin) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
    core.create_namespaced_secret(NAMESPACE, client.V1Secret(
        metadata=client.V1ObjectMeta(name="postgres-admin"), string_data=admin.secret_data()))
    wait_until(lambda: any(sa.metadata.name == "default"
                           for sa in core.list_namespaced_service_account(NAMESPACE).items), 60, "ServiceAccount")


def cleanup(api: client.ApiClient) -> None:
    for plural in (PLURAL, NODE_PLURAL):
        release_finalizers(api, NAMESPACE, plural)
    client.CoreV1Api(api).delete_namespace(NAMESPACE)
