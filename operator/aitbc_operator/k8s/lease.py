"""A Lease-based leader lock (coordination.k8s.io/v1), so that of several replicas only one reconciles.

The operator acquires the lock before kopf starts, renews it from a background thread, and stops kopf (then exits,
to be restarted as a follower) as soon as a renewal fails for longer than the lease duration. This is the same
protocol as client-go's leaderelection: holderIdentity + renewTime + leaseDurationSeconds, updated with
optimistic concurrency (resourceVersion), so two replicas can never both believe they hold it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import errors
from .client import Kube

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def _fmt(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    return datetime.strptime(ts.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")


class LeaderLock:
    """Hold `namespace/name` Lease as `identity`."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_seconds: int = 15,
        renew_seconds: float = 5.0,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.kube, self.namespace, self.name, self.identity = kube, namespace, name, identity
        self.lease_seconds, self.renew_seconds, self.clock = lease_seconds, renew_seconds, clock
        self._stop = threading.Event()

    @property
    def path(self) -> str:
        """REST path of the Lease."""
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.name}"

    def try_acquire(self) -> bool:
        """One attempt to acquire or renew; True when we hold the lease afterwards."""
        now = self.clock()
        try:
            lease: dict[str, Any] = self.kube.request_sync("GET", self.path)
        except errors.NotFound:
            body = {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, transitions=0, acquired=now),
            }
            try:
                self.kube.request_sync(
                    "POST", self.path.rsplit("/", 1)[0], body=body, content_type="application/json"
                )
            except errors.ApiConflict:
                return False
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
        duration = int(spec.get("leaseDurationSeconds") or self.lease_seconds)
        expired = renewed is None or now - renewed > timedelta(seconds=duration)
        if holder not in (None, "", self.identity) and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        acquired = _parse(spec.get("acquireTime")) if holder == self.identity else now
        lease["spec"] = self._spec(now, transitions=transitions, acquired=acquired or now)
        try:
            self.kube.request_sync("PUT", self.path, body=lease, content_type="application/json")
        except errors.ApiConflict:
            return False
        return True

    def _spec(self, now: datetime, *, transitions: int, acquired: datetime) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "acquireTime": _fmt(acquired),
            "renewTime": _fmt(now),
            "leaseTransitions": transitions,
        }

    def acquire(self, *, stop: threading.Event | None = None) -> bool:
        """Block until the lease is ours (True) or `stop` is set (False)."""
        stop = stop or self._stop
        while not stop.is_set():
            try:
                if self.try_acquire():
                    log.info("leader lease %s/%s acquired by %s", self.namespace, self.name, self.identity)
                    return True
            except errors.OperatorError as exc:
                log.warning("leader lease %s/%s: %s", self.namespace, self.name, exc)
            stop.wait(self.renew_seconds)
        return False

    def keep(self, on_lost: Callable[[], None]) -> threading.Thread:
        """Renew in a daemon thread; call `on_lost` once when the lease cannot be renewed in time."""

        def loop() -> None:
            last_ok = time.monotonic()
            while not self._stop.wait(self.renew_seconds):
                try:
                    if self.try_acquire():
                        last_ok = time.monotonic()
                        continue
                    log.error("leader lease %s/%s taken over by another replica", self.namespace, self.name)
                except errors.OperatorError as exc:
                    log.warning("leader lease renewal failed: %s", exc)
                    if time.monotonic() - last_ok < self.lease_seconds - self.renew_seconds:
                        continue
                on_lost()
                return

        thread = threading.Thread(target=loop, name="leader-lease", daemon=True)
        thread.start()
        return thread

    def release(self) -> None:
        """Stop renewing and give the lease up (so a follower takes over at once)."""
        self._stop.set()
        try:
            lease: dict[str, Any] = self.kube.request_sync("GET", self.path)
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                lease["spec"]["renewTime"] = None
                self.kube.request_sync("PUT", self.path, body=lease, content_type="application/json")
        except errors.OperatorError as exc:
            log.warning("could not release leader lease: %s", exc)
