"""AitbcDatabase benchmark: N resources applied at once -> seconds until all are Ready, next to the floor (the same
SQL run directly in one psycopg loop, benchmarks/db_floor.py), what the operator process costs (CPU per resource
created, per idle drift check, resident memory) and what an idle drift pass and a restart change (nothing).
The floor runs twice, before the cluster starts and after the operator's run (control plane up and idle); the ratio
uses the faster of the two.

    python -m benchmarks.db_bench [--count 200] [--kubeconfig PATH] [--admin-uri postgresql://...] [--workers N]
    python -m benchmarks.db_bench --scale 200,1000,2000 --nodes 200       # the scale run (benchmarks/db_scale.py)

The operator process (its CPU from /proc/<pid>/stat, utime + stime, and its own /metrics counters):
- create: CPU from just before the resources are applied until all are Ready, per resource;
- RSS: settled VmRSS in the empty namespace, with the N resources Ready, and after the drift checks (idle);
- drift: its drift timers (AITBC_DRIFT_INTERVAL, --drift-interval, longer than the creation) check all N twice: the
  first pass after the creation (which derives each role's SCRAM keys from its verifier's salt, once per password)
  and the next one, the steady state the target is for: CPU per check, its writes, and from outside
  resourceVersions, Events and DDL lines in the server log (all must stay 0);
- restart: a fresh process until it resumed all N: seconds from its start, CPU, writes, the same outside checks.

Without --kubeconfig it starts its own local control plane (localcluster/cluster.py), without --admin-uri its own
PostgreSQL 15 server with a non-superuser admin (tests/pg/server.py); the operator runs as a subprocess
(`aitbc-operator run`, as in the integration tests). Everything it started or created is removed at the end.

The idle drift pass runs the operator's own reconcile function in-process, once per resource, with a fresh `Kube` and
`ServerPool`, and reads their counters (API requests by verb; SQL statements, DDL, role logins); the server log's DDL
lines and the resourceVersions of the resources and Secrets are checked from the outside as well.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import psycopg
from benchmarks import operator_cost, procstat, pyspy
from benchmarks.db_floor import FloorResult, create_floor
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from localcluster.cluster import NODE_NAMES, Cluster, LocalCluster
from psycopg import sql
from tests.factories import make_database
from tests.operator_fixtures import SCRIPT, OperatorProcess, release_finalizers
from tests.pg.server import PostgresServer, find_debian_bin_dir, find_embedded_bin_dir

from aitbc_operator.k8s.client import Kube
from aitbc_operator.k8s.resources import AITBC_DATABASE
from aitbc_operator.passwords import generate_password
from aitbc_operator.postgres import DesiredDatabase, ServerPool
from aitbc_operator.reconcilers.database import reconcile_database

GROUP, VERSION, PLURAL, KIND = "aitbc.io", "v1alpha1", "aitbcdatabases", "AitbcDatabase"
ADMIN_ROLE = "aitbc_bench_admin"
TARGET_RATIO = 1.3
Obj = dict[str, Any]
CRD_FILES = sorted((Path(__file__).resolve().parents[1] / "crds").glob("aitbc.io_*.yaml"))


def say(message: str) -> None:
    """Progress on stderr; the table goes to stdout."""
    print(f"[db-bench] {message}", file=sys.stderr, flush=True)


# --- the PostgreSQL server ------------------------------------------------------------------------------------------


@dataclass
class Admin:
    """The admin connection the operator and the floor use."""

    host: str
    port: int
    user: str
    password: str
    dbname: str = "postgres"

    def conninfo(self) -> str:
        return psycopg.conninfo.make_conninfo(host=self.host, port=self.port, user=self.user, password=self.password,
                                              dbname=self.dbname, sslmode="disable")

    def secret_data(self) -> dict[str, str]:
        return {"host": self.host, "port": str(self.port), "username": self.user, "password": self.password,
                "dbname": self.dbname}


#: Where the throwaway server keeps its data unless --pg-on-disk: memory, when it has room for this many bytes per
#: database (a copy of template1 and its WAL) plus 1 GiB. The server already runs with fsync off: the benchmark measures
#: the operator against the same SQL, not this machine's disk, whose speed varied 3.7x between two floor runs of one
#: benchmark (26.0 s and 7.0 s for the same 200 databases).
MEMORY_DIR, MEMORY_PER_DATABASE = Path("/dev/shm"), 24 * 2**20


def server_dir(count: int, on_disk: bool) -> Path | None:
    """A directory in memory for the server's data (None: the default, a temporary directory on disk)."""
    if on_disk or not MEMORY_DIR.is_dir():
        return None
    if shutil.disk_usage(MEMORY_DIR).free < count * MEMORY_PER_DATABASE + 2**30:
        return None
    return Path(tempfile.mkdtemp(prefix="aitbc-db-bench-", dir=MEMORY_DIR))


