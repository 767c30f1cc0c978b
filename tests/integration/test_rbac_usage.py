"""The RBAC of rbac.py is exactly what the operator uses, and its metrics endpoint serves the documented series.

One lifecycle on a local control plane of its own whose apiserver writes an audit log and enforces
OwnerReferencesPermissionEnforcement (as OpenShift does). The real operator (`aitbc-operator run`) runs cluster-wide,
as the chart's default, with leader election, authenticated ONLY as a ServiceAccount bound to the roles rendered
from rbac.py (deploy/base's bindings) by a token from the TokenRequest API:

- AitbcDatabase (deletionPolicy Drop) on a real PostgreSQL 15 server: created before its admin Secret exists
  (a reconcile error), Ready, a backup CronJob and an on-demand dump Job (then spec.backup removed: the CronJob
  deleted), drift repaired, password rotated by token, deleted (database and role dropped);
- AitbcNode on hostPath (worker-1) using that database for its mempool, and one on a PVC (default StorageClass):
  Ready; the rotation rolls the first one (node, then RPC), a config change rolls the second; both deleted;
- then a second operator process watching one namespace (Helm's `watchNamespaces` mode), which takes the Lease over.

Then: no request of the ServiceAccount was refused and the operator logged no Forbidden; every request is allowed
by a rule of rbac.py; and every (group, resource, verb) of every rule was needed by some request, unless listed in
NOT_EXERCISED with the reason. While the first operator runs, its /metrics serves every series metrics.py documents.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from localcluster.cluster import LocalCluster, crd_files, kubeconfig_dict
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from aitbc_operator import rbac
from aitbc_operator.k8s.client import FIELD_MANAGER
from aitbc_operator.metrics import ROLLOUT_PHASES
from tests import rbac_audit as audit
from tests.cluster.fixtures import wait_until
from tests.factories import DELETE, make_database, make_node
from tests.operator_fixtures import OperatorProcess
from tests.pg.fixtures import PgTestServer
from tests.pg.inspect import databases, roles, su

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.timeout(600)]

OPERATOR_NS, APPS_NS, SERVICE_ACCOUNT = "aitbc-system", "aitbc-apps", "aitbc-operator"
USER = f"system:serviceaccount:{OPERATOR_NS}:{SERVICE_ACCOUNT}"
GROUP, VERSION = "aitbc.io", "v1alpha1"
DB, HOSTPATH_NODE, PVC_NODE, REFUSED_NODE = "mempool", "aitbc1", "aitbc2", "aitbc3"
STEP = 90.0  # per step, generous: a loaded 2-core machine once took more than 40 s for the Drop
CONNECTION_LIMIT = 7

#: Granted by rbac.py but not needed by this lifecycle, with the reason. Keep it minimal and honest: an entry that the
#: lifecycle did use fails the test (stale), so does any other unused grant.
NOT_EXERCISED: dict[tuple[str, str, str], str] = {}
#: Documented series only a real kubelet produces (the chain-health sidecar's figures, RPC heights, a backup's report:
#: kwok runs nothing); tests/e2e/test_chain_ops.py scrapes them from the operator pod on the real node.
REAL_NODE_ONLY = frozenset({"aitbc_backup_last_success_timestamp_seconds", "aitbc_backup_last_size_bytes",
                            "aitbc_chain_file_height", "aitbc_chain_rpc_height", "aitbc_chain_wal_bytes"})

Obj = dict[str, Any]


# --- the cluster and the operator's identity --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def audited_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A control plane of this module alone (cluster-wide watching must see nobody else's objects), with an audit
    log and OwnerReferencesPermissionEnforcement."""
    cluster = LocalCluster(tmp_path_factory.mktemp("k8s-audit"), crds=crd_files(), audit=True,
                           admission_plugins=("OwnerReferencesPermissionEnforcement",))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def operator_kubeconfig(cluster: LocalCluster, path: Path) -> Path:
    """Namespaces, the ServiceAccount and deploy/base's RBAC (rendered from rbac.py); a kubeconfig with a token of
    that ServiceAccount from the TokenRequest API (server and CA of the cluster, nothing else)."""
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NS}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APPS_NS}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT, "namespace": OPERATOR_NS}},
    ]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    cluster.kubectl("apply", "-f", "-", input=rbac.kustomize_rbac(OPERATOR_NS, SERVICE_ACCOUNT))
    token = cluster.kubectl("create", "token", SERVICE_ACCOUNT, "-n", OPERATOR_NS, "--duration=2h").stdout.strip()
    assert token.count(".") == 2, "not a JWT"
    path.write_text(yaml.safe_dump(kubeconfig_dict(cluster.server, cluster.pki / "ca.crt", USER, token)))
    path.chmod(0o600)
    return path


