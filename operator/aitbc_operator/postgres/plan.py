"""Decide, purely, what to change on a PostgreSQL server: desired database + observed state -> ordered steps.

No I/O and no psycopg here: ``observe()`` (manager.py) gathers a ``ServerState``, ``plan()`` returns ``Step``s with a
human message each (for Events and logs; never a secret), ``apply()`` turns them into SQL (statements.py).

Ownership marker: the operator writes ``COMMENT ON ROLE/DATABASE ... IS 'aitbc-operator: <owner>'``. Objects that
carry another owner's marker are never touched (NameConflict); existing objects without a marker are adopted only
when the resource asks for it (``spec.adopt``: the migration path from the hand-made setup of the runbook), and never
a privileged role or a database owned by one (AdoptionRefused); ``drop`` only drops objects carrying our own marker.

Privileges first: the plan is checked against the admin's own attributes (``check_privileges``) before any step
runs, so a missing privilege is an InsufficientPrivilege naming it, with nothing half-made.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from ..errors import AdoptionRefused, InsufficientPrivilege, InvalidSpec, NameConflict
from ..models.base import RESERVED_DATABASE_NAMES, RESERVED_ROLE_NAMES
from ..models.database import AitbcDatabaseSpec, Ensure, check_identifier

MARKER_PREFIX = "aitbc-operator: "
_OWNER_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9./]*[a-z0-9])?$")


@dataclass(frozen=True)
class DesiredExtension:
    """An extension the database must (present) or must not (absent) have."""

    name: str
    version: str | None = None
    present: bool = True


@dataclass(frozen=True)
class DesiredSchema:
    """A schema owned by the owner role (present) or gone (absent)."""

    name: str
    present: bool = True


@dataclass(frozen=True)
class DesiredDatabase:
    """What one AitbcDatabase wants on the server. Names are validated on construction (InvalidSpec), before any SQL.

    ``owner`` identifies the managing resource (``<namespace>/<name>``); it is written as the ownership marker.
    """

    database: str
    role: str
    owner: str
    connection_limit: int = -1
    adopt: bool = False
    """Existing objects without the marker may be taken over (spec.adopt)."""
    owner_login: bool = True
    """The owner role logs in itself (InPlace); False with AlternatingRoles: it is NOLOGIN, its logins act as it."""
    logins: tuple[str, ...] = ()
    """AlternatingRoles: the two login roles, members of the owner role, whose sessions act as it (SET role)."""
    read_only: str | None = None
    """The read-only login role, if any."""
    read_only_login: bool = True
    """False when readOnly was disabled after the role was made: it stays, without LOGIN."""
    extensions: tuple[DesiredExtension, ...] = ()
    schemas: tuple[DesiredSchema, ...] = ()

    def __post_init__(self) -> None:
        try:
            check_identifier(self.database, "databaseName", RESERVED_DATABASE_NAMES)
            check_identifier(self.role, "roleName", RESERVED_ROLE_NAMES)
            for other in self.aux_roles:
                check_identifier(other, "role name", RESERVED_ROLE_NAMES)
        except ValueError as exc:
            raise InvalidSpec(str(exc)) from None
        if len(self.owner) > 317 or not _OWNER_PATTERN.fullmatch(self.owner):
            raise InvalidSpec(f"owner {self.owner!r} must look like <namespace>/<name>")
        if not -1 <= self.connection_limit <= 10000:
            raise InvalidSpec(f"connectionLimit {self.connection_limit} must be between -1 and 10000")

    @classmethod
    def from_spec(cls, spec: AitbcDatabaseSpec, *, namespace: str, name: str,
                  read_only_made: str | None = None) -> DesiredDatabase:
        """The desired database of an AitbcDatabase resource. ``read_only_made``: the read-only role recorded in
        status (kept, without LOGIN, when readOnly was disabled since)."""
        return cls(
            database=spec.effective_database_name,
            role=spec.effective_role_name,
            owner=f"{namespace}/{name}",
            connection_limit=spec.connection_limit,
            adopt=spec.adopt,
            owner_login=not spec.alternating,
            logins=spec.login_roles or (),
            read_only=spec.read_only_role or read_only_made,
            read_only_login=spec.read_only.enabled,
            extensions=tuple(DesiredExtension(e.name, e.version, e.ensure is Ensure.PRESENT) for e in spec.extensions),
            schemas=tuple(DesiredSchema(s.name, s.ensure is Ensure.PRESENT) for s in spec.schemas),
        )

    @property
    def aux_roles(self) -> tuple[str, ...]:
        """The roles besides the owner role: the logins, then the read-only role."""
        return (*self.logins, *((self.read_only,) if self.read_only else ()))

    @property
    def has_contents(self) -> bool:
        """Something must be checked inside the database (extensions, schemas, read-only grants)."""
        return bool(self.extensions or self.schemas or (self.read_only and self.read_only_login))

    @property
    def marker(self) -> str:
        """The comment written on the role and the database."""
        return MARKER_PREFIX + self.owner


#: Role attributes the operator never hands to an application: a role holding one is never adopted, nor a
#: database owned by one.
PRIVILEGED_ATTRIBUTES = ("SUPERUSER", "REPLICATION", "BYPASSRLS", "CREATEROLE")


@dataclass(frozen=True)
class AdminState:
    """The admin role's own attributes: what it may do on this server (read before any DDL)."""

    name: str
    superuser: bool = False
    createrole: bool = True
    createdb: bool = True
    inherit: bool = True
    """It holds the privileges of the roles it is a member of (needed to act as the owner of their databases)."""
    self_grant: bool = False
    """PostgreSQL 16+: ``createrole_self_grant`` includes SET and INHERIT, so a role it creates is usable at once."""