def pg_data_place(server: PostgresServer | None) -> str:
    """Where the server keeps its data, for the report."""
    if server is None:
        return "the given server"
    return "data in memory" if server.data_dir.is_relative_to(MEMORY_DIR) else "data on disk"


@contextmanager
def postgres_server(admin_uri: str | None, *, count: int = 0,
                    on_disk: bool = True) -> Iterator[tuple[Admin, PostgresServer | None]]:
    """The given server, or a throwaway PostgreSQL 15 (else the embedded newer major) with a non-superuser admin,
    its data in memory when ``on_disk`` is false and there is room for ``count`` databases."""
    if admin_uri:
        parts = urllib.parse.urlsplit(admin_uri)
        yield Admin(parts.hostname or "127.0.0.1", parts.port or 5432, urllib.parse.unquote(parts.username or ""),
                    urllib.parse.unquote(parts.password or ""), parts.path.lstrip("/") or "postgres"), None
        return
    bin_dir = find_debian_bin_dir("15") or find_embedded_bin_dir()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL server binaries: `make system-deps` installs postgresql-15")
    base = server_dir(count, on_disk)
    say(f"PostgreSQL data in {base or 'a temporary directory on disk'}")
    server = PostgresServer(bin_dir, name="db-bench", base_dir=base)
    try:
        server.start()
        login = server.create_admin(ADMIN_ROLE, secrets.token_urlsafe(18))
        yield Admin(login.host, login.port, login.user, login.password), server
    finally:
        server.cleanup()
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)


def drop_prefixed(admin: Admin, prefix: str, attempts: int = 10) -> None:
    """Drop every database and role named `<prefix>...` (the admin is a member of those roles, so it may).

    A backend still starting or ending (e.g. of the drift pass's role logins) may not be signalable yet; such a drop
    is retried. What is left after that is an error: the next run would find the names taken.
    """
    drop_database, drop_role = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)"), sql.SQL("DROP ROLE IF EXISTS {}")
    queries = (("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", drop_database),
               ("SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", drop_role))
    with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
        for listing, drop in queries:
            names = [str(row[0]) for row in conn.execute(listing, (prefix,))]
            for attempt in range(attempts):
                failed = []
                for name in names:
                    try:
                        conn.execute(drop.format(sql.Identifier(name)))
                    except psycopg.errors.InsufficientPrivilege:
                        failed.append(name)
                if not failed:
                    break
                names = failed
                time.sleep(0.5 * (attempt + 1))
            else:
                raise RuntimeError(f"could not drop {', '.join(names)}; drop them by hand before the next run")


def server_version(admin: Admin) -> str:
    with psycopg.connect(admin.conninfo()) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"


# --- the cluster ----------------------------------------------------------------------------------------------------


@contextmanager
def kubernetes_cluster(kubeconfig: str | None, workdir: Path, *, nodes: Sequence[str] = NODE_NAMES) -> Iterator[Path]:
    """The given cluster, or a local control plane of our own (with these kwok nodes); the CRDs installed either
    way."""
    with ExitStack() as stack:
        if kubeconfig:
            path = Path(kubeconfig)
        else:
            cluster = LocalCluster(workdir / "k8s", nodes=nodes)
            say("starting a local control plane")
            cluster.start()
            stack.callback(cluster.stop)
            path = cluster.kubeconfig
        Cluster(path).apply_crds(CRD_FILES)
        yield path


# --- the measurements -----------------------------------------------------------------------------------------------


