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
from datetime import datetime, timedelta
from typing import Any

from .. import conditions, errors, metrics, postgres
from ..builders.database import connection_secret, connection_secret_data, secret_hash
from ..k8s import resources as r
from ..k8s.client import Kube, carries_fingerprint, decode_secret_data
from ..k8s.ownership import ownership_conflict
from ..models.base import parse_duration
from ..models.database import (
    AitbcDatabaseSpec,
    AitbcDatabaseStatus,
    BackupStatus,
    ConsumerStatus,
    ReadOnlyStatus,
    RestoreStatus,
    RotationPhase,
    RotationStatus,
)
from ..passwords import generate_password
from .claims import ClaimBook
from .common import record_failure, validate_spec
from .database_backup import converge_backup
from .database_consumers import Consumer, all_current, annotation_key, consumer_status, find_consumers, stamp
from .database_policy import (
    LoginChoice,
    Rotation,
    choose_login,
    claim_of,
    conflicting_owner,
    next_rotation_in,
    rotation_due,
    rotation_token,
    secret_repairs,
)
from .database_restore import restoring, step_restore
from .shared_reads import SecretReads

log = logging.getLogger(__name__)

#: A size change smaller than this (and 10 %) is not worth a status write on its own.
SIZE_WRITE_THRESHOLD = 1 << 20
#: Event messages are cut to this many characters (the apiserver refuses much longer ones).
EVENT_MESSAGE_LIMIT = 1024
#: A reconcile (API reads and writes, SQL) that takes longer is cancelled and reported as a Timeout: a silent server
#: must not hold one of the operator's handler slots (AITBC_MAX_WORKERS) for longer.
RECONCILE_TIMEOUT = 60.0
#: Seconds between looks at the consumers while an AlternatingRoles switch waits for them (no watch on other
#: people's workloads; otherwise the drift pass refreshes status.consumers).
CONSUMER_POLL = 5.0
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
    current: str | None = None
    """The password the Secret held when read."""
    read_only: bool = False
    """The read-only role's Secret."""

    def kept(self) -> SecretPlan:
        """The same Secret with its current password: a rotation postponed (AlternatingRoles, a switch pending)."""
        return SecretPlan(self.live, self.current or self.password, None, self.current, self.read_only)


def parse_spec(body: Mapping[str, Any]) -> AitbcDatabaseSpec:
    """The validated spec, or InvalidSpec naming the fields (the CRD should have caught it already)."""
    return validate_spec(AitbcDatabaseSpec, body)


def check_immutable(spec: AitbcDatabaseSpec, status: AitbcDatabaseStatus, name: str) -> None:
    """Names recorded at creation never change (the CRD refuses it; this is the operator's own guard)."""
    for what, recorded, wanted in (
        ("databaseName", status.database_name, spec.effective_database_name),
        ("roleName", status.role_name, spec.effective_role_name),
        ("secret name", status.secret_name, spec.secret_name(name)),
        ("readOnly.roleName", status.read_only.role_name if status.read_only else None,
         spec.read_only_role if spec.read_only.enabled else None),
        ("readOnly.secretName", status.read_only.secret_name if status.read_only else None,
         spec.read_only_secret_name(name) if spec.read_only.enabled else None),
    ):
        if recorded is not None and wanted is not None and recorded != wanted:
            raise errors.InvalidSpec(f"{what} is immutable: it was {recorded!r}, the spec now says {wanted!r}")