@dataclass(frozen=True)
class RoleState:
    """An existing role as the admin sees it."""

    name: str
    can_login: bool
    connection_limit: int
    expires: bool
    """Has a VALID UNTIL other than infinity (the password would stop working, or already has)."""
    admin_can_use: bool
    """The admin is a member that can SET ROLE to it and inherits its privileges (needed to own/drop its database)."""
    marker: str | None
    attributes: tuple[str, ...] = ()
    """Which of PRIVILEGED_ATTRIBUTES it has."""
    admin_option: bool = True
    """PostgreSQL 16+: the admin holds the ADMIN option on it, without which CREATEROLE cannot alter it (15: always
    true, CREATEROLE alone manages every non-superuser role)."""
    privileged_memberships: tuple[str, ...] = ()
    """Roles it is a member of (directly or not) that are predefined (``pg_*``) or hold a privileged attribute."""


@dataclass(frozen=True)
class DatabaseState:
    """An existing database as the admin sees it."""

    name: str
    owner: str
    marker: str | None
    size_bytes: int | None
    owner_attributes: tuple[str, ...] = ()
    """Which of PRIVILEGED_ATTRIBUTES its owner has."""
    admin_is_owner: bool = True
    """The admin holds the owner's privileges (it is the owner or a member of it): needed to alter or drop it."""


@dataclass(frozen=True)
class ServerState:
    """A snapshot of everything the plan depends on."""

    version: str
    version_num: int
    admin: AdminState
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
    REISSUE = "reissue"
    """The Secret or its password was gone: a new password was written to the Secret, set it (drift)."""
    CLEAR = "clear"
    """Remove the password (AlternatingRoles: the previous login is retired; the standby login has none)."""


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
    DISABLE_LOGIN = "DisableLogin"
    CLEAR_PASSWORD = "ClearPassword"  # noqa: S105 - an action name
    GRANT_MEMBERSHIP = "GrantMembership"
    SET_ACTS_AS = "SetActsAs"
    # inside the database, as the owner role
    CREATE_EXTENSION = "CreateExtension"
    UPDATE_EXTENSION = "UpdateExtension"
    DROP_EXTENSION = "DropExtension"
    CREATE_SCHEMA = "CreateSchema"
    DROP_SCHEMA = "DropSchema"
    GRANT_CONNECT = "GrantConnect"
    GRANT_USAGE = "GrantUsage"
    GRANT_SELECT = "GrantSelect"
    DEFAULT_PRIVILEGES = "DefaultPrivileges"


