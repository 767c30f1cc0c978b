"""Everything deploy/ and the chart render is accepted by a real kube-apiserver, and the RBAC grants what rbac.py
says (and nothing next to it), checked with SubjectAccessReviews against the real RBAC authorizer.

Rendering needs kubectl and helm from `make cluster-bins`, like tests/unit/test_packaging_render.py.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from localcluster.cluster import Cluster

from aitbc_operator import rbac
from tests.unit.test_packaging_render import helm_template, kustomize

pytestmark = pytest.mark.cluster

OPERATOR_NS = "aitbc-system"
SAMPLES_NS = "aitbc"
WATCHED = ("aitbc-deploy-test-a", "aitbc-deploy-test-b")
SERVICE_ACCOUNT = f"system:serviceaccount:{OPERATOR_NS}:aitbc-operator"

Obj = dict[str, Any]


def rendered(name: str) -> list[Obj]:
    """What one install method produces (ServiceMonitor left out: the test cluster has no prometheus-operator)."""
    if name.startswith("helm:"):
        extra = {"helm:default": (), "helm:ha-namespaced": (
            "--set", "replicaCount=2", "--set", "podDisruptionBudget.enabled=true",
            "--set", f"watchNamespaces={{{','.join(WATCHED)}}}",
        )}[name]
        return [d for d in yaml.safe_load_all(helm_template(*extra).stdout) if d]
    return kustomize(name.removeprefix("kustomize:"))


@pytest.fixture(scope="module")
def namespaces(kube: client.ApiClient) -> Iterator[None]:
    """The namespaces the rendered objects live in (a server-side dry run of a namespaced object needs its namespace).
    Created for real if missing, deleted afterwards if this module created them."""
    core = client.CoreV1Api(kube)
    created = []
    for name in (OPERATOR_NS, SAMPLES_NS, *WATCHED):
        try:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
            created.append(name)
        except ApiException as exc:
            if exc.status != 409:
                raise
    yield
    for name in created:
        core.delete_namespace(name, propagation_policy="Background")


def apply(cluster: Cluster, objects: list[Obj], *, dry_run: bool) -> subprocess.CompletedProcess[str]:
    args = ["apply", "--server-side", "--force-conflicts", "--field-manager=aitbc-deploy-test", "-f", "-"]
    if dry_run:
        args.append("--dry-run=server")
    return cluster.kubectl(*args, input=yaml.safe_dump_all(objects), check=False)


@pytest.mark.usefixtures("namespaces", "aitbc_crds")
@pytest.mark.parametrize(
    "name",
    ["kustomize:base", "kustomize:overlays/kind", "kustomize:overlays/production", "kustomize:argocd/app",
     "kustomize:samples", "helm:default", "helm:ha-namespaced"],
)
def test_server_side_dry_run_accepts_everything_rendered(k8s_cluster: Cluster, name: str) -> None:
    """Full validation by the apiserver (schemas, CRD structural rules, CEL on the samples, RBAC object rules),
    nothing stored."""
    objects = rendered(name)
    assert objects
    result = apply(k8s_cluster, objects, dry_run=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(objects), result.stdout


def test_dry_run_rejects_a_broken_manifest(k8s_cluster: Cluster, namespaces: None) -> None:
    """The check above can fail: a Deployment whose probe port is not a valid port name is refused."""
    objects = [o for o in rendered("kustomize:overlays/kind") if o["kind"] == "Deployment"]
    objects[0]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = "Health_Port"
    result = apply(k8s_cluster, objects, dry_run=True)
    assert result.returncode != 0
    assert "livenessProbe.httpGet.port" in result.stderr


@pytest.fixture(scope="module")
def installed_rbac(k8s_cluster: Cluster, namespaces: None) -> Iterator[None]:
    """deploy/base's ServiceAccount and RBAC, applied for real (cluster-wide watching); removed afterwards."""
    objects = [o for o in rendered("kustomize:base")
               if o["kind"] in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]
    result = apply(k8s_cluster, objects, dry_run=False)
    assert result.returncode == 0, result.stderr
    yield
    for obj in objects:
        ns = obj["metadata"].get("namespace")
        with contextlib.suppress(Exception):
            k8s_cluster.kubectl("delete", obj["kind"], obj["metadata"]["name"], *(["-n", ns] if ns else []),
                                "--ignore-not-found", "--wait=false")


