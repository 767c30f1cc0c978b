"""kopf handlers for AitbcDatabase: converge on create/update/resume, the drift checks, the finalizer, Secret events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

import kopf

from .. import GROUP, VERSION, errors, postgres
from ..builders.common import LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_OWNER, MANAGED_BY
from ..builders.database import COMPONENT_DATABASE
from ..builders.database_backup import COMPONENT_BACKUP, COMPONENT_RESTORE
from ..k8s import resources as r
from ..k8s.client import FIELD_MANAGER, Kube
from ..reconcilers.database import RECONCILE_TIMEOUT, DatabaseOutcome, parse_spec, reconcile_database
from ..reconcilers.database_deletion import DROP_REFUSED_RETRY, DeletionOutcome, delete_database
from ..reconcilers.database_policy import BACKUP_ANNOTATION, rotation_token
from ..settings import load as load_settings
from .common import event, guarded, now, object_lock, shared_schedule
from .schedule import Schedule

log = logging.getLogger(__name__)
KIND = "AitbcDatabase"
PLURAL = "aitbcdatabases"
#: The drift interval, read at import for the retry bounds below (the schedule takes it from the operator's settings).
DRIFT_INTERVAL = load_settings().drift_interval
#: A blocked Drop (another AitbcDatabase uses the names, the admin Secret or the server is gone) is retried at least
#: this often (every drift interval, at most every minute).
REFUSED_DROP_RETRY = min(DROP_REFUSED_RETRY, DRIFT_INTERVAL)
#: Seconds before retrying a temporary failure that names no delay.
DEFAULT_RETRY = 15.0
_DRIFT = "database-drift"


async def reconcile(
    memo: MutableMapping[str, Any], namespace: str, name: str, *, verify_password: bool = True,
    seen: Mapping[str, Any] | None = None,
) -> DatabaseOutcome | None:
    """Reconcile one AitbcDatabase by name, under its lock. Raises the operator's errors.

    ``seen``: the body kopf handed the handler; used as is when it holds every write of this operator to the object
    (``Kube.current``), else - and without one - the object is read afresh.
    """
    kube: Kube = memo["kube"]
    pool: postgres.ServerPool = memo["pg"]
    async with object_lock(memo, KIND, namespace, name):
        if seen is not None:
            body = await kube.current(r.AITBC_DATABASE, seen)
        else:
            body = await kube.get(r.AITBC_DATABASE, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            drift_schedule(memo).forget((namespace, name))
            return None
        track_drift(memo, namespace, name)
        outcome = await guarded(
            KIND, lambda: reconcile_database(kube, pool, body, now=now(), verify_password=verify_password,
                                             claims=memo.get("claims"), reads=memo.get("secret_reads"))
        )
        for reason, message, warning in outcome.events:
            event(body, reason, message, warning=warning)
        pending = retries(memo).pop((namespace, name), None)
        if pending is not None and pending is not asyncio.current_task():
            pending.cancel()  # converged: the scheduled retry has nothing left to do
        if outcome.requeue_after is not None and outcome.requeue_after < DRIFT_INTERVAL:
            recheck_later(memo, namespace, name, outcome.requeue_after)
        return outcome


def retries(memo: MutableMapping[str, Any]) -> dict[tuple[str, str], asyncio.Task[None]]:
    """The scheduled retries of failed reconciles, one per AitbcDatabase (removed when they run or are cancelled)."""
    pending: dict[tuple[str, str], asyncio.Task[None]] = memo.setdefault("database_retries", {})
    return pending


def retry_later(memo: MutableMapping[str, Any], namespace: str, name: str, failure: kopf.TemporaryError) -> None:
    """Reconcile again after ``failure``'s delay - or, when it was refused while another job opened the connection
    to its server, as soon as that attempt is over - in a task of its own (at most one pending per resource).

    Not kopf's own retry: kopf sleeps out a TemporaryError's delay inside the object's worker, holding one of the
    AITBC_MAX_WORKERS slots all along. With a dead PostgreSQL server, its resources - failing fast thanks to the
    pool's circuit breaker - would hold every slot in turn and starve the resources of healthy servers.
    """
    pending = retries(memo)
    current = pending.get((namespace, name))
    if current is None or current.done():
        pending[(namespace, name)] = asyncio.create_task(_retry(memo, namespace, name, failure),
                                                          name=f"retry AitbcDatabase {namespace}/{name}")


def recheck_later(memo: MutableMapping[str, Any], namespace: str, name: str, delay: float) -> None:
    """Reconcile again after ``delay`` seconds (a rotation waiting for its consumers, a dump or restore Job running,
    a scheduled rotation due before the next drift pass), in a task of its own like ``retry_later``."""
    pending = retries(memo)
    current = pending.get((namespace, name))
    if current is None or current.done():
        pending[(namespace, name)] = asyncio.create_task(
            _retry(memo, namespace, name, kopf.TemporaryError("recheck", delay=max(delay, 0.5))),
            name=f"recheck AitbcDatabase {namespace}/{name}")


async def _retry(memo: MutableMapping[str, Any], namespace: str, name: str, failure: kopf.TemporaryError) -> None:
    cause = failure.__cause__
    if isinstance(cause, errors.ServerConnecting) and cause.settled is not None:
        await asyncio.wait({cause.settled}, timeout=RECONCILE_TIMEOUT)
    else:
        await asyncio.sleep(failure.delay or DEFAULT_RETRY)
    retries(memo).pop((namespace, name), None)
    try:
        await reconcile(memo, namespace, name)
    except kopf.TemporaryError as exc:
        retry_later(memo, namespace, name, exc)
    except kopf.PermanentError as exc:
        log.info("AitbcDatabase %s/%s (retry): %s", namespace, name, exc)


@kopf.on.cleanup()
async def cancel_retries(memo: kopf.Memo, **_: Any) -> None:
    """The operator stops: scheduled retries and drift checks must not act after it."""
    for task in retries(memo).values():
        task.cancel()
    drift_schedule(memo).stop()


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def database_changed(namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Spec or annotations changed (e.g. a rotation request): converge.

    A temporary failure (already in status: Degraded with its reason) is retried by ``retry_later``, off kopf's
    worker slot; a permanent one waits for a change of the spec, or for the drift timer.
    """
    assert namespace is not None
    await _converge_or_retry(memo, namespace, name, body, verify_password=True)


