"""reconcile_node paths the apiserver can no longer produce: a spec stored before the CRD refused operator-owned env
names (or under an older CRD, which Helm never upgrades) still reconciles, and says once which entries it ignores.

Against an in-memory Kube (objects by kind and name, server-side apply stores the manifest); the rest of the node
reconciler runs end to end in tests/integration/test_node_operator.py.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aitbc_operator.k8s.client import Kube
from aitbc_operator.k8s.resources import Kind
from aitbc_operator.node_policy import NodePolicy
from aitbc_operator.reconcilers.node import REASON_RESERVED_ENV, NodeOutcome, reconcile_node, reserved_env_message
from tests.factories import make_node

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class MemoryKube(Kube):
    """Objects in a dict; every write is kept, status patches replace the status."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.statuses: list[dict[str, Any]] = []

    async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((kind.kind, name))
        return copy.deepcopy(found) if found is not None else None

    async def list(self, kind: Kind, namespace: str | None = None, *, label_selector: str | None = None,
                   field_selector: str | None = None) -> list[dict[str, Any]]:
        return []

    async def apply(self, obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        self.objects[(obj["kind"], obj["metadata"]["name"])] = copy.deepcopy(obj)
        return obj

    async def patch_status(self, kind: Kind, obj: Mapping[str, Any], status: dict[str, Any]) -> bool:
        self.statuses.append(status)
        return True


def reconcile(kube: MemoryKube, body: dict[str, Any]) -> NodeOutcome:
    return asyncio.run(reconcile_node(kube, body, operator_image="img", now=NOW, policy=NodePolicy()))


def test_operator_owned_env_names_in_a_stored_spec_are_ignored_with_one_warning_per_generation() -> None:
    body = make_node("aitbc1", "chain", node={"env": [{"name": "DATA_DIR", "value": "/elsewhere"},
                                                      {"name": "KEEP", "value": "1"}]},
                     rpc={"env": [{"name": "CHAIN_DB_URL_AIT_MAINNET", "value": "sqlite:////tmp/x.db"}]})
    body["metadata"].update(uid="u-1", generation=4)
    kube = MemoryKube()

    first = reconcile(kube, body)
    message = reserved_env_message(["CHAIN_DB_URL_AIT_MAINNET", "DATA_DIR"])
    assert (REASON_RESERVED_ENV, message, True) in first.events
    assert message.startswith("env CHAIN_DB_URL_AIT_MAINNET, DATA_DIR ignored: the operator sets these itself")
    node = kube.objects[("StatefulSet", "aitbc1-node")]["spec"]["template"]["spec"]["containers"][0]
    assert [e["name"] for e in node["env"]] == ["KEEP"]  # the operator's DATA_DIR (envFrom) wins

    body["status"] = kube.statuses[-1]  # observedGeneration 4 now: the next reconciles of generation 4 stay quiet
    assert not [e for e in reconcile(kube, body).events if e[0] == REASON_RESERVED_ENV]
    body["metadata"]["generation"] = 5  # a new generation (still with the entries) warns again
    assert [e for e in reconcile(kube, body).events if e[0] == REASON_RESERVED_ENV]


def test_a_spec_without_operator_owned_names_posts_no_warning() -> None:
    body = make_node("aitbc1", "chain", node={"env": [{"name": "KEEP", "value": "1"}]})
    body["metadata"].update(uid="u-1", generation=1)
    assert not [e for e in reconcile(MemoryKube(), body).events if e[0] == REASON_RESERVED_ENV]
