"""Decide, purely, what to change on a PostgreSQL server: desired database + observed state -> ordered steps.

No I/O and no psycopg here: ``observe()`` (manager.py) gathers a ``ServerState``, ``plan()`` returns ``Step``s with a
human message each (for Events and logs; never a secret), ``apply()`` turns them into SQL (statements.py).

Ownership marker: the operator writes ``COMMENT ON ROLE/DATABASE ... IS 'aitbc-operator: <owner>'``. Objects that
carry another owner's marker are never touched (NameConflict); existing objects without a marker are adopted (the
migration path from the hand-made setup of the runbook), and ``drop`` only drops objects carrying our own marker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from ..errors import InvalidSpec, NameConflict
from ..models.base import RESERVED_DATABASE_NAMES, RESERVED_ROLE_NAMES
from ..models.database import AitbcDatabaseSpec, check_identifier

MARKER_PREFIX = "aitbc-operator: "
_OWNER_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9./]*[a-z0-9])?$")


@dataclass(frozen=True)
class DesiredDatabase:
    """What one AitbcDatabase wants on the server. Names are validated on construction (InvalidSpec), before any SQL.

    ``owner`` identifies the managing resource (``<namespace>/<name>``); it is written as the ownership marker.
    """

    database: str
    role: str
    owner: str
    connection_limit: int = -1

    def __post_init__(self) -> None:
        try:
            check_identifier(self.database, "databaseName", RESERVED_DATABASE_NAMES)
            check_identifier(self.role, "roleName", RESERVED_ROLE_NAMES)
        except ValueError as exc:
            raise InvalidSpec(str(exc)) from None
        if len(self.owner) > 317 or not _OWNER_PATTERN.fullmatch(self.owner):
            raise InvalidSpec(f"owner {self.owner!r} must look like <namespace>/<name>")
        if not -1 <= self.connection_limit <= 10000:
            raise InvalidSpec(f"connectionLimit {self.connection_limit} must be between -1 and 10000")

    @classmethod
    def from_spec(cls, spec: AitbcDatabaseSpec, *, namespace: str, name: str) -> DesiredDatabase:
        """The desired database of an AitbcDatabase resource."""
        return cls(
            database=spec.effective_database_name,
            role=spec.effective_role_name,
            owner=f"{namespace}/{name}",
            connection_limit=spec.connection_limit,
        )

    @property
    def marker(self) -> str:
        """The comment written on the role and the database."""
        return MARKER_PREFIX + self.owner


@dataclass(frozen=True)
class RoleState:
    """An existing role as the admin sees it."""

    name: str
    can_login: bool
    connection_limit: int
    superuser: bool
    expires: bool
    """Has a VALID UNTIL other than infinity (the password would stop working, or already has)."""
    admin_can_use: bool
    """The admin is a member that can SET ROLE to it and inherits its privileges (needed to own/drop its database)."""
    marker: str | None


@dataclass(frozen=True)
class DatabaseState:
    """An existing database as the admin sees it."""

    name: str
    owner: str
    marker: str | None
    size_bytes: int | None


@dataclass(frozen=True)
class ServerState:
    """A snapshot of everything the plan depends on."""

    version: str
    version_num: int
    admin: str
    role: RoleState | None
    database: DatabaseState | None


class PasswordAction(StrEnum):
    """What to do with the role's password when the role exists."""

    KEEP = "keep"
    """The Secret's password works (or was not checked)."""
    RESET = "reset"
    """The Secret's password was rejected (changed out of band): set it again."""
    ROTATE = "rotate"
    """A new password is being issued."""


class Action(StrEnum):
    """One kind of change; each maps to one SQL statement."""

    CREATE_ROLE = "CreateRole"
    MARK_ROLE = "MarkRole"
    GRANT_ROLE_TO_ADMIN = "GrantRoleToAdmin"
    ENABLE_LOGIN = "EnableLogin"
    SET_CONNECTION_LIMIT = "SetConnectionLimit"
    CLEAR_EXPIRY = "ClearExpiry"
    SET_PASSWORD = "SetPassword"  # noqa: S105 - an action name, not a password
    CREATE_DATABASE = "CreateDatabase"
    SET_DATABASE_OWNER = "SetDatabaseOwner"
    MARK_DATABASE = "MarkDatabase"
    DROP_DATABASE = "DropDatabase"
    DROP_ROLE = "DropRole"


@dataclass(frozen=True)
class Step:
    """One change, with a message for Events and logs (no secrets)."""

    action: Action
    message: str
    drift: bool = False
    """It repairs something changed out of band (worth a Warning Event)."""


def _check_ownership(kind: str, name: str, marker: str | None, desired: DesiredDatabase) -> None:
    if marker is not None and marker.startswith(MARKER_PREFIX) and marker != desired.marker:
        other = marker.removeprefix(MARKER_PREFIX)
        raise NameConflict(f"{kind} {name!r} is managed by {other}, not by {desired.owner}")