async def admin_info(kube: Kube, namespace: str, spec: AitbcDatabaseSpec,
                     reads: SecretReads | None = None) -> ServerAccess:
    """The admin connection, from the referenced Secret (and the CA Secret); ``reads``: shared with other reconciles
    of the moment (else read here)."""
    read = reads.read if reads is not None else kube.read_secret
    ref = spec.server.admin_secret_ref.name
    data = await read(namespace, ref)
    if data is None:
        raise errors.NotFound(f"admin Secret {ref} not found", reason="AdminSecretNotFound")
    ca_path = ca_pem = None
    ca_ref = spec.server.ca_secret_ref
    if ca_ref is not None:
        ca = await read(namespace, ca_ref.name)
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
    reads: SecretReads | None = None,
) -> DatabaseOutcome:
    """One level-based reconcile; errors are recorded in status (but ServerConnecting), then raised for a retry.

    ``claims``: the operator's shared ClaimBook (without one, a first reconcile lists the claims itself); ``reads``:
    its shared reads of admin and CA Secrets (without, read by this reconcile).
    The whole reconcile is cancelled after RECONCILE_TIMEOUT seconds (ReconcileTimeout).
    """
    status = AitbcDatabaseStatus.model_validate(body.get("status") or {})
    try:
        try:
            async with asyncio.timeout(RECONCILE_TIMEOUT):
                return await _converge(kube, pool, body, status, now=now, verify_password=verify_password,
                                       claims=claims or ClaimBook(kube), reads=reads)
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
    reads: SecretReads | None,
) -> DatabaseOutcome:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    spec = parse_spec(body)
    check_immutable(spec, status, name)
    desired = postgres.DesiredDatabase.from_spec(
        spec, namespace=namespace, name=name, read_only_made=status.read_only.role_name if status.read_only else None)
    access = await admin_info(kube, namespace, spec, reads)
    first_time = status.database_name is None
    if first_time:
        me = claim_of(dict(body))
        if me is not None:
            conflict = conflicting_owner(me, await claims.overlapping(me), server=access.server)
            if conflict:
                raise errors.NameConflict(conflict)
    secrets = await _own_secrets(kube, body, spec, status, now=now)
    consumers = await find_consumers(kube, namespace, spec)
    key = annotation_key(name)
    before = [consumer_status(c, key, status.secret_hash or "") for c in consumers]
    choice = _choose_login(spec, status, secrets.main, before, now=now)
    main = secrets.main if choice is None or choice.switch or secrets.main.rotation not in (
        Rotation.TOKEN, Rotation.SCHEDULE) else secrets.main.kept()
    aux, aux_created = _aux_passwords(spec, status, desired, main, secrets.read_only, choice)
    # Read-only on the server: ownership markers, adoption, the admin's privileges and extensions are checked here.
    prepared = await postgres.prepare(
        pool, access.info, desired, password=main.password, password_action=_PASSWORD_ACTIONS[main.rotation],
        verify_password=verify_password, previously_created=not first_time, aux_passwords=aux,
        aux_created=aux_created, salts=status.scram_salts,
    )
    outcome = DatabaseOutcome()
    login = choice.active if choice is not None else None
    data, repaired = await _write_secret(kube, body, spec, access, main, outcome, username=login)
    if secrets.read_only is not None:
        _, ro_repaired = await _write_secret(kube, body, spec, access, secrets.read_only, outcome,
                                             username=desired.read_only)
        repaired += ro_repaired
    result = await postgres.execute(pool, access.info, desired, prepared, password=main.password, aux_passwords=aux)
    outcome.steps = result.steps
    outcome.events.extend(step_events(result.steps, repaired=repaired))
    _count(result, repaired, main.rotation, desired, choice, outcome)
    day2 = await _day2(kube, body, spec, status, consumers, key, secret_hash(data), choice,
                       server_version=result.server_version, ca=access.ca_pem is not None, now=now)
    outcome.events.extend(day2.events)
    await _record_success(kube, body, spec, status, access, result, main.rotation, outcome, day2, now=now)
    return outcome