@dataclass
class Results:
    count: int
    workers: int
    pg_version: str = ""
    pg_data: str = ""
    floor_runs: list[float] = field(default_factory=list)
    floor_statements: int = 0
    floor_ddl: int = 0
    apply_seconds: float = 0.0
    ready_seconds: float = 0.0
    idle_seconds: float = 0.0
    idle_calls: dict[str, int] = field(default_factory=dict)
    idle_statements: int = 0
    idle_ddl: int = 0
    idle_logins: int = 0
    idle_key_logins: int = 0
    idle_log_ddl: int | None = None
    idle_versions_changed: int = 0
    drift_interval: float = 60.0
    load_before: str = ""
    load_after: str = ""
    rss_empty_kib: int = 0
    rss_ready_kib: int = 0
    rss_idle_kib: int = 0
    peak_kib: int = 0
    #: ``procstat.rss_by_mapping`` of the operator in the empty namespace and idle.
    mappings_empty: dict[str, int] = field(default_factory=dict)
    mappings_idle: dict[str, int] = field(default_factory=dict)
    create_cpu: float = 0.0
    create_reconciles: float = 0.0
    create_requests: dict[str, float] = field(default_factory=dict)
    create_server_writes: dict[str, float] = field(default_factory=dict)
    drift_first: operator_cost.Window = field(default_factory=operator_cost.Window)
    drift: operator_cost.Window = field(default_factory=operator_cost.Window)
    restart: operator_cost.Window = field(default_factory=operator_cost.Window)
    restart_rss_kib: int = 0
    profile: Path | None = None
    memray: Path | None = None
    profiles: dict[str, str] = field(default_factory=dict)

    @property
    def floor_seconds(self) -> float:
        """The faster floor run: the stricter baseline."""
        return min(self.floor_runs, default=0.0)

    @property
    def ratio(self) -> float:
        return self.ready_seconds / self.floor_seconds if self.floor_seconds else float("inf")

    @property
    def idle_writes(self) -> int:
        return sum(n for verb, n in self.idle_calls.items() if verb != "GET")


def measure_floor_of(admin: Admin, count: int) -> float:
    """Seconds the floor takes to create ``count`` databases (dropped again)."""
    return floor_run(admin, count).seconds


def floor_run(admin: Admin, count: int) -> FloorResult:
    prefix = "bench_floor_"
    drop_prefixed(admin, prefix)
    wanted = [DesiredDatabase(database=f"{prefix}{i:05d}", role=f"{prefix}{i:05d}", owner=f"bench/floor-{i}")
              for i in range(count)]
    say(f"floor: creating {count} databases and roles in one psycopg loop")
    try:
        return create_floor(admin.conninfo(), wanted, password=generate_password())
    finally:
        drop_prefixed(admin, prefix)


def measure_floor(admin: Admin, count: int, results: Results) -> None:
    floor = floor_run(admin, count)
    results.floor_runs.append(floor.seconds)
    results.floor_statements, results.floor_ddl = floor.statements, floor.ddl


def create_all(api: client.ApiClient, namespace: str, count: int) -> None:
    """Create the resources concurrently (as `kubectl apply` of a directory would, only faster)."""
    crs = client.CustomObjectsApi(api)

    def create(i: int) -> None:
        obj = make_database(f"db-{i:04d}", service="mempool", databaseName=f"bench_op_{i:04d}",
                            roleName=f"bench_op_{i:04d}")
        crs.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, obj)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(count)))


def list_databases(api: client.ApiClient, namespace: str) -> list[Obj]:
    found = cast(Obj, client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL))
    items: list[Obj] = found["items"]
    return items