def plan(state: ServerState, desired: DesiredDatabase, *, password: PasswordAction = PasswordAction.KEEP,
         previously_created: bool = False) -> tuple[Step, ...]:
    """The steps that bring the server to ``desired``; empty when everything is in sync.

    ``previously_created``: the resource's status says the objects were created before, so a missing one was dropped
    out of band (reported as drift). Raises NameConflict / InvalidSpec when the names cannot be managed.
    """
    if desired.role == state.admin:
        raise InvalidSpec(f"roleName {desired.role!r} is the admin role itself")
    return _role_steps(state, desired, password, previously_created) + _database_steps(
        state, desired, previously_created)


def _role_steps(state: ServerState, desired: DesiredDatabase, password: PasswordAction,
                previously_created: bool) -> tuple[Step, ...]:
    name = desired.role
    role = state.role
    if role is None:
        if previously_created:
            create = Step(Action.CREATE_ROLE, f"role {name} recreated (it was dropped out of band)", drift=True)
        else:
            create = Step(Action.CREATE_ROLE, f"role {name} created")
        return (
            create,
            Step(Action.MARK_ROLE, f"role {name} marked as managed by {desired.owner}"),
            Step(Action.GRANT_ROLE_TO_ADMIN, f"admin {state.admin} made a member of role {name}"),
        )
    _check_ownership("role", name, role.marker, desired)
    if role.superuser:
        raise NameConflict(f"role {name!r} is a superuser; the operator does not manage superusers")
    steps: list[Step] = []
    if role.marker != desired.marker:
        steps.append(Step(Action.MARK_ROLE, f"existing role {name} adopted (marked as managed by {desired.owner})"))
    if not role.admin_can_use:
        steps.append(Step(Action.GRANT_ROLE_TO_ADMIN, f"admin {state.admin} made a member of role {name} again",
                          drift=role.marker is not None))
    if not role.can_login:
        steps.append(Step(Action.ENABLE_LOGIN, f"role {name} allowed to log in again (LOGIN was removed)", drift=True))
    if role.connection_limit != desired.connection_limit:
        steps.append(Step(Action.SET_CONNECTION_LIMIT,
                          f"connection limit of role {name} set to {desired.connection_limit} "
                          f"(was {role.connection_limit})", drift=role.marker is not None))
    if role.expires:
        steps.append(Step(Action.CLEAR_EXPIRY, f"password expiry (VALID UNTIL) of role {name} removed", drift=True))
    if password is PasswordAction.RESET:
        steps.append(Step(Action.SET_PASSWORD,
                          f"password of role {name} reset (the Secret's password no longer logged in)", drift=True))
    elif password is PasswordAction.ROTATE:
        steps.append(Step(Action.SET_PASSWORD, f"password of role {name} rotated"))
    return tuple(steps)


def _database_steps(state: ServerState, desired: DesiredDatabase, previously_created: bool) -> tuple[Step, ...]:
    name = desired.database
    database = state.database
    if database is None:
        if previously_created:
            create = Step(Action.CREATE_DATABASE,
                          f"database {name} recreated EMPTY (it was dropped out of band; its data are gone)",
                          drift=True)
        else:
            create = Step(Action.CREATE_DATABASE, f"database {name} created, owned by {desired.role}")
        return (create, Step(Action.MARK_DATABASE, f"database {name} marked as managed by {desired.owner}"))
    _check_ownership("database", name, database.marker, desired)
    steps: list[Step] = []
    if database.owner != desired.role:
        steps.append(Step(Action.SET_DATABASE_OWNER,
                          f"owner of database {name} set to {desired.role} (was {database.owner})",
                          drift=database.marker is not None))
    if database.marker != desired.marker:
        steps.append(Step(Action.MARK_DATABASE,
                          f"existing database {name} adopted (marked as managed by {desired.owner})"))
    return tuple(steps)


def plan_drop(state: ServerState, desired: DesiredDatabase) -> tuple[Step, ...]:
    """The steps that drop the database (terminating its connections) and the role.

    Only objects carrying this resource's marker are dropped; anything else raises NameConflict.
    """
    role, database = state.role, state.database
    if database is not None and database.marker != desired.marker:
        raise NameConflict(f"database {desired.database!r} is not marked as managed by {desired.owner}; "
                           "refusing to drop it")
    if role is not None and role.marker != desired.marker:
        raise NameConflict(f"role {desired.role!r} is not marked as managed by {desired.owner}; refusing to drop it")
    steps: list[Step] = []
    if role is not None and not role.admin_can_use:
        steps.append(Step(Action.GRANT_ROLE_TO_ADMIN, f"admin {state.admin} made a member of role {desired.role}"))
    if database is not None:
        steps.append(Step(Action.DROP_DATABASE, f"database {desired.database} dropped (connections terminated)"))
    if role is not None:
        steps.append(Step(Action.DROP_ROLE, f"role {desired.role} dropped"))
    return tuple(steps)
