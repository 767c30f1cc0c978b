"""Reconcile one AitbcDatabase on its PostgreSQL server: observe -> plan (pure, checked) -> apply. The API handlers
call: ``prepare`` (observe and plan, nothing changed) then ``execute`` (the DDL), or ``reconcile`` for both.

The admin statements run as blocking jobs on the server's worker thread (``ServerPool.run``); the functions the
handlers call are async. Logging in as a role (``check_login``) uses a short-lived async connection. Errors come out
as the operator's own classes (ServerUnreachable, AuthenticationFailed, InsufficientPrivilege, NameConflict,
InvalidSpec).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

import psycopg

from ..errors import InvalidSpec, OperatorError
from ..models.base import RESERVED_DATABASE_NAMES
from ..models.database import check_identifier
from .conninfo import ADMIN_OPTIONS, AdminConnInfo
from .contents import (
    EMPTY,
    Availability,
    ContentsState,
    ExtensionVersion,
    ReadOnlyState,
    check_available,
    plan_contents,
)
from .plan import (
    Action,
    AdminState,
    AuxRoles,
    AuxRoleState,
    DatabaseState,
    DesiredDatabase,
    PasswordAction,
    RoleState,
    ServerState,
    Step,
    check_aux_privileges,
    plan,
    plan_aux_roles,
    plan_drop,
)
from .pool import Params, Query, Row, ServerPool, Session
from .scram import salt_of, scram_sha256_verifier
from .statements import (
    AVAILABLE_EXTENSIONS,
    CONTENT_EXTENSIONS,
    CONTENT_READ_ONLY,
    CONTENT_SCHEMAS,
    DATABASE_SIZE,
    OBSERVE,
    OBSERVE_AUX,
    OBSERVE_AUX_COLUMNS,
    OBSERVE_COLUMNS,
    SERVER_VERSION,
    set_role,
    statement,
)
from .translate import password_rejected, translate, translate_connect_error

log = logging.getLogger(__name__)
T = TypeVar("T")

_PASSWORD_ACTIONS = (Action.CREATE_ROLE, Action.SET_PASSWORD)


@dataclass(frozen=True)
class ReconcileResult:
    """What a reconcile did and saw; ``steps`` is empty when the server was already in sync (no DDL issued)."""

    steps: tuple[Step, ...]
    server_version: str
    database_size_bytes: int | None
    salts: Mapping[str, str | None] = field(default_factory=dict)
    """The roles whose passwords were set: the salt of each one's new verifier (``salt_of``; None: cleared)."""

    @property
    def changed(self) -> bool:
        """Whether anything was changed on the server."""
        return bool(self.steps)

    @property
    def password_set(self) -> bool:
        """The role's password was set to the given password (creation, reset or rotation)."""
        return any(step.action in _PASSWORD_ACTIONS for step in self.steps)

    @property
    def database_created(self) -> bool:
        """The database was created in this reconcile (first time or after being dropped)."""
        return any(step.action is Action.CREATE_DATABASE for step in self.steps)

    @property
    def database_recreated(self) -> bool:
        """The database had been dropped out of band and was recreated EMPTY: emit a Warning Event."""
        return any(step.action is Action.CREATE_DATABASE and step.drift for step in self.steps)

    @property
    def drift(self) -> tuple[Step, ...]:
        """The steps that repaired out-of-band changes."""
        return tuple(step for step in self.steps if step.drift)


class LoginCheck(StrEnum):
    """Outcome of logging in as the role with the Secret's password."""

    OK = "ok"
    REJECTED = "rejected"
    """The server refused the password (or the role cannot log in): reset it."""
    UNKNOWN = "unknown"
    """Could not tell (connection limit reached, no pg_hba entry for this host, network): leave it alone."""


def observe(session: Session, desired: DesiredDatabase) -> ServerState:
    """Snapshot of the server as far as ``desired`` is concerned, the admin's own attributes included (one read-only
    statement)."""
    rows = session.query(OBSERVE, {"role": desired.role, "database": desired.database},
                         doing=f"read role {desired.role} and database {desired.database}")
    return state_from_row(rows[0], desired)


