"""storage.pvc.autoExpand against the real apiserver, controller-manager (PV binder, the hostPath provisioner) and its
PersistentVolumeClaimResize admission: the AitbcNode reconciled by hand (reconcile_node with the operator's Kube), the
health sidecar's answer passed in (kwok runs no sidecar: the report is the only fake), the RPC probe left out.

The filesystem itself never grows here (no CSI resizer: the claim's capacity stays as provisioned); the test sets the
claim's status.capacity as a resizer would, to let the next expansion go.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from aitbc_operator import errors
from aitbc_operator.k8s.client import Kube
from aitbc_operator.models.chain_reports import ChainHealthReport
from aitbc_operator.node_policy import NodePolicy
from aitbc_operator.reconcilers import node as node_reconciler
from aitbc_operator.reconcilers import node_ops
from aitbc_operator.reconcilers.node import NodeOutcome, reconcile_node
from tests.cluster.fixtures import wait_until
from tests.factories import make_node
from tests.integration.test_node_operator import GROUP, NODE, VERSION, Api, condition

pytestmark = pytest.mark.timeout(120)
PVC = f"{NODE}-data"
GI = 2**30


class Rig:
    """One AitbcNode in the test's namespace, reconciled by hand; ``used`` is what the sidecar reports."""

    def __init__(self, kubeconfig: Path, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
        self.api, self.used = api, 50.0
        self.loop = asyncio.new_event_loop()  # one loop for the rig's life: the Kube's session belongs to it
        self.kube = Kube.connect(str(kubeconfig))

        async def report(pod: Any, spec: Any) -> ChainHealthReport:
            return ChainHealthReport(observed_at=datetime.now(UTC), fs="ext4", volume_bytes=GI,
                                     free_bytes=int(GI * (100 - self.used) / 100))

        async def no_heights(base_url: str, chains: list[str]) -> dict[str, Any]:
            return {}

        monkeypatch.setattr(node_ops, "health_report", report)
        monkeypatch.setattr(node_reconciler, "head_heights", no_heights)

    def reconcile(self, used: float) -> NodeOutcome:
        self.used = used
        body = self.api.node()
        return self.loop.run_until_complete(reconcile_node(
            self.kube, body, operator_image="aitbc-operator:test", now=datetime.now(UTC), policy=NodePolicy(),
            probe_heights=True))

    def close(self) -> None:
        self.loop.run_until_complete(self.kube.aclose())
        self.loop.close()

    def pvc(self) -> client.V1PersistentVolumeClaim:
        return self.api.core.read_namespaced_persistent_volume_claim(PVC, self.api.ns)

    def request(self) -> str:
        return str(self.pvc().spec.resources.requests["storage"])

    def resized(self, capacity: str) -> None:
        """What a CSI resizer and the kubelet would report when the volume has grown."""
        self.api.core.patch_namespaced_persistent_volume_claim_status(
            PVC, self.api.ns, {"status": {"capacity": {"storage": capacity}}})


@pytest.fixture
def api(kube: client.ApiClient, namespace: str) -> Api:
    return Api(kube, namespace)


@pytest.fixture
def rig(kubeconfig: Path, api: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    r = Rig(kubeconfig, api, monkeypatch)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def storage_class(kube: client.ApiClient) -> Iterator[Any]:
    """make(expandable) -> the name of a StorageClass of the hostPath provisioner (deleted afterwards)."""
    storage = client.StorageV1Api(kube)
    made: list[str] = []

    def make(expandable: bool) -> str:
        name = f"expand-{secrets.token_hex(3)}"
        storage.create_storage_class({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": "kubernetes.io/host-path", "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
            "allowVolumeExpansion": expandable,
        })
        made.append(name)
        return name

    yield make
    for name in made:
        storage.delete_storage_class(name)


def create_node(api: Api, storage_class: str, **auto: Any) -> None:
    pvc = {"size": "1Gi", "storageClassName": storage_class, "retainOnDelete": False,
           "autoExpand": {"maxSize": "1536Mi", "increase": "300Mi", "cooldown": "0s", **auto}}
    api.create("aitbcnodes", make_node(NODE, api.ns, storage={"pvc": pvc}))


def wait_bound(rig: Rig) -> None:
    wait_until(lambda: rig.pvc().status.phase == "Bound", 30,
               "the chain volume claim bound by the hostPath provisioner")


def warning(rig: Rig) -> tuple[str | None, str | None]:
    return condition(rig.api.node(), "VolumeExpansionWarning")


def test_an_expandable_class_gets_the_request_raised_and_capped_at_max_size(rig: Rig, storage_class: Any) -> None:
    create_node(rig.api, storage_class(True))
    rig.reconcile(50)  # creates the claim
    wait_bound(rig)
    rig.reconcile(50)
    assert rig.request() == "1Gi"
    assert warning(rig) == ("False", "BelowThreshold")

    expanded = rig.reconcile(85)
    assert rig.request() == "1324Mi"  # 1Gi + 300Mi, written by the routine apply of the claim
    assert "PersistentVolumeClaim/aitbc1-data" in expanded.written
    assert ("VolumeExpanded", "the chain volume is 85.0% full: aitbc1-data expanded from 1Gi to 1324Mi",
            False) in expanded.events
    status = rig.api.node()["status"]["volumeExpansion"]
    assert (status["fromSize"], status["toSize"]) == ("1Gi", "1324Mi")

    # Capacity still 1Gi (nothing resizes here): in progress, no second expansion, and never shrunk back to 1Gi.
    waiting = rig.reconcile(95)
    assert rig.request() == "1324Mi"
    assert not [w for w in waiting.written if w.startswith("PersistentVolumeClaim")]
    assert warning(rig) == ("False", "Resizing")

    rig.resized("1324Mi")
    capped = rig.reconcile(95)
    assert rig.request() == "1536Mi"  # 1324Mi + 300Mi capped at maxSize
    assert any(e[0] == "VolumeExpanded" for e in capped.events)

    rig.resized("1536Mi")
    at_max = rig.reconcile(99)
    assert rig.request() == "1536Mi"
    assert warning(rig) == ("True", "MaxSizeReached")
    assert [e[0] for e in at_max.events if e[2]] == ["MaxSizeReached"]
    assert not [w for w in at_max.written if w.startswith("PersistentVolumeClaim")]
    assert not [e for e in rig.reconcile(99).events if e[0] == "MaxSizeReached"]  # once, not every reconcile


def test_a_class_without_expansion_gets_the_warning_and_no_write(rig: Rig, storage_class: Any) -> None:
    name = storage_class(False)
    create_node(rig.api, name)
    rig.reconcile(50)
    wait_bound(rig)
    version = rig.pvc().metadata.resource_version

    refused = rig.reconcile(95)
    assert warning(rig) == ("True", "StorageClassNotExpandable")
    assert (
        "StorageClassNotExpandable",
        f"StorageClass {name} does not allow volume expansion: autoExpand cannot grow aitbc1-data",
        True,
    ) in refused.events
    assert rig.request() == "1Gi"
    assert rig.pvc().metadata.resource_version == version  # not written at all
    assert "volumeExpansion" not in rig.api.node()["status"]


def test_a_claim_the_node_does_not_own_is_never_patched(rig: Rig, storage_class: Any) -> None:
    name = storage_class(True)
    rig.api.core.create_namespaced_persistent_volume_claim(rig.api.ns, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": PVC},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": name,
                 "resources": {"requests": {"storage": "1Gi"}}},
    })
    wait_bound(rig)
    version = rig.pvc().metadata.resource_version
    create_node(rig.api, name)

    with pytest.raises(errors.NameConflict, match="PersistentVolumeClaim aitbc1-data already exists"):
        rig.reconcile(99)
    pvc = rig.pvc()
    assert pvc.spec.resources.requests["storage"] == "1Gi"
    assert pvc.metadata.resource_version == version
    assert not any(f.manager == "aitbc-operator" for f in pvc.metadata.managed_fields or [])
    node = rig.api.custom.get_namespaced_custom_object(GROUP, VERSION, rig.api.ns, "aitbcnodes", NODE)
    assert condition(node, "Degraded") == ("True", "NameConflict")
    assert "volumeExpansion" not in node["status"]
