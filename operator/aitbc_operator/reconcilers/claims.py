"""Who claims which database and role on which server: every AitbcDatabase of the cluster, followed by one watch.

A first reconcile must see every AitbcDatabase created before it (the older one wins a name, see
``database_policy.conflicting_owner``). A LIST of all of them per new resource costs O(N) per resource; shared LISTs
(the previous design) still parsed and validated all N objects for every few creations, so the operator's CPU per
creation doubled from 200 to 2,000 resources. A following ``ClaimBook`` instead keeps the claims of one cluster-wide
LIST up to date with a watch from that LIST's resourceVersion, and answers for a resource once it *holds that
resource*:

- a watch delivers the changes in the order they were made, so a book that has applied the resource's creation has
  applied every change before it: every older resource, its latest spec, every deletion - the guarantee a LIST
  started after the creation gives, with deleted claims gone at once instead of up to a few seconds late;
- while the watch is down (and before its first LIST), callers wait ``wait`` seconds for it, then LIST on their own.

A question gets only the claims that share a database or role name with its resource (an index by name), so
answering it costs the same with 20 or 20,000 resources; ``conflicting_owner`` decides among those few.

The book starts following at the first question (a restarted operator's resumes ask none: they have a status), and
lists again when the watch's version expired (410) or the stream broke. Deletion (``users_blocking_drop``) always
lists afresh (``fresh()``). Long-lived: one per operator (kopf memo), stopped at cleanup.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from .. import errors
from ..k8s import resources as r
from ..k8s.client import Kube
from .database_policy import Claim, claim_of, claimed_names

log = logging.getLogger(__name__)

#: Seconds a question waits for the watch to hold its resource before listing on its own.
DEFAULT_WAIT = 5.0
#: Seconds one watch request lasts (the server ends it; the next continues from the last version seen).
WATCH_SECONDS = 300
#: Seconds between attempts while the apiserver cannot be listed or watched.
RETRY_SECONDS = 2.0


class ClaimBook:
    """The claims of every AitbcDatabase (see the module docstring). ``follow=False``: every question LISTs."""

    def __init__(self, kube: Kube, *, follow: bool = False, wait: float = DEFAULT_WAIT,
                 watch_seconds: int = WATCH_SECONDS, retry: float = RETRY_SECONDS) -> None:
        self._kube = kube
        self._follow = follow
        self._wait = wait
        self._watch_seconds = watch_seconds
        self._retry = retry
        self._claims: dict[str, Claim | None] = {}  # by uid; None: an invalid spec, which claims nothing
        self._by_name: dict[str, set[str]] = {}  # claimed_names -> the uids claiming it
        self._live = False  # the claims are those of the watch's stream, up to its last event
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def overlapping(self, me: Claim) -> tuple[Claim, ...]:
        """Every claim sharing a database or role name with ``me``, as of a moment after its resource was created."""
        names = claimed_names(me)
        if not self._follow:
            return _sharing(await self.fresh(), names)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="aitbc claims watch")
        if not (self._live and me.uid in self._claims):
            await self._await(me.uid)
        if self._live and me.uid in self._claims:
            uids = set().union(*(self._by_name.get(name, ()) for name in names))
            return tuple(c for c in (self._claims[u] for u in sorted(uids)) if c is not None)
        return _sharing(await self.fresh(), names)  # the watch is down, or the resource is gone: a LIST of our own

    async def fresh(self) -> tuple[Claim, ...]:
        """Every claim, from a LIST started now."""
        return _claims_of(await self._kube.list(r.AITBC_DATABASE))

    async def stop(self) -> None:
        """Stop following (operator cleanup)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._live = False

    # --- the watch ----------------------------------------------------------------------------------------------------

    async def _await(self, uid: str) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(uid, []).append(waiter)
        try:
            await asyncio.wait_for(waiter, self._wait)
        except TimeoutError:
            pass
        finally:
            waiting = self._waiters.get(uid, [])
            if waiter in waiting:
                waiting.remove(waiter)
            if not waiting:
                self._waiters.pop(uid, None)

    async def _run(self) -> None:
        since: str | None = None
        while True:
            try:
                if since is None:
                    since = await self._relist()
                async for kind, obj in self._kube.watch(r.AITBC_DATABASE, since, seconds=self._watch_seconds):
                    since = str((obj.get("metadata") or {}).get("resourceVersion") or since)
                    self._apply(kind, obj)
            except errors.Stopped:
                self._live = False
                return
            except Exception as exc:
                self._live, since = False, None
                if not isinstance(exc, errors.Expired):
                    log.info("claims watch: %s; listing again in %g s", exc, self._retry)
                    await asyncio.sleep(self._retry)

    async def _relist(self) -> str:
        objects, version = await self._kube.list_versioned(r.AITBC_DATABASE)
        self._claims, self._by_name = {}, {}
        for obj in objects:
            self._set(_uid(obj), claim_of(obj))
        self._live = True
        for uid in [u for u in self._waiters if u in self._claims]:
            self._wake(uid)
        return version

    def _apply(self, kind: str, obj: Mapping[str, Any]) -> None:
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return  # BOOKMARK: only its resourceVersion counts
        uid = _uid(obj)
        if kind == "DELETED":
            self._drop(uid)
        else:
            self._set(uid, claim_of(obj))
        self._wake(uid)

    def _set(self, uid: str, claim: Claim | None) -> None:
        """Record ``uid``'s claim (None: it claims nothing), in the index too."""
        self._drop(uid)
        self._claims[uid] = claim
        for name in claimed_names(claim) if claim is not None else ():
            self._by_name.setdefault(name, set()).add(uid)

    def _drop(self, uid: str) -> None:
        """Forget ``uid``'s claim and its entries in the index."""
        old = self._claims.pop(uid, None)
        for name in claimed_names(old) if old is not None else ():
            holders = self._by_name[name]
            holders.discard(uid)
            if not holders:
                del self._by_name[name]

    def _wake(self, uid: str) -> None:
        for waiter in self._waiters.pop(uid, []):
            if not waiter.done():
                waiter.set_result(None)


def _uid(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def _claims_of(objects: list[dict[str, Any]]) -> tuple[Claim, ...]:
    return tuple(c for c in (claim_of(o) for o in objects) if c is not None)


def _sharing(claims: tuple[Claim, ...], names: frozenset[str]) -> tuple[Claim, ...]:
    return tuple(c for c in claims if claimed_names(c) & names)
