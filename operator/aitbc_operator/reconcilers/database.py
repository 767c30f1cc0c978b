"""Reconcile one AitbcDatabase: admin connection from its Secret, server converged through postgres/, Secret and
status written through k8s/ only when they change.

The password's source of truth is the output Secret: on a normal reconcile the role is made to accept the Secret's
password (reset if changed out of band); on rotation a new password is set on the role first, then written to the
Secret. If the Secret write fails, the next reconcile finds the Secret's password rejected and resets the role to it,
so role and Secret always converge.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import conditions, errors, metrics, postgres
from ..builders.database import connection_secret, connection_secret_data
from ..k8s import resources as r
from ..k8s.client import Kube, decode_secret_data
from ..models.database import AitbcDatabaseSpec, AitbcDatabaseStatus, DeletionPolicy
from ..passwords import generate_password
from .claims import ClaimBook
from .common import record_failure, validate_spec
from .database_policy import (
    RELEASE_ANNOTATION,
    Rotation,
    claim_of,
    conflicting_owner,
    next_rotation_in,
    rotation_due,
    rotation_token,
    users_blocking_drop,
)

log = logging.getLogger(__name__)

#: A size change smaller than this (and 10 %) is not worth a status write on its own.
SIZE_WRITE_THRESHOLD = 1 << 20
#: Event messages are cut to this many characters (the apiserver refuses much longer ones).
EVENT_MESSAGE_LIMIT = 1024
#: Default seconds between retries of a Drop refused because another AitbcDatabase still uses the names.
DROP_REFUSED_RETRY = 60.0


@dataclass
class DatabaseOutcome:
    """What one reconcile did: for the handler (events, requeue) and for tests."""

    requeue_after: float | None = None
    events: list[tuple[str, str, bool]] = field(default_factory=list)  # (reason, message, warning)
    secret_written: bool = False
    status_written: bool = False
    steps: tuple[postgres.Step, ...] = ()


def parse_spec(body: Mapping[str, Any]) -> AitbcDatabaseSpec:
    """The validated spec, or InvalidSpec naming the fields (the CRD should have caught it already)."""
    return validate_spec(AitbcDatabaseSpec, body)


def check_immutable(spec: AitbcDatabaseSpec, status: AitbcDatabaseStatus, name: str) -> None:
    """Names recorded at creation never change (the CRD refuses it; this is the operator's own guard)."""
    for what, recorded, wanted in (
        ("databaseName", status.database_name, spec.effective_database_name),
        ("roleName", status.role_name, spec.effective_role_name),
        ("secret name", status.secret_name, spec.secret_name(name)),
    ):
        if recorded is not None and recorded != wanted:
            raise errors.InvalidSpec(f"{what} is immutable: it was {recorded!r}, the spec now says {wanted!r}")


async def admin_info(kube: Kube, namespace: str, spec: AitbcDatabaseSpec) -> postgres.AdminConnInfo:
    """The admin connection, from the referenced Secret (and CA Secret)."""
    ref = spec.server.admin_secret_ref.name
    data = await kube.read_secret(namespace, ref)
    if data is None:
        raise errors.NotFound(f"admin Secret {ref} not found", reason="AdminSecretNotFound")
    ca_path = None
    ca_ref = spec.server.ca_secret_ref
    if ca_ref is not None:
        ca = await kube.read_secret(namespace, ca_ref.name)
        if ca is None or ca_ref.key not in ca:
            raise errors.NotFound(f"CA Secret {ca_ref.name} (key {ca_ref.key}) not found", reason="CASecretNotFound")
        ca_path = postgres.write_ca_file(ca[ca_ref.key])
    return postgres.parse_admin_secret(data, sslmode=spec.server.ssl_mode, ca_path=ca_path)


def step_events(steps: tuple[postgres.Step, ...]) -> list[tuple[str, str, bool]]:
    """The Events of a reconcile's server changes: one per reason, its steps' messages joined in order.

    An out-of-band change is worth a Warning (DriftRepaired; DatabaseRecreated when the data are gone); the rest is
    one Normal ``Reconciled`` Event, e.g. "role x created; ...; database y created, owned by x; ...".
    """
    grouped: dict[tuple[str, bool], list[str]] = {}
    for step in steps:
        recreated = step.action is postgres.Action.CREATE_DATABASE and step.drift
        reason = "DatabaseRecreated" if recreated else ("DriftRepaired" if step.drift else "Reconciled")
        grouped.setdefault((reason, step.drift), []).append(step.message)
    return [(reason, _event_message(messages), warning) for (reason, warning), messages in grouped.items()]


def _event_message(messages: list[str]) -> str:
    text = "; ".join(messages)
    return text if len(text) <= EVENT_MESSAGE_LIMIT else text[: EVENT_MESSAGE_LIMIT - 3] + "..."


def _size_to_record(old: int | None, new: int | None) -> int | None:
    if new is None or old is None:
        return new if new is not None else old
    if abs(new - old) < max(SIZE_WRITE_THRESHOLD, old // 10):
        return old
    return new


async def reconcile_database(
    kube: Kube,
    pool: postgres.ServerPool,
    body: Mapping[str, Any],
    *,
    now: datetime,
    verify_password: bool = True,
    claims: ClaimBook | None = None,
) -> DatabaseOutcome:
    """One level-based reconcile; errors are recorded in status, then raised for kopf's retry.

    ``claims``: the operator's shared ClaimBook (without one, a first reconcile lists the claims itself).
    """
    status = AitbcDatabaseStatus.model_validate(body.get("status") or {})
    try:
        return await _converge(kube, pool, body, status, now=now, verify_password=verify_password,
                               claims=claims or ClaimBook(kube))
    except errors.OperatorError as exc:
        await record_failure(kube, r.AITBC_DATABASE, body, status.model_copy(deep=True), exc, now=now)
        raise


async def _converge(
    kube: Kube,
    pool: postgres.ServerPool,
    body: Mapping[str, Any],
    status: AitbcDatabaseStatus,
    *,
    now: datetime,
    verify_password: bool,
    claims: ClaimBook,
) -> DatabaseOutcome:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    outcome = DatabaseOutcome()
    spec = parse_spec(body)
    check_immutable(spec, status, name)
    desired = postgres.DesiredDatabase.from_spec(spec, namespace=namespace, name=name)
    info = await admin_info(kube, namespace, spec)
    server = f"{info.host}:{info.port}"

    first_time = status.database_name is None
    if first_time:
        me = claim_of(dict(body))
        if me is not None:
            conflict = conflicting_owner(me, await claims.including(me.uid), server=server)
            if conflict:
                raise errors.NameConflict(conflict)

    secret_name = spec.secret_name(name)
    live_secret = await kube.get(r.SECRET, namespace, secret_name)
    current_password = decode_secret_data(live_secret).get("password") if live_secret else None
    rotation = rotation_due(spec, status, annotations, have_password=bool(current_password), now=now)
    password = generate_password(spec.password.length) if rotation or not current_password else current_password

    result = await postgres.reconcile(
        pool, info, desired, password=password, rotate=rotation is not None, verify_password=verify_password,
        previously_created=not first_time,
    )
    outcome.steps = result.steps

    data = connection_secret_data(spec, server_host=info.host, server_port=info.port, password=password)
    _, outcome.secret_written = await kube.apply_if_changed(connection_secret(body, spec, data), live_secret)

    outcome.events.extend(step_events(result.steps))
    for step in result.drift:
        metrics.DRIFT_REPAIRS.labels("AitbcDatabase", step.action.value).inc()
    if rotation is not None:
        metrics.ROTATIONS.labels(rotation.value).inc()
        if rotation is not Rotation.INITIAL:
            outcome.events.append(("PasswordRotated", f"password of role {desired.role} rotated ({rotation})", False))

    new = status.model_copy(deep=True)
    new.observed_generation = meta.get("generation")
    new.database_name, new.role_name, new.secret_name = desired.database, desired.role, secret_name
    new.server = server
    new.server_version = result.server_version
    new.database_size_bytes = _size_to_record(status.database_size_bytes, result.database_size_bytes)
    new.observed_rotation_token = rotation_token(spec, annotations)
    if rotation is not None or new.last_rotation_time is None:
        new.last_rotation_time = now
    new.conditions = conditions.summary(
        status.conditions, ready=True, progressing=False, degraded=False, reason="Reconciled",
        message=f"database {desired.database} owned by role {desired.role}; Secret {secret_name}",
        now=now, generation=meta.get("generation"),
    )
    outcome.status_written = await kube.patch_status(r.AITBC_DATABASE, body, new.to_wire())
    outcome.requeue_after = next_rotation_in(spec, new, now=now)
    return outcome


async def delete_database(
    kube: Kube,
    pool: postgres.ServerPool,
    body: Mapping[str, Any],
    *,
    now: datetime,
    refused_retry: float = DROP_REFUSED_RETRY,
) -> DatabaseOutcome:
    """The finalizer: Retain leaves everything; Drop drops database and role unless another resource uses them.

    A refused Drop is retried after ``refused_retry`` seconds (nothing tells this resource when the other one goes).
    """
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    outcome = DatabaseOutcome()
    status = AitbcDatabaseStatus.model_validate(body.get("status") or {})
    try:
        spec = parse_spec(body)
    except errors.InvalidSpec:
        outcome.events.append(("Released", "invalid spec: nothing was created, nothing to drop", False))
        return outcome
    if spec.deletion_policy is DeletionPolicy.RETAIN:
        outcome.events.append(
            ("Retained", f"deletionPolicy Retain: database {spec.effective_database_name} and role kept", False)
        )
        return outcome
    if (meta.get("annotations") or {}).get(RELEASE_ANNOTATION, "").lower() == "true":
        outcome.events.append(("Released", f"{RELEASE_ANNOTATION}: finalizer released, nothing dropped", True))
        return outcome
    if status.database_name is None:
        outcome.events.append(("Released", "nothing was created on the server, nothing to drop", False))
        return outcome
    try:
        info = await admin_info(kube, namespace, spec)
        server = f"{info.host}:{info.port}"
        me = claim_of(dict(body))
        blocking = users_blocking_drop(me, await ClaimBook(kube).fresh(), server=server) if me is not None else []
        if blocking:
            raise errors.TemporaryError(
                f"not dropping: still used by AitbcDatabase {', '.join(blocking)}", reason="DropRefused",
                delay=refused_retry,
            )
        desired = postgres.DesiredDatabase.from_spec(spec, namespace=namespace, name=name)
        outcome.steps = await postgres.drop(pool, info, desired)
    except errors.OperatorError as exc:
        hint = f" (annotate {RELEASE_ANNOTATION}=true to release without dropping)"
        await record_failure(
            kube, r.AITBC_DATABASE, body, status.model_copy(deep=True), exc, now=now,
            message=f"deletion blocked: {exc.message}{hint}", observe_generation=False,
        )
        raise
    outcome.events.extend(("Dropped", step.message, False) for step in outcome.steps)
    return outcome
