"""Failure isolation benchmark: how much does a dead PostgreSQL server slow down the AitbcDatabases of a healthy one?

Two kinds of run in one invocation, each with a fresh operator (`aitbc-operator run`, 20 handler slots) watching a
namespace of its own, on the same PostgreSQL 15 and local control plane, alternated over ``--rounds`` rounds (the
order flips every round, so neither kind always gets the colder server):

- baseline: N AitbcDatabases on the healthy server; seconds until all are Ready;
- dead server: the same N on the healthy server, interleaved with N on a "dead" one (a port that accepts connections
  and never answers, tests/pg/blackhole.py: each connection attempt costs the whole connect timeout); seconds until
  the healthy N are Ready, and until the dead N are Degraded/ServerUnreachable.

It prints every run, the medians and their ratio (dead-server run / baseline; 1.0 means the dead server costs the
healthy ones nothing), and how many connections the dead server received.

    .venv/bin/python -m benchmarks.db_isolation_bench [--count 50] [--rounds 3] [--kubeconfig ...] [--admin-uri ...]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from benchmarks.db_bench import Admin, cleanup_namespace, drop_prefixed, kubernetes_cluster, postgres_server, say
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from tests.factories import make_database
from tests.operator_fixtures import OperatorProcess
from tests.pg.blackhole import Blackhole

GROUP, VERSION, PLURAL = "aitbc.io", "v1alpha1", "aitbcdatabases"
PREFIX = "bench_iso_"
Obj = dict[str, Any]


@dataclass
class Run:
    """One measured run."""

    live_ready: float = 0.0
    dead_degraded: float | None = None
    dead_connections: int | None = None


def condition(obj: Obj, type_: str) -> tuple[str, str] | None:
    for cond in (obj.get("status") or {}).get("conditions", []):
        if cond["type"] == type_:
            return str(cond["status"]), str(cond["reason"])
    return None


def live_ready(obj: Obj) -> bool:
    return obj["metadata"]["name"].startswith("live-") and condition(obj, "Ready") == ("True", "Reconciled")


def dead_degraded(obj: Obj) -> bool:
    return (obj["metadata"]["name"].startswith("dead-")
            and condition(obj, "Degraded") == ("True", "ServerUnreachable"))


def follow(api: client.ApiClient, namespace: str, goals: dict[str, tuple[Callable[[Obj], bool], int]],
           started: float, deadline: float) -> dict[str, float]:
    """Follow a watch (no polling LISTs loading the apiserver) until every goal (a predicate over the resources and how
    many must satisfy it) is reached; returns the seconds since ``started`` at which each was."""
    crs = client.CustomObjectsApi(api)
    latest: dict[str, Obj] = {}
    reached: dict[str, float] = {}
    version: str | None = None

    def check() -> None:
        for goal, (predicate, count) in goals.items():
            if goal not in reached and sum(1 for o in latest.values() if predicate(o)) >= count:
                reached[goal] = time.monotonic() - started

    while len(reached) < len(goals) and time.monotonic() < deadline:
        if version is None:
            listed = cast(Obj, crs.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL))
            latest = {o["metadata"]["name"]: o for o in listed["items"]}
            version = str(listed["metadata"]["resourceVersion"])
            check()
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        try:
            for event in stream.stream(  # type: ignore[no-untyped-call]
                    crs.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, resource_version=version,
                    timeout_seconds=max(1, min(60, int(deadline - time.monotonic())))):
                obj = event["object"]
                version = str(obj["metadata"]["resourceVersion"])
                latest[obj["metadata"]["name"]] = obj
                check()
                if len(reached) == len(goals):
                    stream.stop()  # type: ignore[no-untyped-call]
                    break
        except ApiException as exc:
            if exc.status != 410:
                raise
            version = None
    missing = [goal for goal in goals if goal not in reached]
    if missing:
        raise SystemExit(f"not reached before the deadline: {', '.join(missing)}")
    return reached


def run_once(api: client.ApiClient, kubeconfig: Path, admin: Admin, workdir: Path, *, count: int, dead: bool,
             timeout: float) -> Run:
    """One run in a namespace of its own, with an operator of its own; everything it made is removed.

    Names differ between runs: the previous run's namespace may still be terminating, its resources still claiming
    their names.
    """
    tag = secrets.token_hex(3)
    namespace, prefix = f"aitbc-iso-{tag}", f"{PREFIX}{tag}_"
    core = client.CoreV1Api(api)
    run = Run()
    with ExitStack() as stack:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        stack.callback(drop_prefixed, admin, prefix)
        stack.callback(cleanup_namespace, api, namespace)
        core.create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name="postgres-admin"), string_data=admin.secret_data()))
        objects = []
        hole = stack.enter_context(Blackhole()) if dead else None
        if hole is not None:
            core.create_namespaced_secret(namespace, client.V1Secret(
                metadata=client.V1ObjectMeta(name="dead-admin"),
                string_data={"host": hole.host, "port": str(hole.port), "username": "admin", "password": "unused"}))
        for i in range(count):
            if hole is not None:
                objects.append(make_database(f"dead-{i:03d}", databaseName=f"{prefix}dead_{i:03d}",
                                             roleName=f"{prefix}dead_{i:03d}",
                                             server={"adminSecretRef": {"name": "dead-admin"}}))
            objects.append(make_database(f"live-{i:03d}", databaseName=f"{prefix}live_{i:03d}",
                                         roleName=f"{prefix}live_{i:03d}"))
        log = workdir / f"operator-{'dead' if dead else 'baseline'}-{tag}.log"
        proc = OperatorProcess(kubeconfig, log, namespaces=(namespace,), env={"AITBC_DRIFT_INTERVAL": "3600"})
        stack.callback(proc.stop, 60)
        proc.start()
        crs = client.CustomObjectsApi(api)
        say(f"{'dead-server' if dead else 'baseline'} run: applying {len(objects)} AitbcDatabases (log: {log})")
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda o: crs.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, o),
                          objects))
        goals = {"live": (live_ready, count)}
        if hole is not None:
            goals["dead"] = (dead_degraded, count)
        reached = follow(api, namespace, goals, started, started + timeout)
        run.live_ready = reached["live"]
        run.dead_degraded = reached.get("dead")
        run.dead_connections = hole.accepted if hole is not None else None
        say("cleaning up")
    return run


def report(count: int, baselines: list[Run], deads: list[Run]) -> str:
    baseline = statistics.median(r.live_ready for r in baselines)
    dead = statistics.median(r.live_ready for r in deads)
    degraded = statistics.median(r.dead_degraded or 0.0 for r in deads)
    ratio = dead / baseline if baseline else float("inf")

    def runs(values: list[float]) -> str:
        return ", ".join(f"{v:.1f}" for v in values)

    head = (f"AitbcDatabase failure isolation: {count} on a healthy server, {count} on a dead one, "
            f"{len(baselines)} rounds, {os.cpu_count()} CPUs")
    rows = [
        (f"baseline: {count} healthy alone, all Ready (median)", f"{baseline:.1f} s",
         f"runs: {runs([r.live_ready for r in baselines])}"),
        (f"with the dead server: the {count} healthy Ready (median)", f"{dead:.1f} s",
         f"runs: {runs([r.live_ready for r in deads])}"),
        (f"with the dead server: the {count} dead Degraded/ServerUnreachable", f"{degraded:.1f} s",
         f"runs: {runs([r.dead_degraded or 0.0 for r in deads])}"),
        ("connections the dead server received", ", ".join(str(r.dead_connections) for r in deads), "per run"),
        ("ratio healthy Ready, dead-server run / baseline (medians)", f"{ratio:.2f}x", ""),
    ]
    width = max(len(k) for k, _, _ in rows)
    value_width = max(len(v) for _, v, _ in rows)
    return "\n".join([head, "-" * len(head), *(f"{k:<{width}}  {v:<{value_width}}  {t}".rstrip() for k, v, t in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50, help="AitbcDatabases per server (default 50)")
    parser.add_argument("--kubeconfig", help="use this cluster instead of starting a local control plane")
    parser.add_argument("--admin-uri", help="use this server's admin (postgresql://user:pw@host:port/db)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of one baseline and one dead-server run")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this long per run")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aitbc-iso-bench-")))
        admin, _ = stack.enter_context(postgres_server(args.admin_uri))
        kubeconfig = stack.enter_context(kubernetes_cluster(args.kubeconfig, workdir))
        api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        stack.callback(api.close)
        runs: dict[bool, list[Run]] = {False: [], True: []}
        for round_ in range(args.rounds):
            for dead in (False, True) if round_ % 2 == 0 else (True, False):
                runs[dead].append(run_once(api, kubeconfig, admin, workdir, count=args.count, dead=dead,
                                           timeout=args.timeout))
    print(report(args.count, runs[False], runs[True]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
