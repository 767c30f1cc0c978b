"""The comparison of RBAC rules with an audit log (tests/rbac_audit.py) finds divergence in both directions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aitbc_operator import rbac
from tests import rbac_audit as audit

USER = "system:serviceaccount:aitbc-system:aitbc-operator"
OPS = "aitbc-system"


def event(verb: str, resource: str, *, group: str = "", namespace: str | None = "apps", name: str | None = None,
          code: int = 200, user: str = USER, audit_id: str | None = None, stage: str = "ResponseComplete",
          subresource: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"resource": resource, "apiVersion": "v1"}
    if group:
        ref["apiGroup"] = group
    if namespace:
        ref["namespace"] = namespace
    if name:
        ref["name"] = name
    if subresource:
        ref["subresource"] = subresource
    return {"auditID": audit_id or f"{verb}-{resource}-{name}-{code}", "stage": stage, "verb": verb,
            "user": {"username": user}, "objectRef": ref, "responseStatus": {"code": code},
            "requestURI": f"/api/v1/{resource}"}


def test_requests_one_per_audit_id_of_the_user_only() -> None:
    events = [
        event("watch", "pods", namespace=None, audit_id="w", stage="ResponseStarted"),
        event("watch", "pods", namespace=None, audit_id="w"),
        event("get", "secrets", user="someone-else"),
        {"auditID": "d", "verb": "get", "user": {"username": USER}, "requestURI": "/apis"},
    ]
    requests = audit.requests_of(events, USER)
    assert [(r.group, r.resource, r.verb, r.namespace) for r in requests] == [("", "pods", "watch", None)]
    assert audit.non_resource_paths(events, USER) == {"/apis"}


def test_an_apply_that_created_the_object_also_counts_as_create() -> None:
    created = audit.requests_of([event("patch", "configmaps", name="a", code=201)], USER)
    assert [r.verb for r in created] == ["patch", "create"]
    assert created[1].derived == audit.CREATED_BY_APPLY
    updated = audit.requests_of([event("patch", "configmaps", name="a", code=200)], USER)
    assert [r.verb for r in updated] == ["patch"]


def test_subresources_and_groups() -> None:
    [request] = audit.requests_of([event("patch", "aitbcnodes", group="aitbc.io", name="n", subresource="status")],
                                  USER)
    assert request.key == ("aitbc.io", "aitbcnodes/status", "patch")


def lease(verb: str, name: str | None, namespace: str = OPS, code: int = 200) -> audit.Request:
    return audit.Request("coordination.k8s.io", "leases", verb, namespace, name, code)


def test_ungranted_respects_resource_names_and_the_roles_namespace() -> None:
    granted = audit.grants(OPS)
    assert audit.ungranted([lease("update", rbac.LEADER_LEASE), lease("create", "anything")], granted) == []
    other_name = lease("update", "someone-elses-lease")
    other_namespace = lease("get", rbac.LEADER_LEASE, namespace="apps")
    listing = lease("list", None)
    assert audit.ungranted([other_name, other_namespace, listing], granted) == [other_name, other_namespace, listing]
    assert audit.ungranted([audit.Request("", "pods", "delete", "apps", "p")], granted)


def test_unused_finds_a_verb_nothing_needed_and_ignores_refused_requests() -> None:
    extra = rbac.Role("extra", "test", (rbac.Rule(("",), ("configmaps",), ("get", "delete"), "a test rule"),))
    granted = audit.grants(OPS, [extra])
    used = [audit.Request("", "configmaps", "get", "apps", "c", 200),
            audit.Request("", "configmaps", "delete", "apps", "c", 403)]
    assert [str(g) for g in audit.unused(granted, used)] == ["extra: delete core/configmaps"]
    assert audit.refused(used) == [used[1]]


def test_blocking_owner_references_imply_finalizer_updates() -> None:
    def child(manager: str, blocking: bool) -> dict[str, Any]:
        ref = {"apiVersion": "aitbc.io/v1alpha1", "kind": "AitbcNode", "name": "n", "blockOwnerDeletion": blocking}
        return {"kind": "ConfigMap", "metadata": {"name": "c", "namespace": "apps", "ownerReferences": [ref],
                                                  "managedFields": [{"manager": manager}]}}

    children = [child("aitbc-operator", True), child("kubectl", True), child("aitbc-operator", False)]
    found = audit.blocking_owner_updates(children, "aitbc-operator", {"AitbcNode": "aitbcnodes"})
    assert [(r.key, r.namespace, r.name) for r in found] == [(("aitbc.io", "aitbcnodes/finalizers", "update"), "apps",
                                                              "n")]


def test_read_events_includes_rotated_files(tmp_path: Path) -> None:
    (tmp_path / "audit-2026-01-01T00-00-00.000.log").write_text(json.dumps(event("get", "pods")) + "\n")
    (tmp_path / "audit.log").write_text(json.dumps(event("list", "pods")) + "\n\n")
    assert [e["verb"] for e in audit.read_events(tmp_path / "audit.log")] == ["get", "list"]


def test_collection_reads_carry_their_label_selector() -> None:
    selected = "/api/v1/secrets?labelSelector=app.kubernetes.io%2Fmanaged-by%3Daitbc-operator&watch=true"
    events = [
        {**event("watch", "secrets", namespace=None, audit_id="w"), "requestURI": selected},
        {**event("list", "pods", audit_id="l"), "requestURI": "/api/v1/namespaces/apps/pods?limit=500"},
        event("get", "secrets", name="postgres-admin"),
        event("list", "configmaps", audit_id="c"),
        event("list", "pods", user="someone-else", audit_id="x"),
    ]
    reads = audit.collection_reads(events, USER, {"secrets", "pods"})
    assert sorted(map(str, reads)) == [
        "list pods in apps selector=''",
        "watch secrets in (all namespaces) selector='app.kubernetes.io/managed-by=aitbc-operator'",
    ]