def state_from_row(values: tuple[object, ...], desired: DesiredDatabase) -> ServerState:
    """The ServerState of OBSERVE's one row (statements.OBSERVE_COLUMNS)."""
    row: dict[str, Any] = dict(zip(OBSERVE_COLUMNS, values, strict=True))
    version_num = int(row["version_num"])
    admin = AdminState(
        str(row["admin"]), superuser=bool(row["admin_superuser"]), createrole=bool(row["admin_createrole"]),
        createdb=bool(row["admin_createdb"]), inherit=bool(row["admin_inherit"]),
        self_grant=version_num >= 160000 and _grants_set_and_inherit(str(row["self_grant"])),
    )
    role = RoleState(
        desired.role, bool(row["can_login"]), int(row["connection_limit"]), expires=bool(row["expires"]),
        admin_can_use=bool(row["admin_can_use"]), marker=row["role_marker"],
        attributes=tuple(row["role_attributes"]), admin_option=bool(row["admin_option"]),
        privileged_memberships=tuple(row["privileged_memberships"]),
    ) if row["role_exists"] else None
    database = DatabaseState(
        desired.database, str(row["database_owner"]), row["database_marker"], row["size"],
        owner_attributes=tuple(row["owner_attributes"]), admin_is_owner=bool(row["admin_is_owner"]),
    ) if row["database_exists"] else None
    return ServerState(version=str(row["version"]).split()[0], version_num=version_num, admin=admin, role=role,
                       database=database)


def _grants_set_and_inherit(self_grant: str) -> bool:
    """Whether a createrole_self_grant value ('set, inherit', 'inherit,set', ...) names both options."""
    options = {part.strip().lower() for part in self_grant.split(",")}
    return {"set", "inherit"} <= options


def apply(session: Session | DatabaseSession, desired: DesiredDatabase, steps: tuple[Step, ...], *,
          password: str | None, passwords: Mapping[str, str | None] | None = None) -> dict[str, str | None]:
    """Execute the steps in order, one DDL statement each. ``password`` is the owner role's (needed when a step sets
    it), ``passwords`` those of the other roles a step creates or sets (None: created without one). Returns the salt
    of each verifier set, by role (None: the role was left without a password).

    A failing step raises the operator's error naming what it tried (e.g. "create database x owned by y: permission
    denied to create database"), followed by what the steps before it already did, if any.
    """
    verifiers: dict[str, str | None] = {}

    def verifier(step: Step) -> str | None:
        if step.action not in _PASSWORD_ACTIONS:
            return None
        role = step.role or desired.role
        if role not in verifiers:
            secret = password if step.role is None else (passwords or {}).get(role)
            if secret is None and (step.action is Action.SET_PASSWORD
                                   or (step.role is None and desired.owner_login)):
                raise ValueError(f"a step sets the password of {role} but none was given")
            verifiers[role] = session.verifier(role, secret) if secret is not None else None
        return verifiers[role]

    for done, step in enumerate(steps):
        try:
            session.ddl(statement(step, desired, verifier(step)), doing=step.attempt(desired))
        except OperatorError as exc:
            if done:
                exc.args = (f"{exc.message} (done before it: {'; '.join(s.message for s in steps[:done])})",)
            raise
        log.info("%s", step.message)
    return {role: salt_of(v) if v is not None else None for role, v in verifiers.items()}


class DatabaseSession:
    """A short-lived admin connection to one database (not the pool's): for the statements inside it."""

    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self._conn = conn

    def query(self, statement: Query, params: Params = None, *, doing: str) -> list[Row]:
        """Rows of a read-only statement."""
        try:
            return self._conn.execute(statement, params).fetchall()
        except psycopg.Error as exc:
            raise translate(exc, doing) from None

    def verifier(self, role: str, password: str) -> str:
        """The SCRAM-SHA-256 verifier of ``password`` for ``role`` (libpq, on this connection)."""
        try:
            return scram_sha256_verifier(self._conn, role, password)
        except psycopg.Error as exc:
            raise translate(exc, f"compute the password verifier of role {role}") from None

    def ddl(self, statement: Query, *, doing: str) -> None:
        """One statement, autocommit."""
        try:
            self._conn.execute(statement)
        except psycopg.Error as exc:
            raise translate(exc, doing) from None


