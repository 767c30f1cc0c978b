"""kopf handlers for AitbcDatabase: converge on create/update/resume, a drift timer, the finalizer, Secret events."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import kopf

from .. import GROUP, VERSION, errors, postgres
from ..builders.common import LABEL_MANAGED_BY, MANAGED_BY
from ..builders.database import COMPONENT_DATABASE
from ..k8s import resources as r
from ..k8s.client import FIELD_MANAGER, Kube
from ..reconcilers.database import DatabaseOutcome, delete_database, reconcile_database
from ..settings import load as load_settings
from .common import event, guarded, now, object_lock

log = logging.getLogger(__name__)
KIND = "AitbcDatabase"
PLURAL = "aitbcdatabases"
#: Read at import: kopf timers take their interval at registration.
DRIFT_INTERVAL = load_settings().drift_interval


async def reconcile(
    memo: MutableMapping[str, Any], namespace: str, name: str, *, verify_password: bool = True
) -> DatabaseOutcome | None:
    """Reconcile one AitbcDatabase by name (fresh read, under its lock). Raises the operator's errors."""
    kube: Kube = memo["kube"]
    pool: postgres.ServerPool = memo["pg"]
    async with object_lock(memo, KIND, namespace, name):
        body = await kube.get(r.AITBC_DATABASE, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        outcome = await guarded(
            KIND, lambda: reconcile_database(kube, pool, body, now=now(), verify_password=verify_password)
        )
        for reason, message, warning in outcome.events:
            event(body, reason, message, warning=warning)
        return outcome


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def database_changed(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Spec or annotations changed (e.g. a rotation request), or the operator started: converge."""
    assert namespace is not None
    await reconcile(memo, namespace, name)


@kopf.timer(GROUP, VERSION, PLURAL, interval=DRIFT_INTERVAL, initial_delay=DRIFT_INTERVAL, idle=None)
async def database_drift(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Compare the server with the spec and repair drift; also performs scheduled rotations once due
    (so a rotationPeriod is honoured with the drift interval's granularity).

    In sync, this issues read-only SQL, one login as the role, and no Kubernetes write.
    """
    assert namespace is not None
    try:
        await reconcile(memo, namespace, name)
    except (kopf.TemporaryError, kopf.PermanentError) as exc:
        log.info("AitbcDatabase %s/%s drift check: %s", namespace, name, exc)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def database_deleted(
    namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """Finalizer: Retain (default) or Drop, refused while another AitbcDatabase uses the database or role."""
    assert namespace is not None
    kube: Kube = memo["kube"]
    pool: postgres.ServerPool = memo["pg"]
    async with object_lock(memo, KIND, namespace, name):
        live = await kube.get(r.AITBC_DATABASE, namespace, name) or dict(body)
        try:
            outcome = await guarded(KIND, lambda: delete_database(kube, pool, live, now=now()))
        except (kopf.TemporaryError, kopf.PermanentError) as exc:
            event(live, "DeletionBlocked", str(exc), warning=True)
            raise
        for reason, message, warning in outcome.events:
            event(live, reason, message, warning=warning)


def _last_writer(body: kopf.Body) -> str | None:
    entries = body.get("metadata", {}).get("managedFields") or []
    latest = max(entries, key=lambda e: e.get("time") or "", default=None)
    return latest.get("manager") if latest else None


_SECRET_LABELS = {LABEL_MANAGED_BY: MANAGED_BY, "app.kubernetes.io/component": COMPONENT_DATABASE}


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
        except (kopf.TemporaryError, kopf.PermanentError, errors.OperatorError) as exc:
            log.info("AitbcDatabase %s/%s (secret event): %s", namespace, owner, exc)
