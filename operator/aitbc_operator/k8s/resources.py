"""The kinds the operator reads and writes, and their REST paths (no discovery needed)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import GROUP, VERSION


@dataclass(frozen=True)
class Kind:
    """A namespaced API resource."""

    api_version: str
    kind: str
    plural: str

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        """REST path of the collection, an object, or an object's subresource."""
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        path = f"{prefix}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            path += f"/{name}"
            if subresource:
                path += f"/{subresource}"
        return path

    def cluster_path(self) -> str:
        """REST path of the collection across all namespaces."""
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        return f"{prefix}/{self.plural}"


CONFIGMAP = Kind("v1", "ConfigMap", "configmaps")
SECRET = Kind("v1", "Secret", "secrets")
SERVICE = Kind("v1", "Service", "services")
PVC = Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims")
POD = Kind("v1", "Pod", "pods")
EVENT = Kind("v1", "Event", "events")
STATEFULSET = Kind("apps/v1", "StatefulSet", "statefulsets")
DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments")
JOB = Kind("batch/v1", "Job", "jobs")
AITBC_DATABASE = Kind(f"{GROUP}/{VERSION}", "AitbcDatabase", "aitbcdatabases")
AITBC_NODE = Kind(f"{GROUP}/{VERSION}", "AitbcNode", "aitbcnodes")

BY_KIND = {k.kind: k for k in (CONFIGMAP, SECRET, SERVICE, PVC, POD, EVENT, STATEFULSET, DEPLOYMENT, JOB,
                               AITBC_DATABASE, AITBC_NODE)}


def kind_of(obj: dict[str, object]) -> Kind:
    """The Kind of a manifest dict."""
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in BY_KIND:
        raise ValueError(f"unsupported kind {kind!r}")
    return BY_KIND[kind]