def is_ready(obj: Obj) -> bool:
    conditions = (obj.get("status") or {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def wait_all_ready(api: client.ApiClient, namespace: str, count: int, deadline: float) -> int:
    """Follow a watch (no polling LISTs loading the apiserver) until ``count`` resources are Ready; returns how many
    were Ready when it stopped (at the deadline, fewer)."""
    crs = client.CustomObjectsApi(api)
    ready: set[str] = set()
    version: str | None = None
    while len(ready) < count and time.monotonic() < deadline:
        if version is None:
            listed = cast(Obj, crs.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL))
            ready = {o["metadata"]["name"] for o in listed["items"] if is_ready(o)}
            version = str(listed["metadata"]["resourceVersion"])
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        budget = max(1, int(deadline - time.monotonic()))
        try:
            for event in stream.stream(  # type: ignore[no-untyped-call]
                    crs.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                    resource_version=version, timeout_seconds=min(budget, 60)):
                obj = event["object"]
                version = str(obj["metadata"]["resourceVersion"])
                if event["type"] != "DELETED" and is_ready(obj):
                    ready.add(obj["metadata"]["name"])
                if len(ready) >= count:
                    stream.stop()  # type: ignore[no-untyped-call]
                    break
        except ApiException as exc:
            if exc.status != 410:  # the watch's resourceVersion expired: list again
                raise
            version = None
    return len(ready)


def versions(api: client.ApiClient, namespace: str) -> dict[str, str]:
    """resourceVersion of every AitbcDatabase and Secret in the namespace."""
    found = {f"cr/{o['metadata']['name']}": str(o["metadata"]["resourceVersion"])
             for o in list_databases(api, namespace)}
    for secret in client.CoreV1Api(api).list_namespaced_secret(namespace).items:
        meta = secret.metadata
        if meta is not None:
            found[f"secret/{meta.name}"] = str(meta.resource_version)
    return found


def event_count(api: client.ApiClient, namespace: str) -> int:
    """Events in the namespace (the operator posts one per reconcile that changed something)."""
    return len(client.CoreV1Api(api).list_namespaced_event(namespace).items)


def outside_view(api: client.ApiClient, namespace: str, server: PostgresServer | None) -> operator_cost.Outside:
    """The resources and Secrets of the namespace, its Events and the server log's DDL lines of the admin."""
    return operator_cost.Outside(
        versions=lambda: versions(api, namespace), events=lambda: event_count(api, namespace),
        log_offset=server.log_size if server else None,
        ddl_since=(lambda offset: len(server.ddl_statements(ADMIN_ROLE, since=offset))) if server else None)


def operator_process(kubeconfig: Path, namespace: str, log: Path, results: Results, *,
                     memray: Path | None = None) -> OperatorProcess:
    """The operator (with ``memray``: run under memray's tracker, writing its capture there)."""
    env = {"AITBC_DRIFT_INTERVAL": f"{results.drift_interval:g}", "AITBC_MAX_WORKERS": str(results.workers)}
    command = (sys.executable, "-m", "memray", "run", "-q", "-o", str(memray), "-m", "aitbc_operator.cli") if memray \
        else (str(SCRIPT),)
    return OperatorProcess(kubeconfig, log, namespaces=(namespace,), env=env, command=command)


#: ``apiserver_request_total`` series: verb, resource and subresource are what a write is counted by.
_REQUEST_SERIES = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$')
_LABEL = re.compile(r'(\w+)="([^"]*)"')
_WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE"})


def server_writes(api: client.ApiClient) -> Counter[str]:
    """Every write the API server has answered so far, from any client, by ``VERB resource[/subresource]`` (its own
    ``apiserver_request_total``): the operator's client, kopf's own patches and Events, and the benchmark's."""
    method, url, headers, _body, _files = api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
    response = api.call_api(method, url, header_params=headers)
    response.read()
    writes: Counter[str] = Counter()
    for line in (response.data or b"").decode().splitlines():
        match = _REQUEST_SERIES.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        if labels.get("verb") in _WRITE_VERBS:
            what = "/".join(filter(None, (labels.get("resource"), labels.get("subresource"))))
            writes[f"{labels['verb']} {what}"] += int(float(match["value"]))
    return writes


def measure_operator(api: client.ApiClient, kubeconfig: Path, namespace: str, count: int, workdir: Path,
                     results: Results, timeout: float, server: PostgresServer | None) -> None:
    """Create N, then the drift checks, memory and a restart, all measured on the operator process."""
    proc = operator_process(kubeconfig, namespace, workdir / "operator.log", results, memray=results.memray).start()
    outside = outside_view(api, namespace, server)
    try:
        assert proc.proc is not None
        pid = proc.proc.pid
        results.rss_empty_kib = procstat.settled_rss(pid, settle=5.0)
        results.mappings_empty = procstat.mapping_kib(pid)
        say(f"operator: applying {count} AitbcDatabases at once (log: {proc.log})")
        before, writes_before = operator_cost.read(proc), server_writes(api)
        started = time.monotonic()
        with pyspy.recorded(pid, results.profile, "create", results.profiles):
            create_all(api, namespace, count)
            results.apply_seconds = time.monotonic() - started
            ready = wait_all_ready(api, namespace, count, started + timeout)
            if ready < count:
                raise SystemExit(f"only {ready}/{count} Ready after {timeout:.0f} s; see {proc.log}")
            results.ready_seconds = time.monotonic() - started
            done = operator_cost.read(proc)
        results.create_cpu, results.create_reconciles = done.cpu - before.cpu, done.reconciled(KIND, before)
        results.create_requests = {**procstat.delta(done.reads, before.reads), "writes": done.writes - before.writes}
        results.create_server_writes = dict(server_writes(api) - writes_before)
        results.rss_ready_kib = procstat.status_kib(pid, "VmRSS")
        say(f"operator: waiting for two passes of drift checks of all {count} (every {results.drift_interval:g} s)")
        results.drift_first = operator_cost.idle_window(proc, outside, KIND, count,
                                                        timeout=3 * results.drift_interval)
        with pyspy.recorded(pid, results.profile, "drift", results.profiles):
            results.drift = operator_cost.idle_window(proc, outside, KIND, count, timeout=3 * results.drift_interval)
        results.rss_idle_kib = procstat.settled_rss(pid, settle=10.0)
        results.mappings_idle = procstat.mapping_kib(pid)
        results.peak_kib = procstat.status_kib(pid, "VmHWM")
    finally:
        proc.stop(timeout=60)
    say("operator: restarting it, until it resumed every resource")
    again, results.restart = operator_cost.restart(
        lambda: operator_process(kubeconfig, namespace, workdir / "operator-restart.log", results), outside,
        {KIND: count}, timeout=timeout)
    try:
        assert again.proc is not None
        results.restart_rss_kib = procstat.settled_rss(again.proc.pid, settle=5.0)
    finally:
        again.stop(timeout=60)


def measure_idle_pass(kubeconfig: Path, namespace: str, server: PostgresServer | None, results: Results) -> None:
    """One drift pass over every resource, in-process, with the operator's reconcile function."""
    api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    before = versions(api, namespace)
    log_offset = server.log_size() if server else 0
    kube, pool = Kube.connect(str(kubeconfig)), ServerPool()

    async def drift_pass() -> None:
        try:
            bodies = await kube.list(AITBC_DATABASE, namespace)
            for body in bodies:
                await reconcile_database(kube, pool, body, now=datetime.now(UTC).replace(microsecond=0))
        finally:
            await pool.aclose()
            await kube.aclose()

    started = time.monotonic()
    kube.calls.clear()
    asyncio.run(drift_pass())
    results.idle_seconds = time.monotonic() - started
    results.idle_calls = dict(kube.calls)
    results.idle_statements, results.idle_ddl = pool.stats.statements, pool.stats.ddl
    results.idle_logins, results.idle_key_logins = pool.stats.login_checks, pool.stats.key_logins
    if server is not None:
        results.idle_log_ddl = len(server.ddl_statements(ADMIN_ROLE, since=log_offset))
    after = versions(api, namespace)
    results.idle_versions_changed = sum(1 for key, rv in after.items() if before.get(key) != rv)
    api.close()


def cleanup_namespace(api: client.ApiClient, namespace: str) -> None:
    """Release the finalizers (the operator is gone; nothing is dropped: Retain) and delete the namespace."""
    release_finalizers(api, namespace)
    client.CoreV1Api(api).delete_namespace(namespace)


# --- report ---------------------------------------------------------------------------------------------------------


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f} ms"


