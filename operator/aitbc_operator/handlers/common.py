"""What every handler shares: per-object locks, error translation for kopf, events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import kopf

from .. import errors, metrics

T = TypeVar("T")
log = logging.getLogger(__name__)


def now() -> datetime:
    """The clock, in one place (second precision: what the apiserver keeps)."""
    return datetime.now(UTC).replace(microsecond=0)


def object_lock(memo: MutableMapping[str, Any], kind: str, namespace: str, name: str) -> asyncio.Lock:
    """One lock per object: the create/update handler, the timer and child watchers never reconcile it at once."""
    locks: dict[tuple[str, str, str], asyncio.Lock] = memo.setdefault("locks", {})
    return locks.setdefault((kind, namespace, name), asyncio.Lock())


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
