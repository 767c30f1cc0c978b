"""Pure decisions for AitbcDatabase: when to rotate the password, what a Secret write repairs, and who owns a
database/role name on a server."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from ..models.base import parse_duration
from ..models.database import AitbcDatabaseSpec, AitbcDatabaseStatus, RotationPhase, RotationStatus

#: Annotation whose change rotates the password now (same effect as changing spec.password.rotationToken).
ROTATE_ANNOTATION = "aitbc.io/rotate-password"
#: Annotation that lets a finalizer go without dropping anything (e.g. when the server is gone for good).
RELEASE_ANNOTATION = "aitbc.io/release-without-drop"


class Rotation(StrEnum):
    """Why a new password is generated."""

    INITIAL = "initial"
    TOKEN = "token"  # noqa: S105 (a trigger name, not a password)
    SCHEDULE = "schedule"
    LOST = "lost"
    """The Secret (or its password) is gone after the objects were created: a repair, worth a Warning."""


def rotation_token(spec: AitbcDatabaseSpec, annotations: Mapping[str, str]) -> str:
    """The combined on-demand rotation token (spec field and annotation): a change of either rotates."""
    return f"{spec.password.rotation_token or ''}|{annotations.get(ROTATE_ANNOTATION, '')}"


def rotation_due(
    spec: AitbcDatabaseSpec,
    status: AitbcDatabaseStatus,
    annotations: Mapping[str, str],
    *,
    have_password: bool,
    now: datetime,
) -> Rotation | None:
    """Whether to generate a new password, and why; None keeps the current one."""
    if not have_password:
        return Rotation.INITIAL if status.database_name is None else Rotation.LOST
    if status.observed_rotation_token is not None and status.observed_rotation_token != rotation_token(
        spec, annotations
    ):
        return Rotation.TOKEN
    if spec.password.rotation_period and status.last_rotation_time is not None:
        period = timedelta(seconds=parse_duration(spec.password.rotation_period))
        if now - status.last_rotation_time >= period:
            return Rotation.SCHEDULE
    return None


def secret_repairs(name: str, rotation: Rotation | None, desired: Mapping[str, str], live: Mapping[str, str] | None,
                   *, ours_last: bool) -> list[str]:
    """What writing the connection Secret repairs, for a DriftRepaired Warning (empty: nothing was changed by hand).

    ``desired``/``live``: the Secret's data to write and as read (None: absent); ``ours_last``: the live Secret was
    last applied from this very manifest, so a difference is someone else's edit. Call only when the write happens.
    """
    if rotation is Rotation.LOST:
        if live is None:
            return [f"Secret {name} was deleted: re-created with a new password"]
        return [f"Secret {name} had lost its password: a new one was written"]
    if live is None or not ours_last:
        return []
    edited = sorted(key for key, value in desired.items() if live.get(key) != value)
    if edited:
        return [f"Secret {name}: {', '.join(edited)} changed by someone else, put back"]
    return [f"Secret {name}: labels or annotations changed by someone else, put back"]


def next_rotation_in(spec: AitbcDatabaseSpec, status: AitbcDatabaseStatus, *, now: datetime) -> float | None:
    """Seconds until the scheduled rotation (None: no schedule)."""
    if not spec.password.rotation_period or status.last_rotation_time is None:
        return None
    period = timedelta(seconds=parse_duration(spec.password.rotation_period))
    return max(0.0, (status.last_rotation_time + period - now).total_seconds())


#: Annotation whose change takes an on-demand dump (its value is the token: a new value, a new dump).
BACKUP_ANNOTATION = "aitbc.io/backup-now"


@dataclass(frozen=True)
class LoginChoice:
    """AlternatingRoles: which login the Secret holds after this reconcile, and what happens to the roles."""

    active: str
    """The login the Secret holds (and whose password it carries)."""
    switch: bool
    """The Secret switches to ``active`` with a new password in this reconcile."""
    retire: str | None
    """The previous login whose password is removed in this reconcile."""
    status: RotationStatus
    """The rotation status after this reconcile."""
    postponed: bool = False
    """A rotation was asked for while a switch waits for the consumers: it runs once that one is done."""


def choose_login(logins: tuple[str, str], status: RotationStatus | None, secret_user: str | None,
                 rotation: Rotation | None, *, consumers_current: bool, grace: timedelta,
                 now: datetime) -> LoginChoice:
    """One transition of the AlternatingRoles rotation (pure).

    - Idle + a rotation (token, schedule): switch the Secret to the other login (new password; the previous one keeps
      its password: consumers not rolled yet still connect) -> Switched.
    - Switched: once every consumer runs on the new Secret, or ``grace`` after the switch, remove the previous login's
      password -> Idle. A rotation asked for meanwhile is postponed until then.
    - First creation or a lost Secret: the login the Secret named (``_a`` at first) gets a new password.
    The Secret's ``username`` says which login is active (the Secret is the source of truth, as for passwords);
    without one (deleted), the login status recorded: it gets a new password, the other stays as it was.
    """
    recorded = status.active_login if status is not None and status.active_login in logins else logins[0]
    current = secret_user if secret_user in logins else recorded  # a Secret deleted: the login it held
    other = logins[1] if current == logins[0] else logins[0]
    state = status or RotationStatus(active_login=current)
    if state.phase is RotationPhase.SWITCHED and state.previous_login in logins:
        due = state.switched_at is None or now - state.switched_at >= grace
        if consumers_current or due:
            done = RotationStatus(phase=RotationPhase.IDLE, active_login=current)
            return LoginChoice(current, False, state.previous_login, done, postponed=rotation is not None)
        return LoginChoice(current, False, None, state, postponed=rotation in (Rotation.TOKEN, Rotation.SCHEDULE))
    if rotation in (Rotation.TOKEN, Rotation.SCHEDULE):
        switched = RotationStatus(phase=RotationPhase.SWITCHED, active_login=other, previous_login=current,
                                  switched_at=now)
        return LoginChoice(other, True, None, switched)
    return LoginChoice(current, False, None, RotationStatus(active_login=current))


@dataclass(frozen=True)
class Claim:
    """What one AitbcDatabase claims on a server."""

    uid: str
    namespace: str
    name: str
    server: str | None
    admin_secret: tuple[str, str]
    database: str
    role: str
    created: str
    deleting: bool
    roles: tuple[str, ...] = ()
    """Every role it claims: the role, the AlternatingRoles logins, the read-only role (empty: just ``role``)."""

    @property
    def ref(self) -> str:
        """namespace/name, for messages."""
        return f"{self.namespace}/{self.name}"


def claim_of(obj: Mapping[str, Any]) -> Claim | None:
    """The claim of an AitbcDatabase object (None when its spec is not valid: it claims nothing)."""
    meta = obj.get("metadata", {})
    try:
        spec = AitbcDatabaseSpec.model_validate(obj.get("spec", {}))
    except ValueError:
        return None
    status = AitbcDatabaseStatus.model_validate(obj.get("status") or {})
    return Claim(
        uid=meta.get("uid", ""),
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        server=status.server,
        admin_secret=(meta.get("namespace", ""), spec.server.admin_secret_ref.name),
        database=status.database_name or spec.effective_database_name,
        role=status.role_name or spec.effective_role_name,
        created=meta.get("creationTimestamp", ""),
        deleting=bool(meta.get("deletionTimestamp")),
        roles=spec.managed_roles(),
    )


def _same_server(a: Claim, b: Claim, server: str) -> bool:
    """Same server: by recorded host:port, or (before any status) by the same admin Secret."""
    return b.server == server or (b.server is None and a.admin_secret == b.admin_secret)


def claimed_names(claim: Claim) -> frozenset[str]:
    """What the claim takes, as messages name it: ``database d`` and ``role r`` for each of its roles."""
    return frozenset((f"database {claim.database}", *(f"role {role}" for role in claim.roles or (claim.role,))))


def _overlap(a: Claim, b: Claim) -> list[str]:
    return sorted(claimed_names(a) & claimed_names(b))  # "database ..." sorts before "role ..."


def conflicting_owner(me: Claim, others: Iterable[Claim], *, server: str) -> str | None:
    """A message when an older AitbcDatabase already claims our database or role on this server, else None.

    Older means created first (ties broken by uid), so of two racing resources exactly one wins.
    """
    for other in sorted(others, key=lambda c: (c.created, c.uid)):
        if other.uid == me.uid or not _same_server(me, other, server):
            continue
        if (other.created, other.uid) >= (me.created, me.uid):
            continue
        clash = _overlap(me, other)
        if clash:
            return f"{' and '.join(clash)} on {server} already belong to AitbcDatabase {other.ref}"
    return None


def users_blocking_drop(me: Claim, others: Iterable[Claim], *, server: str) -> list[str]:
    """Other AitbcDatabases (not being deleted) that use our database or role: dropping is refused while any exist."""
    return sorted(
        f"{other.ref} ({' and '.join(_overlap(me, other))})"
        for other in others
        if other.uid != me.uid and not other.deleting and _same_server(me, other, server) and _overlap(me, other)
    )