#: What each action attempts, for error messages ("create database x owned by y: permission denied ...").
_ATTEMPTS = {
    Action.CREATE_ROLE: "create role {role}",
    Action.MARK_ROLE: "mark role {role} as managed by {owner}",
    Action.GRANT_ROLE_TO_ADMIN: "make the admin a member of role {role}",
    Action.ENABLE_LOGIN: "allow role {role} to log in",
    Action.SET_CONNECTION_LIMIT: "set the connection limit of role {role}",
    Action.CLEAR_EXPIRY: "remove the password expiry of role {role}",
    Action.SET_PASSWORD: "set the password of role {role}",
    Action.CREATE_DATABASE: "create database {database} owned by {role}",
    Action.SET_DATABASE_OWNER: "make role {role} the owner of database {database}",
    Action.MARK_DATABASE: "mark database {database} as managed by {owner}",
    Action.DROP_DATABASE: "drop database {database}",
    Action.DROP_ROLE: "drop role {role}",
    Action.DISABLE_LOGIN: "remove LOGIN from role {role}",
    Action.CLEAR_PASSWORD: "remove the password of role {role}",
    Action.GRANT_MEMBERSHIP: "make role {role} a member of role {owner_role}",
    Action.SET_ACTS_AS: "make sessions of role {role} act as role {owner_role} (ALTER ROLE ... SET role)",
    Action.CREATE_EXTENSION: "create extension {target} in database {database}",
    Action.UPDATE_EXTENSION: "update extension {target} in database {database}",
    Action.DROP_EXTENSION: "drop extension {target} in database {database}",
    Action.CREATE_SCHEMA: "create schema {target} in database {database}",
    Action.DROP_SCHEMA: "drop schema {target} in database {database}",
    Action.GRANT_CONNECT: "grant CONNECT on database {database} to {role}",
    Action.GRANT_USAGE: "grant USAGE on schema {target} to {role}",
    Action.GRANT_SELECT: "grant SELECT on the tables of schema {target} to {role}",
    Action.DEFAULT_PRIVILEGES: "grant {role} SELECT on the tables {owner_role} creates later",
}
#: Actions on the role (they need CREATEROLE, and on 16+ the ADMIN option on an existing role).
_ROLE_ACTIONS = frozenset({Action.CREATE_ROLE, Action.MARK_ROLE, Action.GRANT_ROLE_TO_ADMIN, Action.ENABLE_LOGIN,
                           Action.SET_CONNECTION_LIMIT, Action.CLEAR_EXPIRY, Action.SET_PASSWORD, Action.DROP_ROLE,
                           Action.DISABLE_LOGIN, Action.CLEAR_PASSWORD, Action.GRANT_MEMBERSHIP,
                           Action.SET_ACTS_AS})
#: Actions run inside the database, as the owner role (SET ROLE), after the server-level ones.
CONTENT_ACTIONS = frozenset({Action.CREATE_EXTENSION, Action.UPDATE_EXTENSION, Action.DROP_EXTENSION,
                             Action.CREATE_SCHEMA, Action.DROP_SCHEMA, Action.GRANT_CONNECT, Action.GRANT_USAGE,
                             Action.GRANT_SELECT, Action.DEFAULT_PRIVILEGES})
#: Actions that need CREATEDB.
_CREATEDB_ACTIONS = frozenset({Action.CREATE_DATABASE, Action.SET_DATABASE_OWNER})
#: Actions on an existing database (they need the owner's privileges).
_OWNER_ACTIONS = frozenset({Action.SET_DATABASE_OWNER, Action.MARK_DATABASE, Action.DROP_DATABASE})


@dataclass(frozen=True)
class Step:
    """One change, with a message for Events and logs (no secrets)."""

    action: Action
    message: str
    """What was done, once it is (e.g. "database x created, owned by y")."""
    drift: bool = False
    """It repairs something changed out of band (worth a Warning Event)."""
    role: str | None = None
    """The role it concerns, when not the owner role (a login or the read-only role)."""
    target: str | None = None
    """The extension or schema it concerns."""
    version: str | None = None
    """CREATE/UPDATE EXTENSION: the version asked for."""

    def attempt(self, desired: DesiredDatabase) -> str:
        """What the step tries to do, for an error message (e.g. "create database x owned by y")."""
        return _ATTEMPTS[self.action].format(role=self.role or desired.role, database=desired.database,
                                             owner=desired.owner, owner_role=desired.role, target=self.target)


def _check_ownership(kind: str, name: str, marker: str | None, desired: DesiredDatabase) -> None:
    if marker is not None and marker.startswith(MARKER_PREFIX) and marker != desired.marker:
        other = marker.removeprefix(MARKER_PREFIX)
        raise NameConflict(f"{kind} {name!r} is managed by {other}, not by {desired.owner}")


def _check_adoptable(kind: str, name: str, desired: DesiredDatabase, refusal: str | None) -> None:
    """An existing object without our marker: adopted only when asked, and never a privileged one."""
    if not desired.adopt:
        raise NameConflict(
            f"{kind} {name!r} already exists and was not created by the operator (no '{MARKER_PREFIX}...' comment); "
            f"set spec.adopt: true to take it over (see docs/security.md)"
        )
    if refusal is not None:
        raise AdoptionRefused(f"{kind} {name!r} is not adopted even with spec.adopt: {refusal}")


