"""psycopg exceptions -> the operator's errors (errors.py). The only place that looks at SQLSTATEs.

Messages are built from the server's primary message and our own context, never from the connection string, so they
cannot carry a password.
"""

from __future__ import annotations

import re

import psycopg

from ..errors import (
    AuthenticationFailed,
    InsufficientPrivilege,
    InvalidSpec,
    NameConflict,
    OperatorError,
    ServerBusy,
    ServerUnreachable,
    TemporaryError,
)

#: SQLSTATE classes / codes and what they mean for the operator.
_AUTH = {"28P01", "28000"}  # invalid_password, invalid_authorization_specification
_PRIVILEGE = {"42501"}  # insufficient_privilege
_CONFLICT = {"42710", "42P04", "2BP01"}  # duplicate_object, duplicate_database, dependent_objects_still_exist
_UNREACHABLE = {"57P01", "57P02", "57P03", "53300", "53000"}  # shutdowns, cannot_connect_now, too_many_connections


def _server_message(exc: psycopg.Error) -> str:
    diag = exc.diag
    message = diag.message_primary or ""
    if diag.message_detail:
        message += f" ({diag.message_detail})"
    return message


# libpq reports connection failures as text only (no SQLSTATE), so the server's FATAL message is matched. These are
# PostgreSQL's English messages (lc_messages = C/en, the default for server logs and the wire); with another
# language the failure is reported as ServerUnreachable and check_login answers "unknown" (never a needless reset).
_PASSWORD_REJECTED = re.compile(r"FATAL:\s+password authentication failed for user")
_AUTH_FAILED = re.compile(r"FATAL:\s+(\S+ authentication failed|no pg_hba\.conf entry"
                          r"|role \".*\" is not permitted to log in|role \".*\" does not exist)")
_NO_DATABASE = re.compile(r"FATAL:\s+database \".*\" does not exist")


def password_rejected(exc: psycopg.Error) -> bool:
    """Whether a connection failed because the server refused the password (SQLSTATE 28P01)."""
    return exc.sqlstate == "28P01" or bool(_PASSWORD_REJECTED.search(str(exc)))


def translate_connect_error(exc: psycopg.Error, where: str) -> OperatorError:
    """An error raised while connecting to ``where`` (``user@host:port/db``)."""
    text = str(exc)
    detail = _server_message(exc) or _fatal_line(text)
    if exc.sqlstate in _AUTH or _AUTH_FAILED.search(text):
        return AuthenticationFailed(f"{where}: authentication failed: {detail}")
    if exc.sqlstate == "3D000" or _NO_DATABASE.search(text):
        return InvalidSpec(f"{where}: {detail}")
    # Refused, DNS, timeout, TLS, shutting down, too many connections: libpq's text names host and port only.
    return ServerUnreachable(f"{where}: cannot connect: {detail}")


def translate(exc: psycopg.Error, doing: str) -> OperatorError:
    """An error raised by a statement; ``doing`` says what we tried (e.g. 'create role "aitbc_mempool"')."""
    state = exc.sqlstate or ""
    message = f"{doing}: {_server_message(exc) or _first_line(str(exc))}"
    if (isinstance(exc, psycopg.OperationalError) and not state) or state in _UNREACHABLE or state.startswith("08"):
        return ServerUnreachable(message)
    if state in _PRIVILEGE:
        return InsufficientPrivilege(message)
    if state in _CONFLICT:
        return NameConflict(message)
    if state.startswith("55") or state.startswith("40"):  # object in use, lock not available, serialization
        return ServerBusy(message, delay=10.0)
    return TemporaryError(message, reason="DatabaseError", delay=30.0)


def _fatal_line(text: str) -> str:
    """The most telling line of libpq's connection error (the server's FATAL, or libpq's own reason)."""
    for line in text.splitlines():
        if "FATAL:" in line:
            return line[line.index("FATAL:"):].replace("FATAL:  ", "FATAL: ").strip()
    return _first_line(text)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"