async def in_database(info: AdminConnInfo, database: str, work: Callable[[DatabaseSession], T]) -> T:
    """Run blocking ``work`` on a new admin connection to ``database`` (off the event loop), then close it.

    Not pooled: drift passes visit each database rarely, and a pooled connection per database would hold a server
    slot per AitbcDatabase for nothing.
    """

    def run() -> T:
        try:
            conn = psycopg.Connection.connect(autocommit=True, options=ADMIN_OPTIONS,
                                              **info.as_role(info.user, info.password, database).connect_kwargs())
        except psycopg.Error as exc:
            raise translate_connect_error(exc, f"{info.user}@{info.host}:{info.port}/{database}") from None
        with conn:
            return work(DatabaseSession(conn))

    return await asyncio.to_thread(run)


async def check_login(pool: ServerPool, info: AdminConnInfo, role: str, password: str, dbname: str,
                      salt: str | None = None) -> LoginCheck:
    """Log in as ``role`` with ``password`` (a short-lived connection; non-superusers cannot read pg_authid).

    ``salt``: of the verifier the operator last set for the role (status); the login then uses the password's SCRAM
    keys (postgres/scram.py), and the password itself only if the server refuses them.
    """
    pool.stats.login_checks += 1
    server = (info.host, info.port)
    keys = pool.login_keys.get(server, role, password, salt) if salt else None
    kwargs = info.as_role(role, password, dbname).connect_kwargs()
    if keys is not None:
        without = {key: value for key, value in kwargs.items() if key != "password"}
        outcome = await _login({**without, **keys.connect_kwargs()}, role)
        if outcome is LoginCheck.OK:
            pool.stats.key_logins += 1
        if outcome is not LoginCheck.REJECTED:
            return outcome
        pool.login_keys.refused(server, role)
    return await _login(kwargs, role)


async def _login(kwargs: dict[str, Any], role: str) -> LoginCheck:
    try:
        conn = await psycopg.AsyncConnection.connect(**kwargs)
    except psycopg.OperationalError as exc:
        if password_rejected(exc):
            return LoginCheck.REJECTED
        log.info("could not check the password of role %s: %s", role, translate_connect_error(exc, role))
        return LoginCheck.UNKNOWN
    await conn.close()
    return LoginCheck.OK


@dataclass(frozen=True)
class AuxPassword:
    """The password a login or the read-only role must accept: its Secret's (None: no Secret holds one, e.g. the
    standby login), and what to do with it."""

    password: str | None = None
    action: PasswordAction = PasswordAction.KEEP


@dataclass(frozen=True)
class Prepared:
    """What a reconcile found and will do: the snapshot and the steps, already checked (ownership, adoption,
    privileges, extensions). Nothing has been changed yet."""

    state: ServerState
    steps: tuple[Step, ...]
    aux_steps: tuple[Step, ...] = ()
    contents_steps: tuple[Step, ...] = ()
    availability: Availability = field(default_factory=Availability)


def observe_aux(session: Session, desired: DesiredDatabase) -> dict[str, AuxRoleState | None]:
    """The aux roles (logins, read-only role) as the admin sees them (one read-only statement; None: missing)."""
    if not desired.aux_roles:
        return {}
    rows = session.query(OBSERVE_AUX, {"names": list(desired.aux_roles), "owner": desired.role},
                         doing=f"read roles {', '.join(desired.aux_roles)}")
    found: dict[str, AuxRoleState | None] = {}
    for values in rows:
        row: dict[str, Any] = dict(zip(OBSERVE_AUX_COLUMNS, values, strict=True))
        found[str(row["name"])] = AuxRoleState(
            str(row["name"]), bool(row["can_login"]), int(row["connection_limit"]), bool(row["expires"]),
            row["marker"], bool(row["member_of_owner"]), row["acts_as"], admin_option=bool(row["admin_option"]),
            attributes=("SUPERUSER",) if row["superuser"] else (),
        ) if row["exists"] else None
    return found


def availability(session: Session, desired: DesiredDatabase) -> Availability:
    """What the server offers for the listed extensions."""
    names = [e.name for e in desired.extensions]
    if not names:
        return Availability()
    rows = session.query(AVAILABLE_EXTENSIONS, {"names": names}, doing="read the available extensions")
    defaults: dict[str, str] = {}
    versions: dict[str, dict[str, ExtensionVersion]] = {}
    for name, version, superuser, trusted, default in rows:
        defaults[name] = default
        versions.setdefault(name, {})[version] = ExtensionVersion(version, bool(superuser), bool(trusted))
    return Availability(defaults, versions)


