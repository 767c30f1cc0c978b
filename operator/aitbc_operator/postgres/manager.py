"""Reconcile one AitbcDatabase on its PostgreSQL server: observe -> plan (pure, checked) -> apply. The API handlers
call: ``prepare`` (observe and plan, nothing changed) then ``execute`` (the DDL), or ``reconcile`` for both.

The admin statements run as blocking jobs on the server's worker thread (``ServerPool.run``); the functions the
handlers call are async. Logging in as a role (``check_login``) uses a short-lived async connection. Errors come out
as the operator's own classes (ServerUnreachable, AuthenticationFailed, InsufficientPrivilege, NameConflict,
InvalidSpec).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import psycopg

from ..errors import InvalidSpec, OperatorError
from ..models.base import RESERVED_DATABASE_NAMES
from ..models.database import check_identifier
from .conninfo import AdminConnInfo
from .plan import (
    Action,
    AdminState,
    DatabaseState,
    DesiredDatabase,
    PasswordAction,
    RoleState,
    ServerState,
    Step,
    plan,
    plan_drop,
)
from .pool import ServerPool, Session
from .scram import scram_sha256_verifier
from .statements import DATABASE_SIZE, OBSERVE, OBSERVE_COLUMNS, SERVER_VERSION, statement
from .translate import password_rejected, translate_connect_error

log = logging.getLogger(__name__)

_PASSWORD_ACTIONS = (Action.CREATE_ROLE, Action.SET_PASSWORD)


@dataclass(frozen=True)
class ReconcileResult:
    """What a reconcile did and saw; ``steps`` is empty when the server was already in sync (no DDL issued)."""

    steps: tuple[Step, ...]
    server_version: str
    database_size_bytes: int | None

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


def apply(session: Session, desired: DesiredDatabase, steps: tuple[Step, ...], *, password: str | None) -> None:
    """Execute the steps in order, one DDL statement each. ``password`` is needed when a step sets it.

    A failing step raises the operator's error naming what it tried (e.g. "create database x owned by y: permission
    denied to create database"), followed by what the steps before it already did, if any.
    """
    verifier = None
    if any(step.action in _PASSWORD_ACTIONS for step in steps):
        if password is None:
            raise ValueError("a step sets the password but none was given")
        verifier = scram_sha256_verifier(password)
    for done, step in enumerate(steps):
        try:
            session.ddl(statement(step, desired, verifier), doing=step.attempt(desired))
        except OperatorError as exc:
            if done:
                exc.args = (f"{exc.message} (done before it: {'; '.join(s.message for s in steps[:done])})",)
            raise
        log.info("%s", step.message)


async def check_login(pool: ServerPool, info: AdminConnInfo, role: str, password: str, dbname: str) -> LoginCheck:
    """Log in as ``role`` with ``password`` (a short-lived connection; non-superusers cannot read pg_authid)."""
    pool.stats.login_checks += 1
    try:
        conn = await psycopg.AsyncConnection.connect(**info.as_role(role, password, dbname).connect_kwargs())
    except psycopg.OperationalError as exc:
        if password_rejected(exc):
            return LoginCheck.REJECTED
        log.info("could not check the password of role %s: %s", role, translate_connect_error(exc, role))
        return LoginCheck.UNKNOWN
    await conn.close()
    return LoginCheck.OK


@dataclass(frozen=True)
class Prepared:
    """What a reconcile found and will do: the snapshot and the steps, already checked (ownership, adoption,
    privileges). Nothing has been changed yet."""

    state: ServerState
    steps: tuple[Step, ...]


async def prepare(pool: ServerPool, info: AdminConnInfo, desired: DesiredDatabase, *, password: str,
                  password_action: PasswordAction = PasswordAction.KEEP, verify_password: bool = True,
                  previously_created: bool = False) -> Prepared:
    """Observe the server and plan, without changing anything (read-only SQL, maybe one login as the role).

    - ``password``: the password the role must accept (the Secret's, or the one about to be written to it).
    - ``password_action``: KEEP checks ``password`` by logging in as the role (when ``verify_password``) and plans a
      reset if it is refused; ROTATE and REISSUE set it on an existing role unconditionally.
    - ``previously_created``: status says the objects existed; missing ones are reported as dropped out of band.

    Raises NameConflict, AdoptionRefused, InsufficientPrivilege, InvalidSpec (names that cannot be managed) and the
    connection errors; on any of them nothing was changed.
    """
    check_password = verify_password and password_action is PasswordAction.KEEP

    def observe_and_plan(session: Session) -> tuple[ServerState, tuple[Step, ...] | None]:
        """One job: the snapshot, and the plan unless a login must be tried first."""
        state = observe(session, desired)
        if check_password and _login_checkable(state):
            return state, None
        return state, plan(state, desired, password=password_action, previously_created=previously_created)

    state, steps = await pool.run(info, observe_and_plan)
    if steps is None:
        # The role exists and may log in: try the password as the role, outside the admin connection's queue.
        dbname = desired.database if state.database is not None else info.dbname
        if await check_login(pool, info, desired.role, password, dbname) is LoginCheck.REJECTED:
            password_action = PasswordAction.RESET
        steps = plan(state, desired, password=password_action, previously_created=previously_created)
    return Prepared(state, steps)


async def execute(pool: ServerPool, info: AdminConnInfo, desired: DesiredDatabase, prepared: Prepared, *,
                  password: str) -> ReconcileResult:
    """Run the prepared steps (one job) and read the database's size; nothing at all when there are none."""
    if not prepared.steps:
        return _unchanged(prepared.state)

    def converge(session: Session) -> ReconcileResult:
        apply(session, desired, prepared.steps, password=password)
        return ReconcileResult(prepared.steps, prepared.state.version, _size(session, desired.database))

    return await pool.run(info, converge)


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


def _login_checkable(state: ServerState) -> bool:
    role = state.role
    return role is not None and role.can_login and not role.expires


async def drop(pool: ServerPool, info: AdminConnInfo, desired: DesiredDatabase) -> tuple[Step, ...]:
    """Terminate the database's connections, drop the database, then the role (only if they carry our marker)."""

    def drop_all(session: Session) -> tuple[Step, ...]:
        steps = plan_drop(observe(session, desired), desired)
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
