"""The operator's own Kubernetes API client (k8s/client.py) against the real apiserver: asynchronous on aiohttp in the
caller's event loop (no thread is started), at most as many requests in flight as configured, errors converted, fresh
credentials read once after a 401, and once fenced, nothing is sent."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from pathlib import Path
from typing import Any

import kopf
import pytest

from aitbc_operator import errors
from aitbc_operator.k8s import auth
from aitbc_operator.k8s import resources as r
from aitbc_operator.k8s.client import Kube


class InFlightKube(Kube):
    """Records the most requests seen in flight at once (between sending and the answer)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_flight = self.most_in_flight = 0

    async def _send(self, *args: Any, **kwargs: Any) -> Any:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await super()._send(*args, **kwargs)
        finally:
            self.in_flight -= 1


def test_requests_run_in_the_event_loop_with_at_most_the_configured_number_in_flight(
    kubeconfig: Path, namespace: str
) -> None:
    kube = InFlightKube.connect(str(kubeconfig), connections=3)
    threads_before = {t.ident for t in threading.enumerate()}

    async def main() -> list[Any]:
        try:
            return await asyncio.gather(*(kube.list(r.SECRET, namespace) for _ in range(24)))
        finally:
            await kube.aclose()

    found = asyncio.run(main())
    assert all(items == [] for items in found)
    assert kube.calls["GET"] == 24
    assert 1 < kube.most_in_flight <= 3
    assert {t.ident for t in threading.enumerate()} <= threads_before  # no thread of its own, none left behind


def test_errors_are_the_operators(kubeconfig: Path, namespace: str) -> None:
    kube = Kube.connect(str(kubeconfig))

    async def main() -> None:
        try:
            assert await kube.get(r.SECRET, namespace, "absent") is None
            with pytest.raises(errors.Invalid, match=r"PATCH .*secrets/Bad_Name: .*Invalid value.*\(HTTP 422\)"):
                await kube.apply({"apiVersion": "v1", "kind": "Secret",
                                  "metadata": {"name": "Bad_Name", "namespace": namespace}})
        finally:
            await kube.aclose()

    asyncio.run(main())


def test_a_401_reads_the_credentials_again_once(kubeconfig: Path, namespace: str) -> None:
    """As after a rotation of the ServiceAccount token: the first credentials are refused, the next read has good
    ones and the request succeeds; credentials that do not change are not tried twice."""
    good = auth.from_kubeconfig(str(kubeconfig))
    stale = dataclasses.replace(good, token="expired-token")
    logins: list[kopf.ConnectionInfo] = []

    def rotating() -> kopf.ConnectionInfo:
        logins.append(stale if not logins else good)
        return logins[-1]

    kube, refused = Kube(rotating), Kube(lambda: stale)

    async def main() -> None:
        try:
            assert await kube.list(r.SECRET, namespace) == []
            with pytest.raises(errors.ApiUnavailable, match=r"HTTP 401"):
                await refused.list(r.SECRET, namespace)
        finally:
            await kube.aclose()
            await refused.aclose()

    asyncio.run(main())
    assert logins == [stale, good]


def test_a_fenced_client_sends_nothing(kubeconfig: Path, namespace: str) -> None:
    kube = Kube.connect(str(kubeconfig), connections=1)

    async def main() -> None:
        try:
            assert await kube.get(r.SECRET, namespace, "absent") is None
            kube.fence("leadership lost (test)")
            with pytest.raises(errors.Stopped, match="not sent, leadership lost"):
                await kube.get(r.SECRET, namespace, "absent")
        finally:
            await kube.aclose()

    asyncio.run(main())
    assert kube.calls["GET"] == 1


def test_current_takes_a_delivered_body_only_if_it_holds_the_clients_last_write(kubeconfig: Path,
                                                                                 namespace: str) -> None:
    """Read-your-writes without a GET: a body as old as the client's last write or read is used as is; an older one
    (or any while a failed write left the outcome unknown) is read again; a client that never touched the object
    takes the body."""
    kube, other = Kube.connect(str(kubeconfig), track=(r.SECRET,)), Kube.connect(str(kubeconfig), track=(r.SECRET,))
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rw", "namespace": namespace}}

    async def main() -> None:
        try:
            first = await kube.apply(manifest)
            written = await kube.merge_patch(r.SECRET, namespace, "rw", {"metadata": {"annotations": {"a": "1"}}})
            gets = kube.calls["GET"]
            assert await kube.current(r.SECRET, written) == written
            assert kube.calls["GET"] == gets  # the body holds the last write: no GET
            fresh = await kube.current(r.SECRET, first)  # older than the last write: read again
            assert kube.calls["GET"] == gets + 1
            assert fresh is not None
            assert fresh["metadata"]["annotations"]["a"] == "1"
            with pytest.raises(errors.OperatorError):
                await kube.merge_patch(r.SECRET, namespace, "rw", {"metadata": {"name": "renamed"}})
            assert await kube.current(r.SECRET, written) == fresh  # a failed write: not trusted, read again
            assert kube.calls["GET"] == gets + 2
            assert await other.current(r.SECRET, first) == first  # never read nor written by that client
            assert other.calls["GET"] == 0
        finally:
            await kube.aclose()
            await other.aclose()

    asyncio.run(main())


def test_a_watch_from_a_lists_version_delivers_the_later_changes_in_order(kubeconfig: Path, namespace: str) -> None:
    """list_versioned + watch: what the claims book (reconcilers/claims.py) follows."""
    kube = Kube.connect(str(kubeconfig), connections=1)
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "watched", "namespace": namespace}}

    async def changes(since: str) -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        async for kind, obj in kube.watch(r.SECRET, since, seconds=10):
            meta = obj.get("metadata") or {}
            if meta.get("namespace") == namespace:
                seen.append((kind, meta["name"]))
            if kind == "DELETED" and meta.get("name") == "watched":
                return seen
        return seen

    async def main() -> list[tuple[str, str]]:
        try:
            items, version = await kube.list_versioned(r.SECRET, namespace)
            assert items == []
            assert version
            watching = asyncio.ensure_future(changes(version))
            await kube.apply(manifest)
            await kube.merge_patch(r.SECRET, namespace, "watched", {"metadata": {"labels": {"a": "1"}}})
            await kube.request("DELETE", r.SECRET.path(namespace, "watched"))
            return await asyncio.wait_for(watching, 30)
        finally:
            await kube.aclose()

    assert asyncio.run(main()) == [("ADDED", "watched"), ("MODIFIED", "watched"), ("DELETED", "watched")]
