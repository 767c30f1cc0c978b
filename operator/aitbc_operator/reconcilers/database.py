"""Reconcile one AitbcDatabase: admin connection from its Secret, server converged through postgres/, Secret and
status written through k8s/ only when they change.

Order, so that a refusal leaves nothing half-made: everything that can refuse is checked first (the spec, the admin
Secret, name claims of other AitbcDatabases, that the connection Secret is absent or this resource's own, and on the
server - read-only - ownership markers, adoption and the admin's privileges); then the connection Secret is written;
then the DDL runs.

The password's source of truth is the connection Secret: on a normal reconcile the role is made to accept the
Secret's password (reset if changed out of band). A new password (first creation, rotation, a Secret deleted by hand)
is written to the Secret first and set on the role second, so the role never gets a password the Secret did not hold.
If the Secret write fails, nothing changed on the server and the old password keeps working; if setting it on the
role fails, the rotation is still pending (status keeps the old token and time) and the next reconcile rotates again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import conditions, errors, metrics, postgres
from ..builders.database import connection_secret, connection_secret_data
from ..k8s import resources as r
from ..k8s.client import Kube, carries_fingerprint, decode_secret_data
from ..k8s.ownership import ownership_conflict
from ..models.database import AitbcDatabaseSpec, AitbcDatabaseStatus
from ..passwords import generate_password
from .claims import ClaimBook
from .common import record_failure, validate_spec
from .database_policy import (
    Rotation,
    claim_of,
    conflicting_owner,
    next_rotation_in,
    rotation_due,
    rotation_token,
    secret_repairs,
)

log = logging.getLogger(__name__)

#: A size change smaller than this (and 10 %) is not worth a status write on its own.
SIZE_WRITE_THRESHOLD = 1 << 20
#: Event messages are cut to this many characters (the apiserver refuses much longer ones).
EVENT_MESSAGE_LIMIT = 1024
#: A reconcile (API reads and writes, SQL) that takes longer is cancelled and reported as a Timeout: a silent server
#: must not hold one of the operator's handler slots (AITBC_MAX_WORKERS) for longer.
RECONCILE_TIMEOUT = 60.0
#: What a password trigger asks the server to do with an existing role.
_PASSWORD_ACTIONS = {
    None: postgres.PasswordAction.KEEP,
    Rotation.INITIAL: postgres.PasswordAction.ROTATE,
    Rotation.TOKEN: postgres.PasswordAction.ROTATE,
    Rotation.SCHEDULE: postgres.PasswordAction.ROTATE,
    Rotation.LOST: postgres.PasswordAction.REISSUE,
}


@dataclass
class DatabaseOutcome:
    """What one reconcile did: for the handler (events, requeue) and for tests."""

    requeue_after: float | None = None
    events: list[tuple[str, str, bool]] = field(default_factory=list)  # (reason, message, warning)
    secret_written: bool = False
    status_written: bool = False
    steps: tuple[postgres.Step, ...] = ()


@dataclass(frozen=True)
class ServerAccess:
    """The admin connection of a resource, and the CA (PEM) its clients verify the server with, if any."""

    info: postgres.AdminConnInfo
    ca_pem: str | None

    @property
    def server(self) -> str:
        """host:port, as recorded in status."""
        return f"{self.info.host}:{self.info.port}"


@dataclass(frozen=True)
class SecretPlan:
    """The connection Secret as read (checked to be ours), and the password the reconcile goes on with."""

    live: dict[str, Any] | None
    password: str
    rotation: Rotation | None


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


async def admin_info(kube: Kube, namespace: str, spec: AitbcDatabaseSpec) -> ServerAccess:
    """The admin connection, from the referenced Secret (and the CA Secret)."""
    ref = spec.server.admin_secret_ref.name
    data = await kube.read_secret(namespace, ref)
    if data is None:
        raise errors.NotFound(f"admin Secret {ref} not found", reason="AdminSecretNotFound")
    ca_path = ca_pem = None
    ca_ref = spec.server.ca_secret_ref
    if ca_ref is not None:
        ca = await kube.read_secret(namespace, ca_ref.name)
        if ca is None or ca_ref.key not in ca:
            raise errors.NotFound(f"CA Secret {ca_ref.name} (key {ca_ref.key}) not found", reason="CASecretNotFound")
        ca_pem = ca[ca_ref.key]
        ca_path = postgres.write_ca_file(ca_pem)
    info = postgres.parse_admin_secret(data, sslmode=spec.server.ssl_mode, ca_path=ca_path)
    return ServerAccess(info, ca_pem)


def step_events(steps: tuple[postgres.Step, ...], *, repaired: tuple[str, ...] = ()) -> list[tuple[str, str, bool]]:
    """The Events of a reconcile's changes: one per reason, its messages joined in order.

    An out-of-band change is worth a Warning (DriftRepaired, whose message starts with the ``repaired`` Secret
    messages; DatabaseRecreated when the data are gone); the rest is one Normal ``Reconciled`` Event, e.g.
    "role x created; ...; database y created, owned by x; ...".
    """
    grouped: dict[tuple[str, bool], list[str]] = {}
    if repaired:
        grouped[("DriftRepaired", True)] = list(repaired)
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
    """One level-based reconcile; errors are recorded in status (but ServerConnecting), then raised for a retry.

    ``claims``: the operator's shared ClaimBook (without one, a first reconcile lists the claims itself).
    The whole reconcile is cancelled after RECONCILE_TIMEOUT seconds (ReconcileTimeout).
    """
    status = AitbcDatabaseStatus.model_validate(body.get("status") or {})
    try:
        try:
            async with asyncio.timeout(RECONCILE_TIMEOUT):
                return await _converge(kube, pool, body, status, now=now, verify_password=verify_password,
                                       claims=claims or ClaimBook(kube))
        except TimeoutError:
            raise errors.ReconcileTimeout(
                f"no answer within {RECONCILE_TIMEOUT:g} s (PostgreSQL server or Kubernetes API slow or silent)"
            ) from None
    except errors.ServerConnecting:
        raise  # not a failure of this resource: retried in a moment, status untouched
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
    spec = parse_spec(body)
    check_immutable(spec, status, name)
    desired = postgres.DesiredDatabase.from_spec(spec, namespace=namespace, name=name)
    access = await admin_info(kube, namespace, spec)
    first_time = status.database_name is None
    if first_time:
        me = claim_of(dict(body))
        if me is not None:
            conflict = conflicting_owner(me, await claims.including(me.uid), server=access.server)
            if conflict:
                raise errors.NameConflict(conflict)
    secret = await _own_secret(kube, body, spec, status, now=now)
    # Read-only on the server: ownership markers, adoption and the admin's privileges are checked here.
    prepared = await postgres.prepare(
        pool, access.info, desired, password=secret.password, password_action=_PASSWORD_ACTIONS[secret.rotation],
        verify_password=verify_password, previously_created=not first_time,
    )
    outcome = DatabaseOutcome()
    repaired = await _write_secret(kube, body, spec, access, secret, outcome)
    result = await postgres.execute(pool, access.info, desired, prepared, password=secret.password)
    outcome.steps = result.steps
    outcome.events.extend(step_events(result.steps, repaired=repaired))
    for step in result.drift:
        metrics.DRIFT_REPAIRS.labels("AitbcDatabase", step.action.value).inc()
    if repaired:
        metrics.DRIFT_REPAIRS.labels("AitbcDatabase", "Secret").inc()
    if secret.rotation is not None:
        metrics.ROTATIONS.labels(secret.rotation.value).inc()
        if secret.rotation in (Rotation.TOKEN, Rotation.SCHEDULE):
            outcome.events.append(("PasswordRotated", f"password of role {desired.role} rotated ({secret.rotation})",
                                   False))
    await _record_success(kube, body, spec, status, access, result, secret.rotation, outcome, now=now)
    return outcome


async def _own_secret(kube: Kube, body: Mapping[str, Any], spec: AitbcDatabaseSpec, status: AitbcDatabaseStatus,
                      *, now: datetime) -> SecretPlan:
    """The connection Secret, refused (NameConflict) unless absent or controlled by this resource, and the password
    to go on with: the Secret's, or a new one (first creation, rotation, Secret or password gone).

    The ownership check comes before anything is read from the Secret: a foreign Secret's ``password`` key (the
    admin Secret's!) must never become the role's password.
    """
    meta = body["metadata"]
    live = await kube.get(r.SECRET, meta["namespace"], spec.secret_name(meta["name"]))
    conflict = ownership_conflict(connection_secret(body, spec, {}), live)
    if conflict is not None:
        raise errors.NameConflict(f"connection {conflict}")
    current = decode_secret_data(live).get("password") if live is not None else None
    rotation = rotation_due(spec, status, meta.get("annotations") or {}, have_password=bool(current), now=now)
    password = generate_password(spec.password.length) if rotation is not None or not current else current
    return SecretPlan(live, password, rotation)


async def _write_secret(kube: Kube, body: Mapping[str, Any], spec: AitbcDatabaseSpec, access: ServerAccess,
                        secret: SecretPlan, outcome: DatabaseOutcome) -> tuple[str, ...]:
    """Write the connection Secret if it differs; returns what the write repaired (hand edits, a lost Secret)."""
    data = connection_secret_data(spec, server_host=access.info.host, server_port=access.info.port,
                                  password=secret.password, ca_pem=access.ca_pem)
    manifest = connection_secret(body, spec, data)
    ours_last = carries_fingerprint(manifest, secret.live)
    _, outcome.secret_written = await kube.apply_if_changed(manifest, secret.live)
    if not outcome.secret_written:
        return ()
    live_data = decode_secret_data(secret.live) if secret.live is not None else None
    return tuple(secret_repairs(manifest["metadata"]["name"], secret.rotation, data, live_data, ours_last=ours_last))


async def _record_success(kube: Kube, body: Mapping[str, Any], spec: AitbcDatabaseSpec, status: AitbcDatabaseStatus,
                          access: ServerAccess, result: postgres.ReconcileResult, rotation: Rotation | None,
                          outcome: DatabaseOutcome, *, now: datetime) -> None:
    """Ready, with what exists on the server; written only if it changed. Sets the requeue for a scheduled rotation."""
    meta = body["metadata"]
    secret_name = spec.secret_name(meta["name"])
    new = status.model_copy(deep=True)
    new.observed_generation = meta.get("generation")
    new.database_name, new.role_name = spec.effective_database_name, spec.effective_role_name
    new.secret_name = secret_name
    new.server = access.server
    new.server_version = result.server_version
    new.database_size_bytes = _size_to_record(status.database_size_bytes, result.database_size_bytes)
    new.observed_rotation_token = rotation_token(spec, meta.get("annotations") or {})
    if rotation is not None or new.last_rotation_time is None:
        new.last_rotation_time = now
    new.conditions = conditions.summary(
        status.conditions, ready=True, progressing=False, degraded=False, reason="Reconciled",
        message=f"database {new.database_name} owned by role {new.role_name}; Secret {secret_name}",
        now=now, generation=meta.get("generation"),
    )
    outcome.status_written = await kube.patch_status(r.AITBC_DATABASE, body, new.to_wire())
    outcome.requeue_after = next_rotation_in(spec, new, now=now)