def allowed(kube: client.ApiClient, verb: str, group: str, resource: str, *, namespace: str | None = "team-x",
            name: str | None = None) -> bool:
    """Whether the operator's ServiceAccount may do this, according to the apiserver's authorizer."""
    res, _, sub = resource.partition("/")
    attrs = client.V1ResourceAttributes(
        verb=verb, group=group, resource=res, subresource=sub or None, namespace=namespace, name=name
    )
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=SERVICE_ACCOUNT, groups=["system:serviceaccounts", f"system:serviceaccounts:{OPERATOR_NS}",
                                      "system:authenticated"],
        resource_attributes=attrs,
    ))
    result = client.AuthorizationV1Api(kube).create_subject_access_review(review)
    return bool(result.status.allowed)


def granted_cases() -> list[tuple[str, str, str, str | None, str | None]]:
    """(verb, group, resource, namespace, name) for every verb of every rule in rbac.py."""
    cases = []
    for role in rbac.ROLES:
        namespace = OPERATOR_NS if role.namespaced else "team-x"
        for rule in role.rules:
            for group in rule.api_groups:
                for resource in rule.resources:
                    for verb in rule.verbs:
                        for name in rule.resource_names or (None,):
                            cases.append((verb, group, resource, namespace, name))
    return cases


@pytest.mark.usefixtures("installed_rbac")
def test_every_rule_is_granted(kube: client.ApiClient) -> None:
    cases = granted_cases()
    refused = [c for c in cases if not allowed(kube, c[0], c[1], c[2], namespace=c[3], name=c[4])]
    assert not refused, f"refused although rbac.py grants them: {refused}"
    assert len(cases) > 40


@pytest.mark.usefixtures("installed_rbac")
@pytest.mark.parametrize(
    ("verb", "group", "resource", "namespace", "name"),
    [
        ("delete", "", "pods", "team-x", None),  # rollouts patch templates; pods are never deleted
        ("delete", "", "secrets", "team-x", None),  # a connection Secret outlives its database (Retain)
        ("update", "", "secrets", "team-x", None),  # server-side apply is a patch
        ("deletecollection", "", "configmaps", "team-x", None),
        # Children go by garbage collection; nothing in the operator deletes or lists them (test_rbac_usage.py).
        ("delete", "", "configmaps", "team-x", None),
        ("delete", "apps", "statefulsets", "team-x", None),
        ("delete", "", "persistentvolumeclaims", "team-x", None),  # the chain volume claim is retained
        ("watch", "", "services", "team-x", None),
        ("patch", "", "events", "team-x", None),  # kopf only creates Events
        ("get", "apiextensions.k8s.io", "customresourcedefinitions", None, "aitbcnodes.aitbc.io"),
        ("create", "", "pods", "team-x", None),
        ("get", "", "nodes", None, None),
        ("create", "rbac.authorization.k8s.io", "rolebindings", "team-x", None),
        ("delete", "aitbc.io", "aitbcdatabases", "team-x", None),  # the user deletes CRs, never the operator
        ("update", "aitbc.io", "aitbcnodes/status", "team-x", None),
        ("get", "coordination.k8s.io", "leases", OPERATOR_NS, "someone-elses-lease"),
        ("update", "coordination.k8s.io", "leases", "team-x", "aitbc-operator-leader"),  # only in its own namespace
        ("list", "coordination.k8s.io", "leases", OPERATOR_NS, None),
        ("delete", "apiextensions.k8s.io", "customresourcedefinitions", None, "aitbcnodes.aitbc.io"),
    ],
)
def test_nothing_next_to_the_rules_is_granted(
    kube: client.ApiClient, verb: str, group: str, resource: str, namespace: str | None, name: str | None
) -> None:
    assert not allowed(kube, verb, group, resource, namespace=namespace, name=name)
