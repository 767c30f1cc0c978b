"""Reads of the Secrets many AitbcDatabases name - a server's admin Secret and CA - shared for a moment.

Two hundred resources of one server name one admin Secret; created at once (and so drift-checked at about the same
time) each reconcile read it again: one GET per reconcile, the same answer every time. A ``SecretReads`` shares one
read among the reconciles of ``max_age`` seconds (single flight: concurrent callers wait for the GET in flight). A
changed admin Secret is seen at most ``max_age`` seconds late - nothing watches it anyway (it is the user's Secret,
read by name), so a change is noticed by the next reconcile, usually a drift check minutes later. Only for Secrets
the operator never writes (its own connection Secrets need read-your-writes and are read by the reconcile).
Long-lived: one per operator (kopf memo); a failed read is not kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..k8s.client import Kube

#: Seconds one read answers for.
DEFAULT_MAX_AGE = 2.0
Data = dict[str, str] | None


class SecretReads:
    """Shared, single-flight reads of Secrets' data by namespace and name (see the module docstring)."""

    def __init__(self, kube: Kube, *, max_age: float = DEFAULT_MAX_AGE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._kube = kube
        self._max_age = max_age
        self._clock = clock
        self._reads: dict[tuple[str, str], tuple[float, asyncio.Future[Data]]] = {}

    async def read(self, namespace: str, name: str) -> Data:
        """The Secret's decoded data (None: absent), from a read started at most ``max_age`` seconds ago."""
        now = self._clock()
        key = (namespace, name)
        entry = self._reads.get(key)
        if entry is None or now - entry[0] > self._max_age or (entry[1].done() and entry[1].exception()):
            self._expire(now)
            entry = self._reads[key] = (now, asyncio.ensure_future(self._kube.read_secret(namespace, name)))
        return await asyncio.shield(entry[1])

    def _expire(self, now: float) -> None:
        """Forget the reads that answer for nobody any more (finished and too old)."""
        for key, (started, future) in list(self._reads.items()):
            if future.done() and now - started > self._max_age:
                del self._reads[key]
