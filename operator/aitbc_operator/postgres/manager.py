"""Reconcile one AitbcDatabase on its PostgreSQL server: observe -> plan (pure) -> apply. The API handlers call.

The admin statements run as blocking jobs on the server's worker thread (``ServerPool.run``); the functions the
handlers call are async. Logging in as a role (``check_login``) uses a short-lived async connection. Errors come out
as the operator's own classes (ServerUnreachable, AuthenticationFailed, InsufficientPrivilege, NameConflict,
InvalidSpec).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

import psycopg

from ..errors import InvalidSpec
from ..models.base import RESERVED_DATABASE_NAMES
from ..models.database import check_identifier
from .conninfo import AdminConnInfo
from .plan import (
    Action,
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
from .statements import DATABASE_SIZE, OBSERVE, SERVER_VERSION, statement
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
    """Snapshot of the server as far as ``desired`` is concerned (one read-only statement)."""
    rows = session.query(OBSERVE, {"role": desired.role, "database": desired.database},
                               doing=f"read role {desired.role} and database {desired.database}")
    (version_num, version, admin, role_exists, can_login, conn_limit, superuser, expires, admin_can_use,
     role_marker, db_exists, db_owner, db_marker, size) = rows[0]
    role = RoleState(desired.role, can_login, conn_limit, superuser, expires, bool(admin_can_use),
                     role_marker) if role_exists else None
    database = DatabaseState(desired.database, db_owner, db_marker, size) if db_exists else None
    return ServerState(version=str(version).split()[0], version_num=int(version_num), admin=str(admin), role=role,
                       database=database)


def apply(session: Session, desired: DesiredDatabase, steps: tuple[Step, ...], *, password: str | None) -> None:
    """Execute the steps in order, one DDL statement each. ``password`` is needed when a step sets it."""
    verifier = None
    if any(step.action in _PASSWORD_ACTIONS for step in steps):
        if password is None:
            raise ValueError("a step sets the password but none was given")
        verifier = scram_sha256_verifier(password)
    for step in steps:
        session.ddl(statement(step, desired, verifier), doing=step.message)
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


async def reconcile(pool: ServerPool, info: AdminConnInfo, desired: DesiredDatabase, *, password: str,
                    rotate: bool = False, verify_password: bool = True,
                    previously_created: bool = False) -> ReconcileResult:
    """Converge the server to ``desired`` with ``password`` as the role's password.

    - ``password``: the Secret's current password, or a freshly generated one (first creation, or ``rotate``).
    - ``rotate``: set ``password`` even if the role exists (the caller writes the Secret afterwards).
    - ``verify_password``: log in as the role to find out-of-band password changes (then the password is reset).
    - ``previously_created``: status says the objects existed; missing ones are reported as dropped out of band.
    """
    check_password = verify_password and not rotate
    action = PasswordAction.ROTATE if rotate else PasswordAction.KEEP

    def converge(session: Session, state: ServerState, steps: tuple[Step, ...]) -> ReconcileResult:
        if not steps:
            return _unchanged(state)
        apply(session, desired, steps, password=password)
        return ReconcileResult(steps, state.version, _size(session, desired.database))

    def observe_then_converge(session: Session) -> ServerState | ReconcileResult:
        """One job when no login is needed (e.g. creation): observe, plan, apply; else the snapshot."""
        state = observe(session, desired)
        if check_password and _login_checkable(state):
            return state
        return converge(session, state, plan(state, desired, password=action, previously_created=previously_created))

    outcome = await pool.run(info, observe_then_converge)
    if isinstance(outcome, ReconcileResult):
        return outcome
    # The role exists and may log in: try the Secret's password as the role, outside the admin connection's queue.
    state = outcome
    dbname = desired.database if state.database is not None else info.dbname
    if await check_login(pool, info, desired.role, password, dbname) is LoginCheck.REJECTED:
        action = PasswordAction.RESET
    steps = plan(state, desired, password=action, previously_created=previously_created)
    if not steps:
        return _unchanged(state)
    return await pool.run(info, lambda session: converge(session, state, steps))


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