@kopf.on.resume(GROUP, VERSION, PLURAL)
async def database_resumed(namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The operator started: converge, without logging in as the role. The password is checked by the first drift
    check (within the drift interval, the bound on noticing a changed password anyway); a restart does not open a
    server connection - a backend process - per AitbcDatabase."""
    assert namespace is not None
    await _converge_or_retry(memo, namespace, name, body, verify_password=False)


async def _converge_or_retry(memo: MutableMapping[str, Any], namespace: str, name: str, body: kopf.Body, *,
                             verify_password: bool) -> None:
    try:
        await reconcile(memo, namespace, name, seen=body, verify_password=verify_password)
    except kopf.TemporaryError as exc:
        log.info("AitbcDatabase %s/%s: %s; retried", namespace, name, exc)
        retry_later(memo, namespace, name, exc)


def request_pending(body: kopf.Body, **_: Any) -> bool:
    """Whether the rotation token (spec field or annotation) differs from the one the status recorded, or the
    on-demand backup annotation from the token last acted on.

    kopf starts on.update only when the spec's generation moves (persistence.py), so a change of the
    ``aitbc.io/rotate-password`` or ``aitbc.io/backup-now`` annotation alone would wait for the next drift pass; this
    filter lets an event handler act on it at once.
    """
    status = body.get("status") or {}
    observed = status.get("observedRotationToken")
    if observed is None or body.get("metadata", {}).get("deletionTimestamp"):
        return False
    try:
        spec = parse_spec(body)
    except errors.InvalidSpec:
        return False
    annotations = body.get("metadata", {}).get("annotations") or {}
    backup = annotations.get(BACKUP_ANNOTATION)
    if backup and spec.backup is not None and backup != (status.get("backup") or {}).get("observedOnDemandToken"):
        return True
    return bool(observed != rotation_token(spec, annotations))


@kopf.on.event(GROUP, VERSION, PLURAL, when=request_pending)
async def database_request_pending(
    type: str | None, namespace: str | None, name: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """A rotation or an on-demand dump was requested (e.g. by an annotation, which on.update does not see): converge
    now."""
    if namespace is None or name is None or type == "DELETED":
        return
    try:
        await reconcile(memo, namespace, name, seen=body)
    except (kopf.TemporaryError, kopf.PermanentError) as exc:
        log.info("AitbcDatabase %s/%s (request): %s", namespace, name, exc)
        if isinstance(exc, kopf.TemporaryError):
            retry_later(memo, namespace, name, exc)


def drift_schedule(memo: MutableMapping[str, Any]) -> Schedule:
    """The drift checks of every AitbcDatabase: one operator-wide schedule (handlers/schedule.py), not kopf timers."""
    return shared_schedule(memo, _DRIFT, lambda cfg: cfg.drift_interval)


def track_drift(memo: MutableMapping[str, Any], namespace: str, name: str) -> None:
    """Put the AitbcDatabase on the drift schedule, and run the schedule until the operator stops (``cancel_retries``
    ends it). Started from the first handler, not at startup: a task takes the context it was created in, and kopf
    posts Events (kopf.event) only from a context of its handlers."""
    drift_schedule(memo).keep((namespace, name), lambda ns, n: drift_check(memo, ns, n))


async def drift_check(memo: MutableMapping[str, Any], namespace: str, name: str) -> None:
    """Compare the server with the spec and repair drift; also performs scheduled rotations once due
    (so a rotationPeriod is honoured with the drift interval's granularity).

    In sync, this reads the AitbcDatabase and its connection Secret, issues read-only SQL and one login as the role,
    and writes nothing.
    """
    try:
        await reconcile(memo, namespace, name)
    except (kopf.TemporaryError, kopf.PermanentError) as exc:
        log.info("AitbcDatabase %s/%s drift check: %s", namespace, name, exc)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def database_deleted(
    namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """Finalizer: Retain (default) or Drop, refused while another AitbcDatabase uses the database or role.

    A blocked Drop raises for kopf's retry; its Event was posted only if the reason is new (see
    reconcilers/database_deletion.py).
    """
    assert namespace is not None
    kube: Kube = memo["kube"]
    pool: postgres.ServerPool = memo["pg"]
    async with object_lock(memo, KIND, namespace, name):
        live = await kube.get(r.AITBC_DATABASE, namespace, name) or dict(body)

        async def attempt() -> DeletionOutcome:
            outcome = await delete_database(kube, pool, live, now=now(), retry=REFUSED_DROP_RETRY)
            for reason, message, warning in outcome.events:
                event(outcome.event_target or live, reason, message, warning=warning)
            if outcome.blocked is not None:
                raise outcome.blocked
            return outcome

        drift_schedule(memo).forget((namespace, name))
        await guarded(KIND, attempt)
        kube.forget(r.AITBC_DATABASE, namespace, name)


def _last_writer(body: kopf.Body) -> str | None:
    entries = body.get("metadata", {}).get("managedFields") or []
    latest = max(entries, key=lambda e: e.get("time") or "", default=None)
    return latest.get("manager") if latest else None


_SECRET_LABELS = {LABEL_MANAGED_BY: MANAGED_BY, "app.kubernetes.io/component": COMPONENT_DATABASE}
_JOB_LABELS: dict[str, Any] = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_OWNER: kopf.PRESENT}


def _dump_job(labels: kopf.Labels, **_: Any) -> bool:
    return labels.get(LABEL_COMPONENT) in (COMPONENT_BACKUP, COMPONENT_RESTORE)


@kopf.on.event("batch", "v1", "jobs", labels=_JOB_LABELS, when=_dump_job)
async def dump_job_event(type: str | None, namespace: str | None, labels: kopf.Labels, status: kopf.Status,
                         memo: kopf.Memo, **_: Any) -> None:
    """A dump or restore Job finished: record its outcome / take the restore's next step at once."""
    owner = labels.get(LABEL_OWNER)
    if namespace is None or owner is None or "kube" not in memo or type in (None, "DELETED"):
        return  # None: kopf's replay of the listing (a restart); the owner's resume reads its Jobs anyway
    conds: list[dict[str, Any]] = dict(status or {}).get("conditions") or []
    finished = any(c.get("status") == "True" and c.get("type") in ("Complete", "Failed") for c in conds)
    if not finished:
        return
    try:
        await reconcile(memo, namespace, owner, verify_password=False)
    except (kopf.TemporaryError, kopf.PermanentError) as exc:
        log.info("AitbcDatabase %s/%s (job event): %s", namespace, owner, exc)
        if isinstance(exc, kopf.TemporaryError):
            retry_later(memo, namespace, owner, exc)


@kopf.on.event("v1", "secrets", labels=_SECRET_LABELS)
async def connection_secret_event(
    type: str | None, namespace: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """A connection Secret was deleted or edited by someone else: put it back (keys others added are kept)."""
    if namespace is None or "kube" not in memo:
        return
    if type != "DELETED" and not (type == "MODIFIED" and _last_writer(body) != FIELD_MANAGER):
        return
    owners = [o["name"] for o in body.get("metadata", {}).get("ownerReferences", []) if o.get("kind") == KIND]
    for owner in owners:
        try:
            await reconcile(memo, namespace, owner, verify_password=False)
        except (kopf.TemporaryError, kopf.PermanentError) as exc:
            log.info("AitbcDatabase %s/%s (secret event): %s", namespace, owner, exc)
            if isinstance(exc, kopf.TemporaryError):
                retry_later(memo, namespace, owner, exc)