def observe_contents(session: DatabaseSession, desired: DesiredDatabase) -> ContentsState:
    """The database's extensions, schemas and the read-only role's grants (read-only statements)."""
    extensions = {str(n): (str(v), str(o)) for n, v, o in session.query(CONTENT_EXTENSIONS,
                                                                         doing="read the extensions")}
    schemas = {str(n): str(o) for n, o in session.query(CONTENT_SCHEMAS, doing="read the schemas")}
    read_only = None
    if desired.read_only and desired.read_only_login:
        connect, usage, missing, default = session.query(
            CONTENT_READ_ONLY, {"ro": desired.read_only, "owner": desired.role},
            doing=f"read the privileges of role {desired.read_only}")[0]
        read_only = ReadOnlyState(bool(connect), frozenset(usage), frozenset(missing), bool(default))
    return ContentsState(extensions, schemas, read_only)


async def prepare(pool: ServerPool, info: AdminConnInfo, desired: DesiredDatabase, *, password: str,
                  password_action: PasswordAction = PasswordAction.KEEP, verify_password: bool = True,
                  previously_created: bool = False, aux_passwords: Mapping[str, AuxPassword] | None = None,
                  aux_created: frozenset[str] = frozenset(), salts: Mapping[str, str] | None = None) -> Prepared:
    """Observe the server and plan, without changing anything (read-only SQL, maybe logins as the roles).

    - ``password``: the password the role must accept (the Secret's, or the one about to be written to it).
    - ``password_action``: KEEP checks ``password`` by logging in as the role (when ``verify_password``) and plans a
      reset if it is refused; ROTATE and REISSUE set it on an existing role unconditionally.
    - ``previously_created``: status says the objects existed; missing ones are reported as dropped out of band.
    - ``aux_passwords``/``aux_created``: the same for the logins and the read-only role.
    - ``salts``: the salts of the verifiers the operator set, by role (``ReconcileResult.salts``), for the logins.

    Raises NameConflict, AdoptionRefused, InsufficientPrivilege, InvalidSpec (names that cannot be managed, an
    extension the server lacks) and the connection errors; on any of them nothing was changed.
    """
    aux_passwords, salts = aux_passwords or {}, salts or {}
    main_action = password_action if desired.owner_login else PasswordAction.KEEP

    def observe_all(session: Session) -> tuple[ServerState, dict[str, AuxRoleState | None], Availability]:
        return observe(session, desired), observe_aux(session, desired), availability(session, desired)

    state, aux_states, offered = await pool.run(info, observe_all)
    dbname = desired.database if state.database is not None else info.dbname
    if (verify_password and main_action is PasswordAction.KEEP and desired.owner_login
            and _login_checkable(state.role)
            and await check_login(pool, info, desired.role, password, dbname, salts.get(desired.role))
            is LoginCheck.REJECTED):
        main_action = PasswordAction.RESET
    steps = plan(state, desired, password=main_action, previously_created=previously_created)
    aux_actions = {name: await _aux_action(pool, info, name, aux_states.get(name), aux_passwords.get(name),
                                           dbname, verify=verify_password, salt=salts.get(name))
                   for name in desired.aux_roles}
    aux = AuxRoles(aux_states, aux_actions, aux_created)
    aux_steps = plan_aux_roles(aux, desired)
    check_aux_privileges(state, aux, desired, aux_steps)
    contents = EMPTY
    if desired.has_contents and state.database is not None:
        contents = await in_database(info, desired.database, lambda session: observe_contents(session, desired))
    check_available(offered, state.admin, desired, contents.extensions)
    contents_steps = plan_contents(contents, desired) if desired.has_contents else ()
    return Prepared(state, steps, aux_steps, contents_steps, offered)


async def _aux_action(pool: ServerPool, info: AdminConnInfo, name: str, state: AuxRoleState | None,
                      wanted: AuxPassword | None, dbname: str, *, verify: bool, salt: str | None) -> PasswordAction:
    """KEEP, unless asked otherwise or the role refuses the password its Secret holds (RESET)."""
    wanted = wanted or AuxPassword()
    if wanted.action is not PasswordAction.KEEP or wanted.password is None or not verify:
        return wanted.action
    if state is None or not state.can_login or state.expires:
        return PasswordAction.KEEP
    if await check_login(pool, info, name, wanted.password, dbname, salt) is LoginCheck.REJECTED:
        return PasswordAction.RESET
    return PasswordAction.KEEP


