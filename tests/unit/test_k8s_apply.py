"""apply_if_changed: no write when nothing would change; a write for changed, hand-edited or removed fields."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import kopf
import pytest
from aiohttp import web

from aitbc_operator import errors
from aitbc_operator.k8s.client import ANNOTATION_APPLIED, Kube, read_verb, resource_of, with_fingerprint
from aitbc_operator.k8s.resources import SECRET


class RecordingKube(Kube):
    """A Kube whose server-side apply only records the manifest (the comparison logic is what is tested)."""

    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []

    async def apply(self, obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        self.applied.append(obj)
        return obj


OWNER_REF = {"apiVersion": "aitbc.io/v1alpha1", "kind": "AitbcNode", "name": "o", "uid": "u0", "controller": True}


def cm(**data: str) -> dict[str, Any]:
    meta = {"name": "c", "namespace": "n", "ownerReferences": [OWNER_REF]}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def live_after_apply(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the apiserver returns after applying `manifest`: it, plus fields it adds itself."""
    live = copy.deepcopy(with_fingerprint(manifest))
    live["metadata"].update({"uid": "u1", "resourceVersion": "7"})
    return live


def run(kube: RecordingKube, desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    _, written = asyncio.run(kube.apply_if_changed(desired, live))
    return written


def test_creates_when_missing_and_stamps_the_digest() -> None:
    kube = RecordingKube()
    assert run(kube, cm(A="1"), None)
    assert ANNOTATION_APPLIED in kube.applied[0]["metadata"]["annotations"]


def test_no_write_when_unchanged() -> None:
    kube = RecordingKube()
    assert not run(kube, cm(A="1"), live_after_apply(cm(A="1")))
    assert kube.applied == []


def test_changed_value_is_written() -> None:
    assert run(RecordingKube(), cm(A="2"), live_after_apply(cm(A="1")))


def test_removed_field_is_written() -> None:
    # Desired is a subset of live, but the manifest changed: server-side apply must run to remove B.
    assert run(RecordingKube(), cm(A="1"), live_after_apply(cm(A="1", B="2")))


def test_hand_edit_of_an_owned_field_is_reverted() -> None:
    live = live_after_apply(cm(A="1"))
    live["data"]["A"] = "edited"
    assert run(RecordingKube(), cm(A="1"), live)


def test_object_applied_before_digests_existed_is_written_once() -> None:
    live = copy.deepcopy(cm(A="1"))
    assert run(RecordingKube(), cm(A="1"), live)


def test_status_patch_removes_nested_keys_explicitly() -> None:
    """A merge patch keeps keys it does not mention: one removed from a nested object gets an explicit null."""
    from aitbc_operator.k8s.client import _nulls_for_removed

    current = {"backup": {"running": {"job": "j"}, "chains": [1]}, "volume": {"fs": "btrfs"}}
    desired = {"backup": {"chains": [2]}}
    assert _nulls_for_removed(current, desired) == {"backup": {"chains": [2], "running": None}, "volume": None}


def test_request_paths_name_their_resource_and_whether_they_list() -> None:
    cases = {
        "/api/v1/namespaces/ns/secrets/db": ("secrets", "GET"),
        "/api/v1/namespaces/ns/secrets?labelSelector=a%3Db": ("secrets", "LIST"),
        "/apis/aitbc.io/v1alpha1/aitbcdatabases": ("aitbcdatabases", "LIST"),
        "/apis/aitbc.io/v1alpha1/namespaces/ns/aitbcnodes/n1/status": ("aitbcnodes/status", "GET"),
    }
    assert {path: (resource_of(path), read_verb(path)) for path in cases} == cases


def test_a_watch_reads_events_of_any_length_and_a_410_is_expired() -> None:
    """Kube.watch against a local HTTP server: an event split across chunks and one over aiohttp's 128 KiB line limit
    arrive whole; the server's ERROR event with code 410 ends the stream as errors.Expired."""
    big = {"metadata": {"name": "big", "uid": "u2", "annotations": {"x": "y" * 200_000}}}

    async def stream(request: web.Request) -> web.StreamResponse:
        assert request.query["resourceVersion"] == "7"
        response = web.StreamResponse()
        await response.prepare(request)
        first = json.dumps({"type": "ADDED", "object": {"metadata": {"name": "a", "uid": "u1"}}}).encode()
        await response.write(first[:10])
        await response.write(first[10:] + b"\n")
        await response.write(json.dumps({"type": "MODIFIED", "object": big}).encode() + b"\n")
        await response.write(json.dumps({"type": "ERROR", "object": {"code": 410, "message": "too old"}}).encode())
        return response

    async def main() -> list[tuple[str, str]]:
        app = web.Application()
        app.router.add_get("/api/v1/secrets", stream)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        kube = Kube(lambda: kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}"))
        seen: list[tuple[str, str]] = []

        async def follow() -> None:
            async for kind, obj in kube.watch(SECRET, "7", seconds=5):
                seen.append((kind, obj["metadata"]["name"]))

        try:
            with pytest.raises(errors.Expired, match="too old"):
                await follow()
        finally:
            await kube.aclose()
            await runner.cleanup()
        return seen

    assert asyncio.run(main()) == [("ADDED", "a"), ("MODIFIED", "big")]