def quiet_text(window: operator_cost.Window) -> str:
    q = window.quiet
    ddl = "n/a" if q.log_ddl is None else str(q.log_ddl)
    return (f"{window.writes:.0f} client writes, {q.versions_changed} resourceVersions changed, "
            f"{q.events_posted} Events, {ddl} DDL lines")


def per_resource(requests: Mapping[str, float], n: int) -> str:
    """``GET 2.0, LIST 0.1, writes 3.0``: requests by verb divided by ``n``."""
    return ", ".join(f"{verb} {count / n:.2f}" for verb, count in sorted(requests.items()) if count) or "none"


def operator_rows(r: Results) -> list[tuple[str, str, str]]:
    """The operator process's own figures."""
    n = r.count
    first, drift, restart = r.drift_first, r.drift, r.restart
    return [
        ("operator CPU: creating all", f"{r.create_cpu:.2f} s = {ms(r.create_cpu / n)} per resource "
         f"({r.create_reconciles:.0f} reconciles)", "<= 12 ms"),
        ("  its client's API requests per resource", per_resource(r.create_requests, n), ""),
        ("  API server writes per resource, all clients", per_resource(r.create_server_writes, n), ""),
        ("operator CPU: first drift checks (keys derived)", f"{first.cpu:.2f} s for "
         f"{first.reconciles.get(KIND, 0):.0f} checks = {ms(first.per(KIND))} per check", ""),
        ("  first drift checks changed", quiet_text(first), "all 0"),
        ("operator CPU: idle drift checks (next pass)", f"{drift.cpu:.2f} s for {drift.reconciles.get(KIND, 0):.0f} "
         f"checks = {ms(drift.per(KIND))} per check (window {drift.seconds:.0f} s)", "<= 4 ms"),
        ("  drift checks changed", quiet_text(drift), "all 0"),
        ("  its client's API requests per check", per_resource({**drift.reads, "writes": drift.writes}, n), ""),
        ("operator RSS: empty namespace / all Ready / idle",
         f"{mib(r.rss_empty_kib)} / {mib(r.rss_ready_kib)} / {mib(r.rss_idle_kib)} (peak {mib(r.peak_kib)})",
         "<= 80 MiB idle with 200"),
        ("  per resource (idle - empty)", f"{(r.rss_idle_kib - r.rss_empty_kib) / n:.1f} KiB", ""),
        ("  by mapping, empty -> idle", procstat.mapping_change(r.mappings_empty, r.mappings_idle), ""),
        ("restart: start -> all resumed", f"{restart.seconds:.1f} s, CPU {restart.cpu:.2f} s "
         f"({ms(restart.cpu / n)} per resource, start-up included), RSS {mib(r.restart_rss_kib)}", "<= 30 s"),
        ("  restart changed", quiet_text(restart), "all 0"),
    ]


