"""What every handler shares: per-object locks, error translation for kopf, events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import kopf

from .. import errors, metrics
from ..settings import Settings
from .schedule import Schedule

T = TypeVar("T")
log = logging.getLogger(__name__)


def now() -> datetime:
    """The clock, in one place (second precision: what the apiserver keeps)."""
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class _HeldLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    waiting: int = 0


def locks(memo: MutableMapping[str, Any]) -> dict[tuple[str, str, str], _HeldLock]:
    """The per-object locks of the operator (in its memo: see handlers.share_registries)."""
    held: dict[tuple[str, str, str], _HeldLock] = memo.setdefault("locks", {})
    return held


@contextlib.asynccontextmanager
async def object_lock(memo: MutableMapping[str, Any], kind: str, namespace: str, name: str, *,
                      coalesce: bool = False) -> AsyncIterator[bool]:
    """Hold the object's lock: the create/update handler, the re-checks and child watchers never reconcile it at once.
    Yields True once held.

    ``coalesce``: yield False at once, without the lock, when someone already waits for it. For triggers whose
    reconcile reads the object afresh, when every holder does: the waiting one starts after this trigger happened,
    so it serves both (a burst of child events makes one reconcile after the running one, not one per event).

    The lock exists while someone holds or waits for it, and is forgotten after the last one (the dict would
    otherwise grow with every object ever seen, deleted ones and child events for unknown owners included).
    """
    registry = locks(memo)
    key = (kind, namespace, name)
    held = registry.setdefault(key, _HeldLock())
    if coalesce and held.waiting:
        yield False
        return
    held.users += 1
    held.waiting += 1
    waiting = True
    try:
        async with held.lock:
            held.waiting, waiting = held.waiting - 1, False
            yield True
    finally:
        if waiting:  # cancelled before it got the lock
            held.waiting -= 1
        held.users -= 1
        if held.users == 0:
            del registry[key]


def to_kopf(exc: errors.OperatorError) -> Exception:
    """The kopf exception that carries the same retry meaning."""
    if isinstance(exc, errors.TemporaryError):
        return kopf.TemporaryError(exc.message, delay=exc.delay)
    return kopf.PermanentError(exc.message)


async def guarded(kind: str, fn: Callable[[], Awaitable[T]]) -> T:
    """Run a reconcile with metrics; translate the operator's errors into kopf's (after the caller wrote status)."""
    try:
        with metrics.observe_reconcile(kind):
            return await fn()
    except errors.OperatorError as exc:
        raise to_kopf(exc) from exc


def event(body: Mapping[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
    """Post a Kubernetes Event on the object (kopf posts it asynchronously). Never pass secrets here.

    Posted whatever ``settings.posting.level`` is: that level only filters kopf's own log lines (operator.py).
    """
    kopf.event(cast(kopf.Body, body), type="Warning" if warning else "Normal", reason=reason, message=message)


def shared_schedule(memo: MutableMapping[str, Any], slot: str, interval: Callable[[Settings], float]) -> Schedule:
    """The operator-wide schedule kept in the operator's memo under ``slot``, made on first use with the settings'
    ``interval`` and as many checks at once as the operator has workers."""
    schedule: Schedule | None = memo.get(slot)
    if schedule is None:
        cfg: Settings = memo.get("settings") or Settings()
        schedule = memo[slot] = Schedule(interval(cfg), concurrency=cfg.max_workers)
    return schedule
