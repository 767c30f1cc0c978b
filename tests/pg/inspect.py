"""Superuser-side inspection and out-of-band changes for the PostgreSQL tests (what a human with psql would do)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from tests.pg.server import PostgresServer


@dataclass(frozen=True)
class RoleRow:
    """A role as pg_authid shows it."""

    name: str
    can_login: bool
    connection_limit: int
    superuser: bool
    comment: str | None


def roles(server: PostgresServer, prefix: str = "") -> dict[str, RoleRow]:
    """Roles whose name starts with prefix (excluding the built-in pg_* roles when the prefix is empty)."""
    with server.superuser() as conn:
        rows = conn.execute(
            "SELECT rolname, rolcanlogin, rolconnlimit, rolsuper, shobj_description(oid, 'pg_authid') FROM pg_roles"
            " WHERE starts_with(rolname, %s) AND NOT starts_with(rolname, 'pg_')", (prefix,)).fetchall()
    return {str(r[0]): RoleRow(str(r[0]), bool(r[1]), int(str(r[2])), bool(r[3]), r[4] and str(r[4]))
            for r in rows}


def verifier_salt(server: PostgresServer, role: str) -> str | None:
    """``<iterations>:<salt>`` of the role's SCRAM verifier in pg_authid (None: no SCRAM password)."""
    with server.superuser() as conn:
        row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()
    stored = str(row[0]) if row is not None and row[0] is not None else ""
    return stored.split("$")[1] if stored.startswith("SCRAM-SHA-256$") else None


def databases(server: PostgresServer, prefix: str = "") -> dict[str, str]:
    """Databases whose name starts with prefix -> owner."""
    with server.superuser() as conn:
        rows = conn.execute("SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE starts_with(datname, %s)",
                            (prefix,)).fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def su(server: PostgresServer, statement: str | sql.Composed, params: Any = None, dbname: str = "postgres") -> None:
    """Run one statement as the superuser (test setup / out-of-band changes)."""
    with server.superuser(dbname) as conn:
        conn.execute(statement, params)


def login_error(server: PostgresServer, user: str, password: str, dbname: str) -> str | None:
    """None if the role logs in with the password, else the SQLSTATE of the failure."""
    try:
        with psycopg.connect(server.login(user, password, dbname).conninfo()):
            return None
    except psycopg.OperationalError as exc:
        return exc.sqlstate or ("28P01" if "password authentication failed" in str(exc) else "connection-failed")