def table(r: Results) -> str:
    ok = r.ratio <= TARGET_RATIO
    idle_ok = r.idle_writes == 0 and r.idle_ddl == 0 and not r.idle_log_ddl and r.idle_versions_changed == 0
    operator_ok = all(w.writes == 0 and w.quiet.clean for w in (r.drift_first, r.drift, r.restart))
    calls = ", ".join(f"{verb} {n}" for verb, n in sorted(r.idle_calls.items())) or "none"
    rows = [
        ("create: all Ready through the operator", f"{r.ready_seconds:.1f} s", ""),
        ("  of which applying the resources", f"{r.apply_seconds:.1f} s", ""),
        ("create: floor (same SQL, one psycopg loop)",
         f"{r.floor_seconds:.1f} s ({r.floor_statements} statements, {r.floor_ddl} DDL)", ""),
        ("  floor runs (before / after the operator's)", " / ".join(f"{t:.1f} s" for t in r.floor_runs),
         "the faster one counts"),
        ("ratio operator / floor", f"{r.ratio:.2f}x", f"<= {TARGET_RATIO:.1f}x {'met' if ok else 'MISSED'}"),
        *operator_rows(r),
        ("idle drift pass (in-process): duration", f"{r.idle_seconds:.1f} s", ""),
        ("idle drift pass: Kubernetes requests", calls, ""),
        ("idle drift pass: Kubernetes writes", str(r.idle_writes), "0"),
        ("idle drift pass: resourceVersions changed", str(r.idle_versions_changed), "0"),
        ("idle drift pass: SQL statements (DDL)", f"{r.idle_statements} ({r.idle_ddl})", "read-only"),
        ("idle drift pass: role logins (password check)", f"{r.idle_logins} ({r.idle_key_logins} with SCRAM keys)",
         ""),
        ("idle drift pass: DDL lines in the server log",
         "n/a (external server)" if r.idle_log_ddl is None else str(r.idle_log_ddl), "0"),
    ]
    width = max(len(k) for k, _, _ in rows)
    value_width = max(len(v) for _, v, _ in rows)
    head = (f"AitbcDatabase benchmark: N={r.count}, PostgreSQL {r.pg_version} ({r.pg_data}), operator workers "
            f"{r.workers}, {os.cpu_count()} CPUs")
    lines = [head, "-" * len(head), f"before: {r.load_before}; after: {r.load_after}"]
    lines += [f"{k:<{width}}  {v:<{value_width}}  {t}".rstrip() for k, v, t in rows]
    lines.append(f"verdict: ratio target {'met' if ok else 'missed'}; idle pass {'clean' if idle_ok else 'NOT clean'}; "
                 f"operator's drift checks and restart {'clean' if operator_ok else 'NOT clean'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="number of AitbcDatabases (default 200)")
    parser.add_argument("--kubeconfig", help="use this cluster instead of starting a local control plane")
    parser.add_argument("--admin-uri", help="use this server's admin (postgresql://user:pw@host:port/db) instead of "
                        "starting a PostgreSQL server (the server log is then not checked)")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("AITBC_MAX_WORKERS", "20")),
                        help="the operator's AITBC_MAX_WORKERS (default 20)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up waiting for Ready after this long")
    parser.add_argument("--drift-interval", type=float, default=60.0,
                        help="the operator's AITBC_DRIFT_INTERVAL: longer than the creation takes (default 60 s)")
    parser.add_argument("--scale", help="instead: the scale run, comma-separated totals (e.g. 200,1000,2000)")
    parser.add_argument("--nodes", type=int, default=200, help="AitbcNodes (kwok) of the scale run (default 200)")
    parser.add_argument("--memray", type=Path, metavar="FILE",
                        help="run the first operator under memray, capture into FILE (then: memray stats/summary FILE; "
                        "its CPU and RSS figures are memray's, not the operator's)")
    parser.add_argument("--pg-on-disk", action="store_true",
                        help="keep the throwaway server's data on disk (default: in /dev/shm when there is room)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy records the operator into DIR while it creates and checks drift, or each "
                        "batch of the scale run (summarised)")
    args = parser.parse_args(argv)
    if args.scale:
        from benchmarks.db_scale import run_scale

        return run_scale(args)
    results = Results(count=args.count, workers=args.workers, drift_interval=args.drift_interval,
                      load_before=procstat.load(), profile=args.profile, memray=args.memray)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aitbc-db-bench-")))
        admin, server = stack.enter_context(postgres_server(args.admin_uri, count=args.count,
                                                            on_disk=args.pg_on_disk))
        results.pg_version = server_version(admin)
        results.pg_data = pg_data_place(server)
        measure_floor(admin, args.count, results)
        kubeconfig = stack.enter_context(kubernetes_cluster(args.kubeconfig, workdir))
        api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        stack.callback(api.close)
        namespace = f"aitbc-bench-{secrets.token_hex(3)}"
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        stack.callback(drop_prefixed, admin, "bench_op_")
        stack.callback(cleanup_namespace, api, namespace)
        core.create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name="postgres-admin"), string_data=admin.secret_data()))
        measure_operator(api, kubeconfig, namespace, args.count, workdir, results, args.timeout, server)
        say("idle drift pass over every resource (in-process reconcile)")
        measure_idle_pass(kubeconfig, namespace, server, results)
        measure_floor(admin, args.count, results)  # again, now with the control plane up: the faster run counts
        results.load_after = procstat.load()
        say("cleaning up")
    print(table(results))
    for what, text in results.profiles.items():
        print(f"\npy-spy, {what} ({results.profile}/{what}.txt):\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
