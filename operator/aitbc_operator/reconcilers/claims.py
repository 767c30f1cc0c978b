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
from .database_policy import Claim, claim_of

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
        self._snapshot: tuple[Claim, ...] | None = None
        self._live = False  # the claims are those of the watch's stream, up to its last event
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def including(self, uid: str) -> tuple[Claim, ...]:
        """Every claim, as of a moment after the resource ``uid`` was created."""
        if not self._follow:
            return await self.fresh()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="aitbc claims watch")
        if not (self._live and uid in self._claims):
            await self._await(uid)
        if self._live and uid in self._claims:
            return self._current()
        return await self.fresh()  # the watch is down, or the resource is gone: a LIST of our own

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

    def _current(self) -> tuple[Claim, ...]:
        if self._snapshot is None:
            self._snapshot = tuple(c for c in self._claims.values() if c is not None)
        return self._snapshot

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
        self._claims = {_uid(o): claim_of(o) for o in objects}
        self._snapshot, self._live = None, True
        for uid in [u for u in self._waiters if u in self._claims]:
            self._wake(uid)
        return version

    def _apply(self, kind: str, obj: Mapping[str, Any]) -> None:
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return  # BOOKMARK: only its resourceVersion counts
        uid = _uid(obj)
        if kind == "DELETED":
            self._claims.pop(uid, None)
        else:
            self._claims[uid] = claim_of(obj)
        self._snapshot = None
        self._wake(uid)

    def _wake(self, uid: str) -> None:
        for waiter in self._waiters.pop(uid, []):
            if not waiter.done():
                waiter.set_result(None)


def _uid(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def _claims_of(objects: list[dict[str, Any]]) -> tuple[Claim, ...]:
    return tuple(c for c in (claim_of(o) for o in objects) if c is not None)