def _role_refusal(role: RoleState) -> str | None:
    if role.attributes:
        return (f"it has {', '.join(role.attributes)} (the operator never hands SUPERUSER, REPLICATION, BYPASSRLS or "
                "CREATEROLE to an application)")
    if role.privileged_memberships:
        return (f"it is a member of {', '.join(role.privileged_memberships)}, whose privileges would reach the "
                "application")
    return None


def _database_refusal(database: DatabaseState, desired: DesiredDatabase) -> str | None:
    if not database.owner_attributes:
        return None
    return (f"its owner {database.owner} has {', '.join(database.owner_attributes)}; a superuser can hand it over "
            f"first: ALTER DATABASE {database.name} OWNER TO {desired.role}")


def plan(state: ServerState, desired: DesiredDatabase, *, password: PasswordAction = PasswordAction.KEEP,
         previously_created: bool = False) -> tuple[Step, ...]:
    """The steps that bring the server to ``desired``; empty when everything is in sync.

    ``previously_created``: the resource's status says the objects were created before, so a missing one was dropped
    out of band (reported as drift). Raises NameConflict / AdoptionRefused / InvalidSpec when the names cannot be
    managed, InsufficientPrivilege when the admin could not perform a step (before any of them runs).
    """
    if desired.role == state.admin.name:
        raise InvalidSpec(f"roleName {desired.role!r} is the admin role itself")
    steps = _role_steps(state, desired, password, previously_created) + _database_steps(
        state, desired, previously_created)
    check_privileges(state, desired, steps)
    return steps


def _role_steps(state: ServerState, desired: DesiredDatabase, password: PasswordAction,
                previously_created: bool) -> tuple[Step, ...]:
    name = desired.role
    role = state.role
    admin = state.admin.name
    if role is None:
        if previously_created:
            create = Step(Action.CREATE_ROLE, f"role {name} recreated (it was dropped out of band)", drift=True)
        else:
            create = Step(Action.CREATE_ROLE, f"role {name} created")
        mark = Step(Action.MARK_ROLE, f"role {name} marked as managed by {desired.owner}")
        if state.admin.self_grant:  # 16+: createrole_self_grant already makes the admin a usable member
            return (create, mark)
        return (create, mark, Step(Action.GRANT_ROLE_TO_ADMIN, f"admin {admin} made a member of role {name}"))
    _check_ownership("role", name, role.marker, desired)
    if role.marker != desired.marker:
        _check_adoptable("role", name, desired, _role_refusal(role))
    elif "SUPERUSER" in role.attributes:
        raise NameConflict(f"role {name!r} is a superuser; the operator does not manage superusers")
    steps: list[Step] = []
    if role.marker != desired.marker:
        steps.append(Step(Action.MARK_ROLE, f"existing role {name} adopted (marked as managed by {desired.owner})"))
    if not role.admin_can_use:
        steps.append(Step(Action.GRANT_ROLE_TO_ADMIN, f"admin {admin} made a member of role {name} again",
                          drift=role.marker is not None))
    if not role.can_login and desired.owner_login:
        steps.append(Step(Action.ENABLE_LOGIN, f"role {name} allowed to log in again (LOGIN was removed)", drift=True))
    if role.can_login and not desired.owner_login:
        steps.append(Step(Action.DISABLE_LOGIN, f"LOGIN removed from role {name} (with AlternatingRoles only its "
                                                "logins log in)", drift=role.marker is not None))
    if role.connection_limit != desired.connection_limit:
        steps.append(Step(Action.SET_CONNECTION_LIMIT,
                          f"connection limit of role {name} set to {desired.connection_limit} "
                          f"(was {role.connection_limit})", drift=role.marker is not None))
    if role.expires:
        steps.append(Step(Action.CLEAR_EXPIRY, f"password expiry (VALID UNTIL) of role {name} removed", drift=True))
    password_step = _password_step(name, password)
    if password_step is not None:
        steps.append(password_step)
    return tuple(steps)