async def execute(pool: ServerPool, info: AdminConnInfo, desired: DesiredDatabase, prepared: Prepared, *,
                  password: str, aux_passwords: Mapping[str, AuxPassword] | None = None) -> ReconcileResult:
    """Run the prepared steps (one job on the admin connection), then those inside the database (re-planned on a
    fresh look, as the owner role), and read the database's size; nothing at all when there is nothing to do."""
    passwords = {name: p.password for name, p in (aux_passwords or {}).items()}
    server_steps = prepared.steps + prepared.aux_steps
    if server_steps:

        def converge(session: Session) -> ReconcileResult:
            salts = apply(session, desired, server_steps, password=password, passwords=passwords)
            return ReconcileResult(server_steps, prepared.state.version, _size(session, desired.database), salts)

        result = await pool.run(info, converge)
    else:
        result = _unchanged(prepared.state)
    if not desired.has_contents or not (prepared.contents_steps or prepared.state.database is None):
        return result

    def contents(session: DatabaseSession) -> tuple[Step, ...]:
        current = observe_contents(session, desired)
        check_available(prepared.availability, prepared.state.admin, desired, current.extensions)
        steps = plan_contents(current, desired)
        if steps:
            session.ddl(set_role(desired.role), doing=f"act as role {desired.role} in database {desired.database}")
            apply(session, desired, steps, password=None)
        return steps

    done = await in_database(info, desired.database, contents)
    return ReconcileResult(result.steps + done, result.server_version, result.database_size_bytes, result.salts)


async def reconcile(pool: ServerPool, info: AdminConnInfo, desired: DesiredDatabase, *, password: str,
                    rotate: bool = False, verify_password: bool = True,
                    previously_created: bool = False) -> ReconcileResult:
    """Converge the server to ``desired`` with ``password`` as the role's password: ``prepare`` then ``execute``.

    ``rotate``: set ``password`` even if the role exists. (The AitbcDatabase reconciler calls the two halves itself,
    to write the Secret in between: a password is never set on the server before the Secret holds it.)
    """
    action = PasswordAction.ROTATE if rotate else PasswordAction.KEEP
    prepared = await prepare(pool, info, desired, password=password, password_action=action,
                             verify_password=verify_password, previously_created=previously_created)
    return await execute(pool, info, desired, prepared, password=password)


def _unchanged(state: ServerState) -> ReconcileResult:
    """Nothing to do: no DDL, the size as observed."""
    size = state.database.size_bytes if state.database is not None else None
    return ReconcileResult((), state.version, size)


def _login_checkable(role: RoleState | None) -> bool:
    return role is not None and role.can_login and not role.expires


async def drop(pool: ServerPool, info: AdminConnInfo, desired: DesiredDatabase) -> tuple[Step, ...]:
    """Terminate the database's connections, drop the database, the logins and read-only role, then the role (only
    if they carry our marker)."""

    def drop_all(session: Session) -> tuple[Step, ...]:
        steps = plan_drop(observe(session, desired), desired, observe_aux(session, desired))
        apply(session, desired, steps, password=None)
        return steps

    return await pool.run(info, drop_all)


async def database_size(pool: ServerPool, info: AdminConnInfo, database: str) -> int | None:
    """pg_database_size of ``database`` (None when it does not exist)."""
    try:
        check_identifier(database, "databaseName", RESERVED_DATABASE_NAMES)
    except ValueError as exc:
        raise InvalidSpec(str(exc)) from None
    return await pool.run(info, lambda session: _size(session, database))


def _size(session: Session, database: str) -> int | None:
    rows = session.query(DATABASE_SIZE, (database,), doing=f"read the size of database {database}")
    return int(rows[0][0]) if rows else None


async def server_version(pool: ServerPool, info: AdminConnInfo) -> str:
    """The server's version, e.g. ``15.18``."""
    rows = await pool.run(info, lambda session: session.query(SERVER_VERSION, doing="read the server version"))
    return str(rows[0][0]).split()[0]
