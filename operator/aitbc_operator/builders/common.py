"""Metadata shared by every child object: names, labels, owner references, and what must not be copied."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import API_VERSION

MANAGED_BY = "aitbc-operator"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
#: Our own owner label: survives GitOps tools that rewrite app.kubernetes.io/instance.
LABEL_OWNER = "aitbc.io/owner"

#: Prefixes of labels/annotations that belong to a framework or GitOps tool and must never be copied to children.
STRIPPED_PREFIXES = (
    "kopf.zalando.org/",
    "kubectl.kubernetes.io/",
    "argocd.argoproj.io/",
    "aitbc.io/last-handled-configuration",
    "fluxcd.io/",
    "kustomize.toolkit.fluxcd.io/",
    "helm.toolkit.fluxcd.io/",
)
STRIPPED_KEYS = ("app.kubernetes.io/instance", "deployment.kubernetes.io/revision")


def strip_framework_metadata(values: Mapping[str, str] | None) -> dict[str, str]:
    """Labels or annotations without framework and GitOps tracking keys."""
    return {
        k: v
        for k, v in (values or {}).items()
        if k not in STRIPPED_KEYS and not any(k.startswith(p) for p in STRIPPED_PREFIXES)
    }


def owner_reference(owner: Mapping[str, Any], *, controller: bool = True) -> dict[str, Any]:
    """An ownerReference to a custom resource (its `kind`, `metadata.name` and `metadata.uid`)."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", API_VERSION),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def selector_labels(owner_name: str, component: str) -> dict[str, str]:
    """The immutable labels a workload selects its pods by."""
    return {LABEL_NAME: "aitbc", LABEL_OWNER: owner_name, LABEL_COMPONENT: component}


def child_metadata(
    owner: Mapping[str, Any],
    name: str,
    component: str,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    owned: bool = True,
) -> dict[str, Any]:
    """metadata for a child object: explicit name and namespace, standard labels, owner reference.

    Always sets `name` (kopf.adopt would otherwise set generateName), never copies framework metadata.
    """
    meta = owner["metadata"]
    all_labels = {
        **strip_framework_metadata(labels),
        **selector_labels(meta["name"], component),
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: "aitbc",
    }
    out: dict[str, Any] = {"name": name, "namespace": meta["namespace"], "labels": all_labels}
    cleaned = strip_framework_metadata(annotations)
    if cleaned:
        out["annotations"] = cleaned
    if owned:
        out["ownerReferences"] = [owner_reference(owner)]
    return out