def _password_step(role: str, password: PasswordAction) -> Step | None:
    match password:
        case PasswordAction.RESET:
            return Step(Action.SET_PASSWORD, f"password of role {role} reset (the Secret's password no longer logged "
                                             "in)", drift=True)
        case PasswordAction.REISSUE:
            return Step(Action.SET_PASSWORD, f"password of role {role} reset to the new one in its Secret",
                        drift=True)
        case PasswordAction.ROTATE:
            return Step(Action.SET_PASSWORD, f"password of role {role} rotated")
        case PasswordAction.CLEAR:
            return Step(Action.CLEAR_PASSWORD, f"password of role {role} removed (retired login)")
    return None


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
    if database.marker != desired.marker:
        _check_adoptable("database", name, desired, _database_refusal(database, desired))
    steps: list[Step] = []
    if database.owner != desired.role:
        steps.append(Step(Action.SET_DATABASE_OWNER,
                          f"owner of database {name} set to {desired.role} (was {database.owner})",
                          drift=database.marker is not None))
    if database.marker != desired.marker:
        steps.append(Step(Action.MARK_DATABASE,
                          f"existing database {name} adopted (marked as managed by {desired.owner})"))
    return tuple(steps)


@dataclass(frozen=True)
class AuxRoleState:
    """An existing login or read-only role as the admin sees it."""

    name: str
    can_login: bool
    connection_limit: int
    expires: bool
    marker: str | None
    member_of_owner: bool
    """It is a member of the owner role (logins must be)."""
    acts_as: str | None
    """The role its sessions SET at login (``ALTER ROLE ... SET role``), if any."""
    admin_option: bool = True
    """PostgreSQL 16+: the admin holds the ADMIN option on it (15: always true)."""
    attributes: tuple[str, ...] = ()
    """Which of PRIVILEGED_ATTRIBUTES it has."""


@dataclass(frozen=True)
class AuxRoles:
    """The states of the aux roles (None: missing) and what to do with each one's password."""

    states: Mapping[str, AuxRoleState | None] = field(default_factory=dict)
    passwords: Mapping[str, PasswordAction] = field(default_factory=dict)
    previously_created: frozenset[str] = frozenset()
    """Roles the resource's status says were made before (a missing one was dropped out of band)."""


def plan_aux_roles(aux: AuxRoles, desired: DesiredDatabase) -> tuple[Step, ...]:
    """The steps for the logins (AlternatingRoles) and the read-only role: created, marked, kept as desired.

    These names are the operator's own derivations: an existing role of such a name without our marker is never
    adopted (NameConflict), whatever spec.adopt says.
    """
    steps: list[Step] = []
    for name in desired.aux_roles:
        state = aux.states.get(name)
        login = name in desired.logins or desired.read_only_login
        action = aux.passwords.get(name, PasswordAction.KEEP)
        steps.extend(_aux_role_steps(name, state, desired, login=login, password=action,
                                     recreated=name in aux.previously_created))
    return tuple(steps)


def _aux_role_steps(name: str, state: AuxRoleState | None, desired: DesiredDatabase, *, login: bool,
                    password: PasswordAction, recreated: bool) -> list[Step]:
    member = name in desired.logins
    what = "login role" if member else "read-only role"
    if state is None:
        created = (f"{what} {name} recreated (it was dropped out of band)" if recreated
                   else f"{what} {name} created")
        steps = [Step(Action.CREATE_ROLE, created, drift=recreated, role=name),
                 Step(Action.MARK_ROLE, f"role {name} marked as managed by {desired.owner}", role=name)]
        if member:
            steps += [Step(Action.GRANT_MEMBERSHIP, f"role {name} made a member of role {desired.role}", role=name),
                      Step(Action.SET_ACTS_AS, f"sessions of role {name} act as role {desired.role}", role=name)]
        return steps
    if state.marker != desired.marker:
        _check_ownership("role", name, state.marker, desired)
        raise NameConflict(f"role {name!r} already exists and was not created by the operator for {desired.owner}: "
                           f"it is not taken over (rename or drop it)")
    if "SUPERUSER" in state.attributes:
        raise NameConflict(f"role {name!r} is a superuser; the operator does not manage superusers")
    steps = []
    if state.can_login != login:
        action = Action.ENABLE_LOGIN if login else Action.DISABLE_LOGIN
        change = "allowed to log in again" if login else "no longer allowed to log in"
        steps.append(Step(action, f"role {name} {change}", drift=login, role=name))
    if state.connection_limit != desired.connection_limit:
        steps.append(Step(Action.SET_CONNECTION_LIMIT, f"connection limit of role {name} set to "
                          f"{desired.connection_limit} (was {state.connection_limit})", drift=True, role=name))
    if state.expires:
        steps.append(Step(Action.CLEAR_EXPIRY, f"password expiry of role {name} removed", drift=True, role=name))
    if member and not state.member_of_owner:
        steps.append(Step(Action.GRANT_MEMBERSHIP, f"role {name} made a member of role {desired.role} again",
                          drift=True, role=name))
    if member and state.acts_as != desired.role:
        steps.append(Step(Action.SET_ACTS_AS, f"sessions of role {name} act as role {desired.role} again",
                          drift=True, role=name))
    step = _password_step(name, password)
    if step is not None:
        steps.append(Step(step.action, step.message, drift=step.drift, role=name))
    return steps