def start_operator(kubeconfig: Path, log: Path, name: str, namespaces: tuple[str, ...] = ()) -> OperatorProcess:
    """The operator as a replica of the Deployment would run: leader election on, the Lease in its own namespace."""
    env = {"AITBC_LEADER_ELECTION": "true", "POD_NAMESPACE": OPERATOR_NS, "POD_NAME": name}
    return OperatorProcess(kubeconfig, log, namespaces=namespaces, env=env, standalone=False).start()


FORBIDDEN = re.compile(r"forbidden|HTTP 403|not enough permissions|unauthorized", re.IGNORECASE)


def forbidden_lines(proc: OperatorProcess) -> list[str]:
    return [line for line in proc.text().splitlines() if FORBIDDEN.search(line)]


# --- the admin's view -------------------------------------------------------------------------------------------------

@dataclass
class Admin:
    """The cluster admin (the test), in the applications' namespace."""

    cluster: LocalCluster
    api: client.ApiClient

    def __post_init__(self) -> None:
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)

    def create(self, obj: Obj) -> None:
        plural = obj["kind"].lower() + "s"
        self.custom.create_namespaced_custom_object(GROUP, VERSION, APPS_NS, plural, obj)

    def get(self, plural: str, name: str) -> Obj | None:
        try:
            return cast(Obj, self.custom.get_namespaced_custom_object(GROUP, VERSION, APPS_NS, plural, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def must_get(self, plural: str, name: str) -> Obj:
        obj = self.get(plural, name)
        assert obj is not None, f"{plural}/{name} is gone"
        return obj

    def patch(self, plural: str, name: str, patch: Obj) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, APPS_NS, plural, name, patch,
                                                   _content_type="application/merge-patch+json")

    def delete(self, plural: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, APPS_NS, plural, name)

    def secret(self, name: str) -> dict[str, str]:
        data = self.core.read_namespaced_secret(name, APPS_NS).data or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def children(self) -> list[Obj]:
        """Every object of the kinds the operator writes in the applications' namespace (with `kind`)."""
        kinds = ("configmaps,secrets,services,persistentvolumeclaims,statefulsets.apps,deployments.apps,jobs.batch,"
                 "cronjobs.batch")
        out = self.cluster.kubectl("get", kinds, "-n", APPS_NS, "-o", "json", "--show-managed-fields").stdout
        return cast(list[Obj], json.loads(out)["items"])

    def names(self, kind: str) -> set[str]:
        return {c["metadata"]["name"] for c in self.children() if c["kind"] == kind}


def condition(obj: Obj | None, kind: str) -> tuple[str | None, str | None]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return cond["status"], cond.get("reason")
    return None, None


def node_converged(obj: Obj | None, not_hash: str | None = None) -> bool:
    """Idle and Ready on the current generation (on a config hash other than `not_hash`)."""
    status = (obj or {}).get("status") or {}
    return (
        obj is not None
        and status.get("observedGeneration") == obj["metadata"]["generation"]
        and (status.get("rollout") or {}).get("phase") == "Idle"
        and condition(obj, "Ready") == ("True", "RolloutComplete")
        and status.get("configHash") not in (None, not_hash)
    )


def drop_names(pg: PgTestServer, prefix: str) -> None:
    for database in databases(pg.server, prefix):
        su(pg.server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
    for role in roles(pg.server, prefix):
        su(pg.server, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


# --- metrics ----------------------------------------------------------------------------------------------------------

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(proc: OperatorProcess) -> Samples:
    """Sample name -> [(labels, value)] of the operator's /metrics."""
    out: Samples = {}
    for family in text_string_to_metric_families(proc.metrics()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when there are none)."""
    return sum(v for found, v in samples.get(name, []) if labels.items() <= found.items())


def documented_series() -> set[str]:
    """The series metrics.py's docstring documents."""
    import aitbc_operator.metrics as metrics

    return set(re.findall(r"^  (aitbc_\w+)\{", metrics.__doc__ or "", re.MULTILINE))


def rollout_phases(samples: Samples, name: str) -> dict[str, float]:
    return {labels["phase"]: v for labels, v in samples.get("aitbc_rollout_phase", [])
            if labels["namespace"] == APPS_NS and labels["name"] == name}


def idle(samples: Samples, *names: str) -> bool:
    """Each named AitbcNode's phase series say Idle (1) and nothing else (0)."""
    return all(rollout_phases(samples, n) == {p: (1.0 if p == "Idle" else 0.0) for p in ROLLOUT_PHASES}
               for n in names)


def check_metrics(samples: Samples, rotated: bool) -> None:
    """Every documented series is served, with the labels and values this lifecycle must have produced."""
    served = {name for name, found in samples.items() if found}
    histogram = "aitbc_reconcile_duration_seconds"
    missing = {s for s in documented_series() - REAL_NODE_ONLY if s not in served and f"{s}_count" not in served}
    assert not missing, f"documented but not served: {missing}"

    for kind in ("AitbcDatabase", "AitbcNode"):
        assert value(samples, "aitbc_reconcile_total", kind=kind, result="ok") > 0, kind
        total = value(samples, "aitbc_reconcile_total", kind=kind)
        # Every reconcile is timed: the histogram's count is the outcome counter's total.
        assert value(samples, f"{histogram}_count", kind=kind) == total, kind
        assert value(samples, f"{histogram}_sum", kind=kind) > 0
        buckets = sorted((float(labels["le"]), v) for labels, v in samples[f"{histogram}_bucket"]
                         if labels["kind"] == kind)
        assert [v for _, v in buckets] == sorted(v for _, v in buckets), "cumulative buckets"
        assert buckets[-1] == (float("inf"), total)
    results = {labels["result"] for labels, _ in samples["aitbc_reconcile_total"]}
    assert results <= {"ok", "temporary_error", "permanent_error", "error"}, results
    # The AitbcDatabase created before its admin Secret failed with that reason (and counted as temporary).
    assert value(samples, "aitbc_reconcile_errors_total", kind="AitbcDatabase", reason="AdminSecretNotFound") >= 1
    assert value(samples, "aitbc_reconcile_total", kind="AitbcDatabase", result="temporary_error") >= 1
    assert value(samples, "aitbc_drift_repairs_total", kind="AitbcDatabase", what="SetConnectionLimit") >= 1
    assert value(samples, "aitbc_password_rotations_total", trigger="initial") == 1
    assert value(samples, "aitbc_password_rotations_total", trigger="token") == (1 if rotated else 0)
    assert value(samples, "aitbc_password_rotations_total", trigger="schedule") == 0
    assert idle(samples, HOSTPATH_NODE, PVC_NODE), samples["aitbc_rollout_phase"]
    for resource in ("secrets", "aitbcdatabases/status", "aitbcnodes/status", "configmaps", "services",
                     "statefulsets", "deployments", "persistentvolumeclaims"):
        assert value(samples, "aitbc_kube_writes_total", verb="PATCH", resource=resource) > 0, resource
    assert value(samples, "aitbc_kube_writes_total", verb="POST", resource="leases") == 1  # created once
    assert value(samples, "aitbc_kube_writes_total", verb="PUT", resource="leases") >= 1  # renewed
    assert value(samples, "aitbc_kube_reads_total", verb="LIST", resource="aitbcdatabases") >= 1  # the claims
    assert value(samples, "aitbc_kube_reads_total", verb="GET", resource="secrets") >= 1
    assert value(samples, "aitbc_kube_reads_total", verb="GET", resource="aitbcnodes") >= 1


# --- the lifecycle ----------------------------------------------------------------------------------------------------

def hostpath_node(**spec: Any) -> Obj:
    storage = {"pvc": DELETE, "hostPath": {"path": "/var/lib/aitbc/rbac-test", "nodeName": "worker-1"}}
    return make_node(HOSTPATH_NODE, storage=storage, mempool={"databaseRef": {"name": DB}}, **spec)


def waiter(proc: OperatorProcess) -> Callable[[Callable[[], object], str], None]:
    """Poll with a deadline, failing at once when the operator logs a refusal (no point waiting for Ready then)."""

    def wait(predicate: Callable[[], object], what: str) -> None:
        def done() -> object:
            if refusals := forbidden_lines(proc):
                pytest.fail(f"while waiting for {what}, the operator was refused:\n" + "\n".join(refusals[:5]))
            return predicate()

        wait_until(done, STEP, what, interval=0.25)

    return wait


def test_the_operator_uses_exactly_its_rbac_and_serves_its_metrics(
    audited_cluster: LocalCluster, pg15: PgTestServer, tmp_path: Path
) -> None:
    cluster = audited_cluster
    kubeconfig = operator_kubeconfig(cluster, tmp_path / "operator.kubeconfig")
    api: client.ApiClient = config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
    admin = Admin(cluster, api)
    prefix = f"r{secrets.token_hex(4)}"
    role = f"{prefix}_mempool"
    first = start_operator(kubeconfig, tmp_path / "operator-a.log", "replica-a")
    second: OperatorProcess | None = None
    wait = waiter(first)
    try:
        # AitbcDatabase before its admin Secret: a reconcile error, then Ready once the Secret is there.
        admin.create(make_database(DB, databaseName=role, roleName=role, deletionPolicy="Drop",
                                   connectionLimit=CONNECTION_LIMIT))
        wait(lambda: condition(admin.get("aitbcdatabases", DB), "Degraded") == ("True", "AdminSecretNotFound"),
             "AdminSecretNotFound")
        login = pg15.admin_login
        admin.core.create_namespaced_secret(APPS_NS, client.V1Secret(
            metadata=client.V1ObjectMeta(name="postgres-admin"),
            string_data={"host": login.host, "port": str(login.port), "username": login.user,
                         "password": login.password}))
        wait(lambda: condition(admin.get("aitbcdatabases", DB), "Ready") == ("True", "Reconciled"), "database Ready")
        secret_name = admin.must_get("aitbcdatabases", DB)["status"]["secretName"]

        # Day-2: the backup CronJob, an on-demand dump Job (watched), then spec.backup removed (the CronJob deleted).
        admin.patch("aitbcdatabases", DB, {"spec": {"backup": {"schedule": "0 3 * * *", "claimName": "dumps"}}})
        wait(lambda: "mempool-backup" in admin.names("CronJob"), "the backup CronJob")
        admin.patch("aitbcdatabases", DB, {"metadata": {"annotations": {"aitbc.io/backup-now": "rbac"}}})
        wait(lambda: any(n.startswith("mempool-backup-") for n in admin.names("Job")), "the on-demand Job")
        # A lost status write: the operator reads the Job it made for the token (get) and makes no second one.
        admin.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, APPS_NS, "aitbcdatabases", DB, {"status": {"backup": {"observedOnDemandToken": None}}})
        wait(lambda: ((admin.must_get("aitbcdatabases", DB).get("status") or {}).get("backup") or {}).get(
            "observedOnDemandToken") == "rbac", "the token observed again")
        assert len([n for n in admin.names("Job") if n.startswith("mempool-backup-")]) == 1
        admin.patch("aitbcdatabases", DB, {"spec": {"backup": None}})
        wait(lambda: "mempool-backup" not in admin.names("CronJob"), "the CronJob removed with spec.backup")

        # Two nodes: hostPath with the PostgreSQL mempool, and one on a PVC of the default StorageClass, with
        # autoExpand (that class does not allow expansion: the operator reads it and says so).
        admin.create(hostpath_node())
        admin.create(make_node(PVC_NODE, storage={"pvc": {"size": "1Gi", "autoExpand": {"maxSize": "2Gi"}}}))
        wait(lambda: all(node_converged(admin.get("aitbcnodes", n)) for n in (HOSTPATH_NODE, PVC_NODE)),
             "both AitbcNodes Ready")
        wait(lambda: any(c["type"] == "VolumeExpansionWarning" and c["reason"] == "StorageClassNotExpandable"
                         for c in (admin.get("aitbcnodes", PVC_NODE) or {}).get("status", {}).get("conditions", [])),
             "the StorageClass read: it does not allow expansion")
        hashes = {n: admin.must_get("aitbcnodes", n)["status"]["configHash"] for n in (HOSTPATH_NODE, PVC_NODE)}
        children = admin.children()
        assert f"{PVC_NODE}-data" in {c["metadata"]["name"] for c in children if c["kind"] == "PersistentVolumeClaim"}

        # An on-demand backup: its Job is created, watched and read (kwok completes it without a report: a failure).
        admin.patch("aitbcnodes", PVC_NODE, {"metadata": {"annotations": {"aitbc.io/backup-now": "rbac-1"}}})
        wait(lambda: all(c.get("lastFailure") for c in ((admin.get("aitbcnodes", PVC_NODE) or {}).get("status", {})
                                                        .get("backup") or {}).get("chains") or [{}]),
             "the backup Job's outcome in status")

        # Drift by hand, repaired.
        su(pg15.server, sql.SQL("ALTER ROLE {} CONNECTION LIMIT 1").format(sql.Identifier(role)))
        wait(lambda: roles(pg15.server, role)[role].connection_limit == CONNECTION_LIMIT, "the connection limit back")

        # A rotation (rolls the node using the database, node then RPC) and a config change of the other node.
        password = admin.secret(secret_name)["password"]
        admin.patch("aitbcdatabases", DB, {"spec": {"password": {"rotationToken": "1"}}})
        admin.patch("aitbcnodes", PVC_NODE, {"spec": {"redisUrl": "redis://redis-b:6379"}})
        wait(lambda: admin.secret(secret_name)["password"] != password, "the rotated password")
        wait(lambda: all(node_converged(admin.get("aitbcnodes", n), not_hash=hashes[n]) for n in hashes),
             "both AitbcNodes rolled and Ready on their new configuration")
        # The phase gauge is set from the status the reconcile started from, so it follows one reconcile later.
        wait(lambda: idle(scrape(first), HOSTPATH_NODE, PVC_NODE), "the rollout phase gauges back on Idle")
        check_metrics(scrape(first), rotated=True)

        # A node pod the StatefulSet controller cannot create (Pod Security `baseline` refuses hostPath): only its
        # Events say why, and the operator lists them.
        enforce = "pod-security.kubernetes.io/enforce"
        admin.core.patch_namespace(APPS_NS, {"metadata": {"labels": {enforce: "baseline"}}})
        admin.create(make_node(REFUSED_NODE, storage={"pvc": DELETE, "hostPath": {
            "path": "/var/lib/aitbc/rbac-refused", "nodeName": "worker-1"}}))
        wait(lambda: condition(admin.get("aitbcnodes", REFUSED_NODE), "Degraded") == ("True", "FailedCreate"),
             "the refused node pod's FailedCreate read from its StatefulSet's Events")
        admin.delete("aitbcnodes", REFUSED_NODE)
        wait(lambda: admin.get("aitbcnodes", REFUSED_NODE) is None, "the refused node gone")
        admin.core.patch_namespace(APPS_NS, {"metadata": {"labels": {enforce: None}}})

        # Deletion: nodes (children garbage-collected, the PVC retained), then the database (Drop).
        for node in (HOSTPATH_NODE, PVC_NODE):
            admin.delete("aitbcnodes", node)
        wait(lambda: not admin.names("StatefulSet") and not admin.names("Deployment"), "the nodes' children gone")
        wait(lambda: all(admin.get("aitbcnodes", n) is None for n in (HOSTPATH_NODE, PVC_NODE)), "nodes gone")
        admin.delete("aitbcdatabases", DB)
        wait(lambda: admin.get("aitbcdatabases", DB) is None, "the AitbcDatabase gone")
        assert role not in databases(pg15.server, prefix)
        assert role not in roles(pg15.server, prefix)
        writes = scrape(first)
        assert not rollout_phases(writes, HOSTPATH_NODE), "the deleted node's phase series are removed"
        assert first.stop() == 0

        # Helm's watchNamespaces mode: kopf lists and watches namespaces; this replica takes the released Lease.
        second = start_operator(kubeconfig, tmp_path / "operator-b.log", "replica-b", namespaces=(APPS_NS,))
        wait = waiter(second)

        def namespaces_watched() -> bool:
            seen = {r.verb for r in audit.requests_of(audit.read_events(cluster.audit_log), USER)
                    if r.resource == "namespaces"}
            return {"list", "watch"} <= seen

        wait(namespaces_watched, "the namespaced replica to list and watch namespaces")
        wait(lambda: "Activity '_startup' succeeded" in second.text(), "kopf started on replica-b")
        assert second.stop() == 0
    finally:
        first.stop()
        if second is not None:
            second.stop()
        drop_names(pg15, prefix)
        api.close()  # type: ignore[no-untyped-call]

    # (a) Nothing refused, nothing the operator complained about.
    assert second is not None
    for proc in (first, second):
        assert not forbidden_lines(proc), "\n".join(forbidden_lines(proc))
    events = audit.read_events(cluster.audit_log)
    requests = audit.requests_of(events, USER)
    assert not audit.refused(requests), "\n".join(map(str, audit.refused(requests)))

    # (b) Used == granted, both ways.
    plurals = {"AitbcDatabase": "aitbcdatabases", "AitbcNode": "aitbcnodes"}
    requests += audit.blocking_owner_updates(children, FIELD_MANAGER, plurals)
    granted = audit.grants(OPERATOR_NS)
    outside = audit.ungranted(requests, granted)
    assert not outside, "requests rbac.py does not grant:\n" + "\n".join(sorted(set(map(str, outside))))
    unused = [g for g in audit.unused(granted, requests) if g.key not in NOT_EXERCISED]
    assert not unused, "granted but never needed:\n" + "\n".join(map(str, unused))
    stale = [k for k in NOT_EXERCISED if any(g.key == k for g in granted) and
             any(r.key == k for r in requests)] + [k for k in NOT_EXERCISED if not any(g.key == k for g in granted)]
    assert not stale, f"NOT_EXERCISED entries that were exercised or are not granted: {stale}"
    # Besides resources, only discovery (granted to every authenticated user by system:discovery).
    discovery = re.compile(r"^/(version|api|apis|api/v1|apis/[^/]+(/[^/]+)?)$")
    assert {p for p in audit.non_resource_paths(events, USER) if not discovery.match(p)} == set()

    # (c) Bounded watches: every list and watch of a built-in kind the handlers watch selects the operator's children
    # (kopf's, by the managed-by label; the reconcilers' own, by a node's pod labels), so unrelated objects never
    # reach the operator. Admin Secrets are read by name (get), never listed.
    reads = audit.collection_reads(events, USER, {"secrets", "pods", "statefulsets", "deployments"})
    assert {(r.verb, r.resource) for r in reads} >= {(v, k) for v in ("list", "watch")
                                                     for k in ("secrets", "pods", "statefulsets", "deployments")}
    ours = re.compile(r"(^|,)(app\.kubernetes\.io/managed-by=aitbc-operator|aitbc\.io/owner=[^,]+)(,|$)")
    unbounded = [r for r in reads if not ours.search(r.label_selector)]
    assert not unbounded, "lists/watches without the operator's label selector:\n" + "\n".join(map(str, unbounded))

    # The operator's own write counter agrees with the apiserver's record of the children it applied.
    for resource in ("configmaps", "services", "statefulsets", "deployments", "persistentvolumeclaims"):
        audited = sum(1 for r in requests if r.resource == resource and r.verb == "patch" and not r.derived)
        assert value(writes, "aitbc_kube_writes_total", verb="PATCH", resource=resource) == audited, resource
    summary = sorted({f"{r.group or 'core'}/{r.resource} {r.verb}" for r in requests})
    print(f"\n{len(requests)} requests by {USER}; (group/resource verb) used:\n  " + "\n  ".join(summary))
