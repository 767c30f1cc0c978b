"""The local control plane behaves like a cluster: nodes are Ready, workloads roll out, the garbage collector runs,
ServiceAccount tokens authenticate and RBAC applies to them. The operator's own tests rely on each of these."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.cluster.fixtures import wait_until

pytestmark = pytest.mark.cluster

IMAGE = "registry.invalid/never-pulled:1"  # kwok simulates the kubelet: images are never pulled


def labels_for(name: str) -> dict[str, str]:
    """Pod labels of a smoke workload."""
    return {"app.kubernetes.io/name": name}


def pod_template(name: str) -> dict[str, Any]:
    """A minimal pod template."""
    return {
        "metadata": {"labels": labels_for(name)},
        "spec": {"containers": [{"name": "main", "image": IMAGE, "ports": [{"containerPort": 8080}]}]},
    }


def test_nodes_are_ready_kwok_nodes(kube: client.ApiClient) -> None:
    nodes = client.CoreV1Api(kube).list_node().items
    ready = [
        n.metadata.name for n in nodes if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)
    ]
    assert len(ready) >= 2, f"Ready nodes: {ready}"
    assert all(n.metadata.annotations.get("kwok.x-k8s.io/node") == "fake" for n in nodes)


def test_deployment_rolls_out_on_the_simulated_nodes(kube: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(kube)
    body = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": labels_for("web")}, "template": pod_template("web")},
    }
    apps.create_namespaced_deployment(namespace, body)

    def rolled_out() -> bool:
        status = apps.read_namespaced_deployment_status("web", namespace).status
        return (status.ready_replicas or 0) == 3 and (status.updated_replicas or 0) == 3

    wait_until(rolled_out, 60, "Deployment web to have 3 ready replicas")
    pods = client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector="app.kubernetes.io/name=web").items
    assert {p.status.phase for p in pods} == {"Running"}
    assert all(p.spec.node_name for p in pods), "every pod was scheduled onto a node"

    # A template change rolls out a new ReplicaSet, too.
    change = {"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}}
    apps.patch_namespaced_deployment("web", namespace, change)

    def second_revision_ready() -> bool:
        dep = apps.read_namespaced_deployment("web", namespace)
        status = dep.status
        return bool(
            status.observed_generation == dep.metadata.generation
            and (status.updated_replicas or 0) == 3 and (status.ready_replicas or 0) == 3
            and (status.replicas or 0) == 3
        )

    wait_until(second_revision_ready, 60, "Deployment web to roll out its second revision")


def test_statefulset_with_volume_claims_rolls_out(kube: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(kube)
    core = client.CoreV1Api(kube)
    core.create_namespaced_service(namespace, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "selector": labels_for("db"), "ports": [{"port": 8080}]},
    })
    apps.create_namespaced_stateful_set(namespace, {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": labels_for("db")},
                 "template": pod_template("db"),
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                     "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]},
    })

    def ready() -> bool:
        return (apps.read_namespaced_stateful_set_status("db", namespace).status.ready_replicas or 0) == 2

    wait_until(ready, 60, "StatefulSet db to have 2 ready replicas")
    names = sorted(p.metadata.name for p in core.list_namespaced_pod(namespace).items)
    assert names == ["db-0", "db-1"]
    claims = core.list_namespaced_persistent_volume_claim(namespace).items
    assert sorted((c.metadata.name, c.status.phase) for c in claims) == [("data-db-0", "Bound"), ("data-db-1", "Bound")]
    assert {c.spec.storage_class_name for c in claims} == {"standard"}, "the default StorageClass provisions them"


def test_deleting_an_owner_garbage_collects_its_child(kube: client.ApiClient, namespace: str) -> None:
    """A custom resource owning a Secret, as the operator's children are owned: deleting it deletes the Secret."""
    api = client.CustomObjectsApi(kube)
    core = client.CoreV1Api(kube)
    owner = yaml.safe_load("""
        apiVersion: aitbc.io/v1alpha1
        kind: AitbcDatabase
        metadata: {name: owner}
        spec: {service: wallet, server: {adminSecretRef: {name: postgres-admin}}}
    """)
    created = api.create_namespaced_custom_object("aitbc.io", "v1alpha1", namespace, "aitbcdatabases", owner)
    ref = {"apiVersion": "aitbc.io/v1alpha1", "kind": "AitbcDatabase", "name": "owner",
           "uid": created["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    core.create_namespaced_secret(namespace, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "owner-db", "ownerReferences": [ref]},
        "stringData": {"password": "not-a-real-one"},
    })
    api.delete_namespaced_custom_object("aitbc.io", "v1alpha1", namespace, "aitbcdatabases", "owner")

    def secret_gone() -> bool:
        try:
            core.read_namespaced_secret("owner-db", namespace)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    wait_until(secret_gone, 60, "the garbage collector to delete Secret owner-db")


def test_serviceaccount_token_authenticates_and_rbac_applies(k8s_cluster: Any, kube: client.ApiClient,
                                                              namespace: str) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    token = core.create_namespaced_service_account_token(
        "reader", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token

    settings = client.Configuration()
    settings.host = kube.configuration.host
    settings.ssl_ca_cert = kube.configuration.ssl_ca_cert
    settings.api_key = {"authorization": f"Bearer {token}"}
    as_reader = client.ApiClient(settings)
    try:
        review = client.AuthenticationV1Api(as_reader).create_self_subject_review({})
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:reader"
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(as_reader).list_namespaced_secret(namespace)
        assert denied.value.status == 403

        rbac = client.RbacAuthorizationV1Api(kube)
        rbac.create_namespaced_role(namespace, {
            "metadata": {"name": "secret-reader"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}],
        })
        rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secret-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        })

        def allowed() -> bool:
            try:
                client.CoreV1Api(as_reader).list_namespaced_secret(namespace)
            except ApiException as error:
                if error.status == 403:
                    return False
                raise
            return True

        wait_until(allowed, 30, "the RoleBinding to grant list secrets")
    finally:
        as_reader.close()