def check_aux_privileges(state: ServerState, aux: AuxRoles, desired: DesiredDatabase,
                         steps: tuple[Step, ...]) -> None:
    """The aux role steps need CREATEROLE, and on 16+ the ADMIN option on each existing aux role."""
    admin = state.admin
    if admin.superuser or not steps:
        return
    missing: list[str] = []
    if not admin.createrole:
        missing.append(f"CREATEROLE (to {steps[0].attempt(desired)})")
    if state.version_num >= 160000:
        for step in steps:
            existing = aux.states.get(step.role or "")
            if existing is not None and not existing.admin_option:
                missing.append(f"the ADMIN option on role {existing.name} (to {step.attempt(desired)})")
                break
    if missing:
        raise InsufficientPrivilege(f"admin {admin.name} lacks {'; '.join(missing)}: nothing was changed")


def check_privileges(state: ServerState, desired: DesiredDatabase, steps: tuple[Step, ...]) -> None:
    """Refuse, before any of them runs, steps the admin has no privilege for (InsufficientPrivilege naming it).

    The rules of the server's major: CREATEROLE for every role change, CREATEDB to create a database or give it a
    new owner, the owner's privileges (membership with INHERIT) to alter or drop an existing database, and on
    PostgreSQL 16+ the ADMIN option on an existing role (15: CREATEROLE reaches every non-superuser role).
    """
    admin = state.admin
    if admin.superuser or not steps:
        return
    missing: list[str] = []

    def first(actions: frozenset[Action]) -> Step | None:
        return next((step for step in steps if step.action in actions), None)

    role_step, createdb_step, owner_step = first(_ROLE_ACTIONS), first(_CREATEDB_ACTIONS), first(_OWNER_ACTIONS)
    if role_step is not None and not admin.createrole:
        missing.append(f"CREATEROLE (to {role_step.attempt(desired)})")
    if createdb_step is not None and not admin.createdb:
        missing.append(f"CREATEDB (to {createdb_step.attempt(desired)})")
    role = state.role
    if role_step is not None and role is not None and not role.admin_option and state.version_num >= 160000:
        missing.append(f"the ADMIN option on role {role.name} (to {role_step.attempt(desired)}; on PostgreSQL 16+ a "
                       f"CREATEROLE role manages only the roles it created or was granted WITH ADMIN OPTION: "
                       f"GRANT {role.name} TO {admin.name} WITH ADMIN OPTION)")
    if (owner_step is not None or createdb_step is not None) and not admin.inherit:
        missing.append(f"INHERIT (it must hold the privileges of role {desired.role} to own its database: "
                       f"ALTER ROLE {admin.name} INHERIT)")
    database = state.database
    if (owner_step is not None and database is not None and not database.admin_is_owner
            and database.owner != desired.role):
        missing.append(f"membership in role {database.owner}, the owner of database {database.name} "
                       f"(to {owner_step.attempt(desired)})")
    if missing:
        raise InsufficientPrivilege(f"admin {admin.name} lacks {'; '.join(missing)}: nothing was changed")


def plan_drop(state: ServerState, desired: DesiredDatabase,
              aux: Mapping[str, AuxRoleState | None] | None = None) -> tuple[Step, ...]:
    """The steps that drop the database (terminating its connections), the logins and read-only role, then the role.

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
        steps.append(Step(Action.GRANT_ROLE_TO_ADMIN,
                          f"admin {state.admin.name} made a member of role {desired.role}"))
    if database is not None:
        steps.append(Step(Action.DROP_DATABASE, f"database {desired.database} dropped (connections terminated)"))
    for name, other in (aux or {}).items():
        if other is None:
            continue
        if other.marker != desired.marker:
            raise NameConflict(f"role {name!r} is not marked as managed by {desired.owner}; refusing to drop it")
        steps.append(Step(Action.DROP_ROLE, f"role {name} dropped", role=name))
    if role is not None:
        steps.append(Step(Action.DROP_ROLE, f"role {desired.role} dropped"))
    steps_t = tuple(steps)
    check_privileges(state, desired, steps_t)
    return steps_t
