"""Who claims which database and role on which server: cluster-wide LISTs of AitbcDatabases, shared.

A first reconcile must see every AitbcDatabase created before it (the older one wins a name, see
``database_policy.conflicting_owner``). Listing all of them for every new resource costs O(N) per resource, O(N^2)
when N are applied at once: with N=200 that is 40 000 objects serialized by the apiserver and parsed here, and it
showed in the benchmark. A ``ClaimBook`` shares the LISTs instead:

- a snapshot answers for a resource only if it *contains that resource* (so the LIST ran after the resource was
  created, hence after every older one was: the same guarantee as a LIST of its own) and is younger than ``max_age``
  (so a claim of a resource deleted since, which would block a name, does not outlive a few seconds);
- concurrent callers wait for the LIST already in flight instead of starting their own (single flight); one that
  started too early for a caller is followed by at most one more.

Deletion (``users_blocking_drop``) always lists afresh (``fresh()``): there a stale view could drop a database still
in use. Long-lived: one per operator (kopf memo).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..k8s import resources as r
from ..k8s.client import Kube
from .database_policy import Claim, claim_of

#: Seconds a shared snapshot may answer for (see the module docstring).
DEFAULT_MAX_AGE = 5.0


@dataclass(frozen=True)
class Snapshot:
    """The claims of one cluster-wide LIST, and when it started (monotonic clock)."""

    started: float
    claims: tuple[Claim, ...]
    uids: frozenset[str]


class ClaimBook:
    """Shared, single-flight cluster-wide LISTs of AitbcDatabase claims (see the module docstring)."""

    def __init__(self, kube: Kube, *, max_age: float = DEFAULT_MAX_AGE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._kube = kube
        self._max_age = max_age
        self._clock = clock
        self._latest: Snapshot | None = None
        self._inflight: asyncio.Future[Snapshot] | None = None

    async def including(self, uid: str) -> tuple[Claim, ...]:
        """Every claim, from a LIST that ran after the resource ``uid`` was created and at most max_age ago."""
        snapshot = self._latest
        if snapshot is not None and uid in snapshot.uids and self._clock() - snapshot.started <= self._max_age:
            return snapshot.claims
        # The LIST in flight may have started before this resource existed; the one after it cannot have (only one
        # is in flight at a time, and the first ended after this call began).
        snapshot = await self._shared()
        if uid not in snapshot.uids:
            snapshot = await self._shared()  # if still not listed, it has been deleted meanwhile
        return snapshot.claims

    async def fresh(self) -> tuple[Claim, ...]:
        """Every claim, from a LIST started now (never shared with an earlier one)."""
        return (await self._list()).claims

    async def _shared(self) -> Snapshot:
        """The result of the LIST in flight, or of a new one when none is."""
        inflight = self._inflight
        if inflight is None or inflight.done():
            inflight = self._inflight = asyncio.ensure_future(self._list())
            inflight.add_done_callback(self._forget)
        return await asyncio.shield(inflight)

    def _forget(self, done: asyncio.Future[Snapshot]) -> None:
        if self._inflight is done:
            self._inflight = None
        if not done.cancelled() and done.exception() is None:
            snapshot = done.result()
            if self._latest is None or snapshot.started > self._latest.started:
                self._latest = snapshot

    async def _list(self) -> Snapshot:
        started = self._clock()
        objects = await self._kube.list(r.AITBC_DATABASE)
        claims = tuple(c for c in (claim_of(o) for o in objects) if c is not None)
        uids = frozenset(str(o.get("metadata", {}).get("uid", "")) for o in objects)
        return Snapshot(started, claims, uids)
