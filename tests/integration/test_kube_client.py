"""The Kubernetes API client's own threads (k8s/client.py) against the real apiserver: its calls run only there, at
most as many at once as configured, never on asyncio's default executor; once fenced, nothing is sent."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from aitbc_operator import errors
from aitbc_operator.k8s import resources as r
from aitbc_operator.k8s.client import Kube, load_api_client


class ThreadRecordingKube(Kube):
    """Records the thread of every request and the most requests seen in flight at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.threads: set[str] = set()
        self.in_flight = self.most_in_flight = 0
        self._guard = threading.Lock()

    def request_sync(self, method: str, path: str, **kwargs: Any) -> Any:
        with self._guard:
            self.threads.add(threading.current_thread().name)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return super().request_sync(method, path, **kwargs)
        finally:
            with self._guard:
                self.in_flight -= 1


def test_calls_run_on_the_clients_own_threads_only(kubeconfig: Path, namespace: str) -> None:
    kube = ThreadRecordingKube(load_api_client(str(kubeconfig), connections=3), threads=3)

    async def main() -> list[Any]:
        default_threads: set[str] = set()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: default_threads.add(threading.current_thread().name))
        found = await asyncio.gather(*(kube.list(r.SECRET, namespace) for _ in range(24)))
        assert not kube.threads & default_threads
        return found

    try:
        found = asyncio.run(main())
    finally:
        kube.close()
    assert all(items == [] for items in found)
    assert kube.calls["GET"] == 24
    assert kube.threads
    assert all(name.startswith("kube-api") for name in kube.threads), kube.threads
    assert kube.most_in_flight <= 3


def test_a_fenced_client_sends_nothing(kubeconfig: Path, namespace: str) -> None:
    kube = Kube(load_api_client(str(kubeconfig)), threads=1)
    try:
        assert asyncio.run(kube.get(r.SECRET, namespace, "absent")) is None
        kube.fence("leadership lost (test)")
        with pytest.raises(errors.Stopped, match="not sent, leadership lost"):
            asyncio.run(kube.get(r.SECRET, namespace, "absent"))
    finally:
        kube.close()
    assert kube.calls["GET"] == 1
