"""The AitbcDatabase finalizer: Retain keeps database and role, Drop drops them (only what carries this resource's
marker, never while another AitbcDatabase uses them).

A Drop that cannot be done waits: ``DeletionBlocked`` (condition, True) says why, with the release annotation's hint,
and one Event is posted per distinct reason, not per retry. One case is released instead of waiting: the namespace
is being deleted and the admin (or CA) Secret is already gone. The apiserver refuses new objects in a terminating
namespace, so the Secret can never come back and waiting could only end by a human's release annotation, which drops
nothing either; the database and role are kept (no data lost by the order in which the namespace's objects went) and a
Warning Event on the Namespace (the AitbcDatabase's own namespace refuses new Events too) and a log line say so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import conditions, errors, postgres
from ..k8s import resources as r
from ..k8s.client import Kube
from ..models.database import AitbcDatabaseSpec, AitbcDatabaseStatus, DeletionPolicy
from .claims import ClaimBook
from .common import record_failure
from .database import admin_info, parse_spec
from .database_policy import RELEASE_ANNOTATION, claim_of, users_blocking_drop

log = logging.getLogger(__name__)

#: Default seconds between retries of a blocked Drop (nothing tells this resource when the obstacle goes).
DROP_REFUSED_RETRY = 60.0
#: Missing Secrets that cannot come back once the namespace is terminating.
_SECRET_GONE = ("AdminSecretNotFound", "CASecretNotFound")


@dataclass
class DeletionOutcome:
    """What one attempt of the finalizer did: Events to post (on ``event_target``), and whether to retry."""

    events: list[tuple[str, str, bool]] = field(default_factory=list)  # (reason, message, warning)
    steps: tuple[postgres.Step, ...] = ()
    blocked: errors.OperatorError | None = None
    """The Drop waits for this; the finalizer stays and the attempt is retried."""
    event_target: Mapping[str, Any] | None = None
    """Where the Events go when not on the AitbcDatabase (its terminating Namespace)."""


async def delete_database(
    kube: Kube,
    pool: postgres.ServerPool,
    body: Mapping[str, Any],
    *,
    now: datetime,
    retry: float = DROP_REFUSED_RETRY,
) -> DeletionOutcome:
    """The finalizer: Retain leaves everything; Drop drops database and role unless another resource uses them.

    A blocked Drop is retried after at most ``retry`` seconds; its status says why (see the module docstring).
    """
    meta = body["metadata"]
    outcome = DeletionOutcome()
    status = AitbcDatabaseStatus.model_validate(body.get("status") or {})
    try:
        spec = parse_spec(body)
    except errors.InvalidSpec:
        outcome.events.append(("Released", "invalid spec: nothing was created, nothing to drop", False))
        return outcome
    released = _released_without_sql(spec, status, meta)
    if released is not None:
        outcome.events.append(released)
        return outcome
    try:
        outcome.steps = await _drop(kube, pool, body, spec, retry=retry)
    except errors.ServerConnecting as exc:
        outcome.blocked = exc  # retried in a moment; not worth a condition or an Event
        return outcome
    except errors.OperatorError as exc:
        if exc.reason in _SECRET_GONE:
            namespace = await kube.get_namespace(meta["namespace"])
            if namespace is None or namespace["metadata"].get("deletionTimestamp"):
                return _released_with_namespace(outcome, spec, status, meta, namespace, exc)
        await _record_blocked(kube, body, status, exc, outcome, now=now, retry=retry)
        return outcome
    outcome.events.extend(("Dropped", step.message, False) for step in outcome.steps)
    return outcome


def _released_without_sql(spec: AitbcDatabaseSpec, status: AitbcDatabaseStatus,
                          meta: Mapping[str, Any]) -> tuple[str, str, bool] | None:
    """The finalizer's Event when there is nothing to drop (Retain, the release annotation, nothing created)."""
    if spec.deletion_policy is DeletionPolicy.RETAIN:
        return "Retained", f"deletionPolicy Retain: database {spec.effective_database_name} and role kept", False
    if (meta.get("annotations") or {}).get(RELEASE_ANNOTATION, "").lower() == "true":
        return "Released", f"{RELEASE_ANNOTATION}: finalizer released, nothing dropped", True
    if status.database_name is None:
        return "Released", "nothing was created on the server, nothing to drop", False
    return None


async def _drop(kube: Kube, pool: postgres.ServerPool, body: Mapping[str, Any], spec: AitbcDatabaseSpec, *,
                retry: float) -> tuple[postgres.Step, ...]:
    meta = body["metadata"]
    access = await admin_info(kube, meta["namespace"], spec)
    me = claim_of(dict(body))
    blocking = users_blocking_drop(me, await ClaimBook(kube).fresh(), server=access.server) if me is not None else []
    if blocking:
        raise errors.TemporaryError(f"not dropping: still used by AitbcDatabase {', '.join(blocking)}",
                                    reason="DropRefused", delay=retry)
    status = AitbcDatabaseStatus.model_validate(body.get("status") or {})
    desired = postgres.DesiredDatabase.from_spec(spec, namespace=meta["namespace"], name=meta["name"],
                                                 read_only_made=status.read_only.role_name if status.read_only
                                                 else None)
    return await postgres.drop(pool, access.info, desired)


def _released_with_namespace(outcome: DeletionOutcome, spec: AitbcDatabaseSpec, status: AitbcDatabaseStatus,
                             meta: Mapping[str, Any], namespace: Mapping[str, Any] | None,
                             exc: errors.OperatorError) -> DeletionOutcome:
    message = (f"AitbcDatabase {meta['namespace']}/{meta['name']}: namespace being deleted and {exc.message}: "
               f"finalizer released WITHOUT dropping: database {status.database_name or spec.effective_database_name}"
               f" and role {status.role_name or spec.effective_role_name} stay on {status.server or 'the server'}")
    log.warning("%s", message)
    outcome.events.append(("ReleasedWithoutDrop", message, True))
    outcome.event_target = namespace
    return outcome


async def _record_blocked(kube: Kube, body: Mapping[str, Any], status: AitbcDatabaseStatus, exc: errors.OperatorError,
                          outcome: DeletionOutcome, *, now: datetime, retry: float) -> None:
    """DeletionBlocked (and Degraded) with the reason and the release hint; an Event only when the reason is new."""
    message = f"deletion blocked: {exc.message} (annotate {RELEASE_ANNOTATION}=true to release without dropping)"
    previous = next((c for c in status.conditions if c.type == conditions.DELETION_BLOCKED), None)
    new = status.model_copy(deep=True)
    new.conditions = conditions.set_condition(new.conditions, conditions.DELETION_BLOCKED, "True", exc.reason,
                                              message, now=now, generation=body["metadata"].get("generation"))
    await record_failure(kube, r.AITBC_DATABASE, body, new, exc, now=now, message=message, observe_generation=False)
    if previous is None or previous.status != "True" or previous.reason != exc.reason:
        outcome.events.append(("DeletionBlocked", message, True))
    if isinstance(exc, errors.TemporaryError):
        exc.delay = min(exc.delay, retry)
    outcome.blocked = exc