def _count(result: postgres.ReconcileResult, repaired: tuple[str, ...], rotation: Rotation | None,
           desired: postgres.DesiredDatabase, choice: LoginChoice | None, outcome: DatabaseOutcome) -> None:
    """Metrics and the PasswordRotated Event."""
    for step in result.drift:
        metrics.DRIFT_REPAIRS.labels("AitbcDatabase", step.action.value).inc()
    if repaired:
        metrics.DRIFT_REPAIRS.labels("AitbcDatabase", "Secret").inc()
    if rotation is None:
        return
    metrics.ROTATIONS.labels(rotation.value).inc()
    if rotation in (Rotation.TOKEN, Rotation.SCHEDULE):
        if choice is not None:
            message = (f"Secret switched to login {choice.active} with a new password ({rotation}); "
                       f"{choice.status.previous_login} keeps its password until the consumers run on the new Secret")
        else:
            message = f"password of role {desired.role} rotated ({rotation})"
        outcome.events.append(("PasswordRotated", message, False))


def _choose_login(spec: AitbcDatabaseSpec, status: AitbcDatabaseStatus, main: SecretPlan,
                  consumers: list[ConsumerStatus], *, now: datetime) -> LoginChoice | None:
    """AlternatingRoles: this reconcile's step of the rotation (None for InPlace)."""
    logins = spec.login_roles
    if logins is None:
        return None
    user = decode_secret_data(main.live).get("username") if main.live is not None else None
    grace = timedelta(seconds=parse_duration(spec.password.grace_period))
    return choose_login(logins, status.rotation, user, main.rotation, consumers_current=all_current(consumers),
                        grace=grace, now=now)


def _aux_passwords(spec: AitbcDatabaseSpec, status: AitbcDatabaseStatus, desired: postgres.DesiredDatabase,
                   main: SecretPlan, read_only: SecretPlan | None,
                   choice: LoginChoice | None) -> tuple[dict[str, postgres.AuxPassword], frozenset[str]]:
    """The passwords the logins and the read-only role must accept, what to do with each, and which were made."""
    aux: dict[str, postgres.AuxPassword] = {}
    made: set[str] = set()
    if choice is not None and spec.login_roles is not None:
        if status.rotation is not None:
            made.update(spec.login_roles)
        action = postgres.PasswordAction.ROTATE if choice.switch else _PASSWORD_ACTIONS[main.rotation]
        aux[choice.active] = postgres.AuxPassword(main.password, action)
        for other in spec.login_roles:
            if other != choice.active:
                clear = postgres.PasswordAction.CLEAR if other == choice.retire else postgres.PasswordAction.KEEP
                aux[other] = postgres.AuxPassword(None, clear)
    if desired.read_only is not None:
        if status.read_only is not None:
            made.add(desired.read_only)
        if read_only is not None:
            aux[desired.read_only] = postgres.AuxPassword(read_only.password, _PASSWORD_ACTIONS[read_only.rotation])
    return aux, frozenset(made)


async def _day2(kube: Kube, body: Mapping[str, Any], spec: AitbcDatabaseSpec, status: AitbcDatabaseStatus,
                consumers: list[Consumer], key: str, digest: str, choice: LoginChoice | None, *,
                server_version: str, ca: bool, now: datetime) -> Day2:
    """After the server is converged: consumers stamped, the restore's next step, the backups."""
    namespace = body["metadata"]["namespace"]
    day2 = Day2(secret_hash=digest, rotation=choice.status if choice is not None else None,
                postponed=choice is not None and choice.postponed)
    rolled = await stamp(kube, namespace, consumers, key, digest)
    if rolled:
        day2.events.append(("ConsumersRolled", f"Secret changed: {', '.join(rolled)} rolled", False))
        consumers = await find_consumers(kube, namespace, spec)
    day2.consumers = [consumer_status(c, key, digest) for c in consumers]
    if choice is not None and choice.retire is not None:
        day2.events.append(("LoginRetired", f"password of login {choice.retire} removed: every consumer runs on "
                                            f"login {choice.active}, or the grace period ended", False))
    restore = await step_restore(kube, body, spec, status.restore, consumers, server_version=server_version, ca=ca,
                                 now=now)
    day2.restore = restore.status
    day2.events.extend(restore.events)
    backup = await converge_backup(kube, body, spec, status, server_version=server_version, ca=ca,
                                   suspend=restoring(restore.status), now=now)
    day2.backup = backup.status
    day2.events.extend(backup.events)
    polls = [restore.requeue_after]
    if day2.rotation is not None and day2.rotation.phase is RotationPhase.SWITCHED:
        polls.append(CONSUMER_POLL)  # a switch waits for the consumers (otherwise the drift pass looks at them)
    day2.requeue_after = min((p for p in polls if p is not None), default=None)
    return day2


