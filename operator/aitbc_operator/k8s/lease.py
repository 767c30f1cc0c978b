"""A Lease-based leader lock (coordination.k8s.io/v1) with client-go's semantics, so that of several replicas only one
reconciles.

- A candidate never compares the holder's ``renewTime`` with its own clock (clocks of two machines differ). It records
  when it last saw the lease record change (*observed time*, on its monotonic clock) and takes the lease over only
  after the record's ``leaseDurationSeconds`` passed without a change, or at once when nobody holds it.
- The leader renews every ``retry_period``; each request times out after ``request_timeout`` and never runs past the
  renew deadline (no retries inside a request). When no renewal succeeded within ``renew_deadline`` of the start of
  the last successful one, or the lease shows another holder, it has lost: ``on_lost`` runs at once, from the
  election's thread. Since a candidate's
  observed time is later than the start of that renewal, it waits at least ``lease_duration - renew_deadline`` longer
  than the old leader acted.
- Writes use optimistic concurrency (the resourceVersion read), so two replicas never both succeed in taking it.
- A replica that stops gracefully releases the lease (empty holder), and a candidate takes it at its next try.

``renewTime`` and ``acquireTime`` are written (from the wall clock, :func:`wall_clock`) for people and tools reading the
Lease; no decision uses them.

The election runs on a thread and event loop of its own (:class:`Election`), with its own `Kube` (one connection): a
renewal never waits for kopf's event loop, however busy, nor behind the handlers' requests.

Own code rather than the official client's ``kubernetes.leaderelection``: its requests have no timeout (a renewal
against a stalled apiserver blocks for ever, so its renew deadline never fires), it waits in ``time.sleep`` (a standby
cannot be stopped), never releases the lease on stop and measures observed time on the wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import errors
from ..settings import LeaseTimings
from .client import Kube

log = logging.getLogger(__name__)


def wall_clock() -> datetime:
    """The time written into renewTime/acquireTime (informational only)."""
    return datetime.now(UTC)


def _fmt(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Record:
    """What a candidate compares to notice a change: the lease record as the holder last wrote it."""

    holder: str
    duration: int
    acquired: str | None
    renewed: str | None
    transitions: int

    @classmethod
    def of(cls, lease: dict[str, Any]) -> Record:
        """The record of a Lease object."""
        spec = lease.get("spec") or {}
        return cls(spec.get("holderIdentity") or "", int(spec.get("leaseDurationSeconds") or 0),
                   spec.get("acquireTime"), spec.get("renewTime"), int(spec.get("leaseTransitions") or 0))


class LeaseLost(Exception):
    """Another replica holds the lease."""


class LeaderLock:
    """Hold the ``namespace/name`` Lease as ``identity`` (the election's decisions; :class:`Election` runs them)."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        *,
        timings: LeaseTimings | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube, self.namespace, self.name, self.identity = kube, namespace, name, identity
        self.timings = timings or LeaseTimings()
        self.monotonic = monotonic
        self._stop: asyncio.Event | None = None
        self._observed: Record | None = None
        self._observed_at = 0.0
        #: Monotonic start of the last successful acquisition or renewal (the renew deadline counts from there).
        self.renewed_at = 0.0

    @property
    def path(self) -> str:
        """REST path of the Lease."""
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.name}"

    @property
    def stopping(self) -> asyncio.Event:
        """Set by `release`: waits end, no more renewals (made in the loop that first asks)."""
        if self._stop is None:
            self._stop = asyncio.Event()
        return self._stop

    async def _request(self, method: str, path: str, deadline: float | None, body: Any = None) -> Any:
        timeout = self.timings.request_timeout
        if deadline is not None:
            timeout = min(timeout, deadline - self.monotonic())
            if timeout <= 0:
                raise errors.ApiUnavailable(f"{method} {path}: renew deadline reached")
        return await self.kube.request(method, path, body=body, seconds=timeout)

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds``; True when asked to stop meanwhile."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=max(0.0, seconds))
        except TimeoutError:
            return False
        return True

    def _observe(self, record: Record) -> None:
        if record != self._observed:
            self._observed, self._observed_at = record, self.monotonic()

    async def try_acquire_or_renew(self, deadline: float | None = None) -> bool:
        """One attempt to take the lease (``deadline`` None) or to renew it (``deadline``: monotonic, bounding each
        request); True when we hold it afterwards, False on a write conflict.

        Raises LeaseLost when another replica holds it: for a candidate, one whose record changed within its duration
        (as observed here); for the leader, any other holder. The operator's errors when the API cannot be reached.
        """
        started = self.monotonic()
        try:
            lease: dict[str, Any] = await self._request("GET", self.path, deadline)
        except errors.NotFound:
            if deadline is not None:
                raise LeaseLost("deleted") from None
            return await self._create(started)
        old = Record.of(lease)
        self._observe(old)
        if deadline is not None and old.holder != self.identity:
            raise LeaseLost(f"held by {old.holder or 'nobody'}")
        if old.holder not in ("", self.identity) and self.monotonic() < self._observed_at + old.duration:
            raise LeaseLost(f"held by {old.holder}")
        now = _fmt(wall_clock())
        ours = old.holder == self.identity
        lease["spec"] = self._spec(now, acquired=old.acquired if ours and old.acquired else now,
                                   transitions=old.transitions + (0 if ours else 1))
        try:
            await self._request("PUT", self.path, deadline, body=lease)
        except errors.ApiConflict:
            return False
        self._observe(Record.of(lease))
        self.renewed_at = started
        return True

    async def _create(self, started: float) -> bool:
        now = _fmt(wall_clock())
        body = {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": self._spec(now, acquired=now, transitions=0),
        }
        try:
            await self._request("POST", self.path.rsplit("/", 1)[0], None, body=body)
        except errors.ApiConflict:
            return False
        self._observe(Record.of(body))
        self.renewed_at = started
        return True

    def _spec(self, now: str, *, acquired: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.timings.lease_duration),
            "acquireTime": acquired,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def acquire(self) -> bool:
        """Until the lease is ours (True) or `release` was called (False)."""
        while not self.stopping.is_set():
            try:
                if await self.try_acquire_or_renew():
                    log.info("leading: lease %s/%s acquired by %s", self.namespace, self.name, self.identity)
                    return True
            except LeaseLost as exc:
                log.debug("lease %s/%s %s", self.namespace, self.name, exc)
            except errors.OperatorError as exc:
                log.warning("leader lease %s/%s: %s", self.namespace, self.name, exc)
            if await self._pause(self.timings.retry_period):
                break
        return False

    async def renew(self) -> str | None:
        """Renew, retrying until the renew deadline of the last success; why leadership is lost, else None (renewed,
        or asked to stop)."""
        deadline = self.renewed_at + self.timings.renew_deadline
        while deadline - self.monotonic() > 0:
            try:
                if await self.try_acquire_or_renew(deadline):
                    return None
            except LeaseLost as exc:
                return f"lease {exc}"
            except errors.OperatorError as exc:
                log.warning("leader lease renewal failed: %s", exc)
            if await self._pause(min(self.timings.retry_period, max(0.0, deadline - self.monotonic()))):
                return None
        return f"not renewed within {self.timings.renew_deadline:g} s"

    async def keep(self, on_lost: Callable[[str], None]) -> None:
        """Renew every retry period; call ``on_lost(why)`` once, at once, when leadership is lost."""
        while not await self._pause(self.timings.retry_period):
            why = await self.renew()
            if why is not None and not self.stopping.is_set():
                on_lost(why)
                return

    async def release(self) -> None:
        """Stop renewing and give the lease up (so a candidate takes over at its next try)."""
        self.stopping.set()
        try:
            lease: dict[str, Any] = await self._request("GET", self.path, None)
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                now = _fmt(wall_clock())
                lease["spec"].update(holderIdentity=None, leaseDurationSeconds=1, renewTime=now)
                await self._request("PUT", self.path, None, body=lease)
        except errors.OperatorError as exc:
            log.warning("could not release leader lease: %s", exc)


class Election:
    """A `LeaderLock` on a daemon thread with an event loop of its own; blocking methods for the process's main
    thread (which waits to lead before kopf starts, and releases the lease after kopf stopped)."""

    def __init__(self, lock: LeaderLock) -> None:
        self.lock = lock
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="leader-lease", daemon=True)
        self._thread.start()

    def _run(self, work: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def acquire(self) -> bool:
        """Block until the lease is ours (True) or it was released meanwhile (False)."""
        return bool(self._run(self.lock.acquire()))

    def keep(self, on_lost: Callable[[str], None]) -> None:
        """Renew in the background; ``on_lost(why)`` runs on the election's thread, once, when leadership is lost."""
        asyncio.run_coroutine_threadsafe(self.lock.keep(on_lost), self._loop)

    def release(self) -> None:
        """Stop renewing, give the lease up, close the connection and end the thread."""
        try:
            self._run(self._release())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    async def _release(self) -> None:
        await self.lock.release()
        await self.lock.kube.aclose()