@dataclass
class Day2:
    """What the day-2 steps after the server's convergence decided, for status and events."""

    secret_hash: str
    rotation: RotationStatus | None
    postponed: bool = False
    consumers: list[ConsumerStatus] = field(default_factory=list)
    restore: RestoreStatus | None = None
    backup: BackupStatus | None = None
    events: list[tuple[str, str, bool]] = field(default_factory=list)
    requeue_after: float | None = None


@dataclass(frozen=True)
class Secrets:
    """The connection Secret and, with readOnly, the read-only role's."""

    main: SecretPlan
    read_only: SecretPlan | None


async def _own_secrets(kube: Kube, body: Mapping[str, Any], spec: AitbcDatabaseSpec, status: AitbcDatabaseStatus, *,
                       now: datetime) -> Secrets:
    """Both Secrets checked (ours or absent) before anything is read from them or any SQL runs."""
    main = await _own_secret(kube, body, spec, status, now=now)
    read_only = None
    if spec.read_only.enabled:
        read_only = await _own_secret(kube, body, spec, status, now=now, read_only=True)
    return Secrets(main, read_only)


async def _own_secret(kube: Kube, body: Mapping[str, Any], spec: AitbcDatabaseSpec, status: AitbcDatabaseStatus,
                      *, now: datetime, read_only: bool = False) -> SecretPlan:
    """The connection Secret (or the read-only one), refused (NameConflict) unless absent or controlled by this
    resource, and the password to go on with: the Secret's, or a new one (first creation, rotation, Secret or
    password gone).

    The ownership check comes before anything is read from the Secret: a foreign Secret's ``password`` key (the
    admin Secret's!) must never become the role's password.
    """
    meta = body["metadata"]
    manifest = connection_secret(body, spec, {}, read_only=read_only)
    live = await kube.get(r.SECRET, meta["namespace"], manifest["metadata"]["name"])
    conflict = ownership_conflict(manifest, live)
    if conflict is not None:
        raise errors.NameConflict(f"{'read-only' if read_only else 'connection'} {conflict}")
    current = decode_secret_data(live).get("password") if live is not None else None
    rotation = rotation_due(spec, status, meta.get("annotations") or {}, have_password=bool(current), now=now)
    if read_only and status.read_only is None and not current:
        rotation = Rotation.INITIAL  # readOnly just enabled: a first creation, not a lost Secret
    password = generate_password(spec.password.length) if rotation is not None or not current else current
    return SecretPlan(live, password, rotation, current, read_only)


async def _write_secret(kube: Kube, body: Mapping[str, Any], spec: AitbcDatabaseSpec, access: ServerAccess,
                        secret: SecretPlan, outcome: DatabaseOutcome, *,
                        username: str | None = None) -> tuple[dict[str, str], tuple[str, ...]]:
    """Write the Secret if it differs; returns its data and what the write repaired (hand edits, a lost Secret)."""
    data = connection_secret_data(spec, server_host=access.info.host, server_port=access.info.port,
                                  password=secret.password, ca_pem=access.ca_pem, username=username)
    manifest = connection_secret(body, spec, data, read_only=secret.read_only)
    ours_last = carries_fingerprint(manifest, secret.live)
    _, written = await kube.apply_if_changed(manifest, secret.live)
    outcome.secret_written = outcome.secret_written or written
    if not written:
        return data, ()
    live_data = decode_secret_data(secret.live) if secret.live is not None else None
    return data, tuple(secret_repairs(manifest["metadata"]["name"], secret.rotation, data, live_data,
                                      ours_last=ours_last))


async def _record_success(kube: Kube, body: Mapping[str, Any], spec: AitbcDatabaseSpec, status: AitbcDatabaseStatus,
                          access: ServerAccess, result: postgres.ReconcileResult, rotation: Rotation | None,
                          outcome: DatabaseOutcome, day2: Day2, *, now: datetime) -> None:
    """Ready, with what exists on the server and what the day-2 steps did; written only if it changed (with a
    resourceVersion precondition when a rotation or restore phase moves: a conflict is a retry, never a lost phase).
    Sets the requeue: the scheduled rotation, or sooner while consumers, Jobs or a restore are being waited for."""
    meta = body["metadata"]
    secret_name = spec.secret_name(meta["name"])
    new = status.model_copy(deep=True)
    new.observed_generation = meta.get("generation")
    new.database_name, new.role_name = spec.effective_database_name, spec.effective_role_name
    new.secret_name = secret_name
    new.server = access.server
    new.server_version = result.server_version
    new.database_size_bytes = _size_to_record(status.database_size_bytes, result.database_size_bytes)
    if not day2.postponed:
        new.observed_rotation_token = rotation_token(spec, meta.get("annotations") or {})
    if rotation is not None or new.last_rotation_time is None:
        new.last_rotation_time = now
    new.scram_salts = _salts(status.scram_salts, result.salts)
    new.secret_hash = day2.secret_hash
    new.consumers = day2.consumers
    new.rotation = day2.rotation
    new.restore, new.backup = day2.restore, day2.backup
    ro = spec.read_only_role or (status.read_only.role_name if status.read_only else None)
    if ro is not None:
        new.read_only = ReadOnlyStatus(role_name=ro, secret_name=spec.read_only_secret_name(meta["name"]),
                                       login=spec.read_only.enabled)
    new.conditions = conditions.summary(
        status.conditions, ready=True, progressing=False, degraded=False, reason="Reconciled",
        message=f"database {new.database_name} owned by role {new.role_name}; Secret {secret_name}",
        now=now, generation=meta.get("generation"),
    )
    phases_moved = (_phase(new.rotation) != _phase(status.rotation)
                    or _phase(new.restore) != _phase(status.restore))
    outcome.status_written = await _write_status(kube, body, new.to_wire(), guarded=phases_moved)
    requeues = [next_rotation_in(spec, new, now=now), day2.requeue_after]
    outcome.requeue_after = min((q for q in requeues if q is not None), default=None)


def _salts(recorded: Mapping[str, str] | None, changed: Mapping[str, str | None]) -> dict[str, str] | None:
    """The salts recorded with the ones this reconcile set (a role left without a password loses its entry)."""
    salts = {**(recorded or {}), **changed}
    kept = {role: salt for role, salt in salts.items() if salt is not None}
    return kept or None


def _phase(state: RotationStatus | RestoreStatus | None) -> tuple[str, str] | None:
    if state is None:
        return None
    return (getattr(state, "name", ""), str(state.phase))


def with_removals(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """``desired`` plus an explicit null for every key of a nested object that it no longer has: a merge patch
    keeps what it does not name (a new restore request must not inherit the last one's ``error``)."""
    out: dict[str, Any] = dict(desired)
    for key, value in current.items():
        if key not in desired:
            out[key] = None
        elif isinstance(value, Mapping) and isinstance(desired[key], Mapping):
            out[key] = with_removals(value, desired[key])
    return out


async def _write_status(kube: Kube, body: Mapping[str, Any], status: dict[str, Any], *, guarded: bool) -> bool:
    """The status, unless unchanged; ``guarded``: with the resourceVersion read, so a concurrent write is a
    Conflict (retried at once) instead of one of two phases silently lost."""
    current = body.get("status") or {}
    status = with_removals(current, status)
    if not guarded:
        return await kube.patch_status(r.AITBC_DATABASE, body, status)
    meta = body["metadata"]
    patch = status
    await kube.merge_patch(r.AITBC_DATABASE, meta["namespace"], meta["name"],
                           {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": patch},
                           subresource="status")
    return True
