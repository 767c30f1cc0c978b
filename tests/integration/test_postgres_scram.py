"""SCRAM-SHA-256 verifiers computed by libpq on the admin connection (postgres/scram.py): stored as they are by
``ALTER ROLE ... PASSWORD``, accepted by the server at login, never containing the password (15 and the newer
major); the keys derived from a verifier's salt log in like the password (libpq 18's scram_client_key)."""

from __future__ import annotations

import asyncio
import base64
import hashlib

import psycopg
import pytest
from psycopg import sql

from aitbc_operator.postgres import LoginCheck, ServerPool, check_login
from aitbc_operator.postgres.scram import KEYS_SUPPORTED, derive_keys, salt_of, scram_sha256_verifier
from tests.pg.fixtures import PgTestServer
from tests.pg.inspect import login_error, su

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize("password", ["pencil", "@:/?#%&=+!*,;~-_.^ with spaces", "naïve-Ⅸ"])
def test_verifier_is_accepted_at_login_and_holds_no_password(pg_server: PgTestServer, names: str,
                                                             password: str) -> None:
    role = f"{names}_scram"
    su(pg_server.server, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    with psycopg.connect(**pg_server.admin.connect_kwargs()) as conn:
        first, second = (scram_sha256_verifier(conn, role, password) for _ in range(2))
    head, params, keys = first.split("$")
    iterations, salt = params.split(":")
    assert (head, int(iterations), len(base64.b64decode(salt))) == ("SCRAM-SHA-256", 4096, 16)
    assert len(keys.split(":")) == 2
    assert password not in first
    assert first != second  # a fresh salt each time
    su(pg_server.server, sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(first)))
    assert login_error(pg_server.server, role, password, "postgres") is None
    assert login_error(pg_server.server, role, password + "x", "postgres") == "28P01"


def test_empty_password_is_refused(pg_server: PgTestServer) -> None:
    with psycopg.connect(**pg_server.admin.connect_kwargs()) as conn, pytest.raises(ValueError, match="non-empty"):
        scram_sha256_verifier(conn, "anyone", "")


def _set_password(pg_server: PgTestServer, role: str, password: str) -> str:
    """Set ``password`` on ``role`` (created if missing) from a fresh verifier; its salt."""
    with psycopg.connect(**pg_server.admin.connect_kwargs()) as conn:
        verifier = scram_sha256_verifier(conn, role, password)
    su(pg_server.server, sql.SQL("DO $$ BEGIN CREATE ROLE {} LOGIN; EXCEPTION WHEN duplicate_object THEN END $$")
       .format(sql.Identifier(role)))
    su(pg_server.server, sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier)))
    return salt_of(verifier)


def test_keys_derived_from_the_salt_match_the_verifier_and_log_in_without_the_password(
        pg_server: PgTestServer, names: str) -> None:
    role, password = f"{names}_keys", "pencil-0123456789"
    with psycopg.connect(**pg_server.admin.connect_kwargs()) as conn:
        verifier = scram_sha256_verifier(conn, role, password)
    keys = derive_keys(password, salt_of(verifier))
    assert keys is not None
    stored_key, server_key = (base64.b64decode(k) for k in verifier.split("$")[2].split(":"))
    assert (hashlib.sha256(keys.client_key).digest(), keys.server_key) == (stored_key, server_key)
    if not KEYS_SUPPORTED:
        pytest.skip(f"libpq {psycopg.pq.version()} takes no SCRAM keys")
    su(pg_server.server,
       sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier)))
    as_role = pg_server.admin.as_role(role, "", "postgres").connect_kwargs()
    kwargs = {k: v for k, v in as_role.items() if k != "password"}
    with psycopg.connect(**kwargs, **keys.connect_kwargs()) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)
    other = derive_keys(password + "x", salt_of(verifier))
    assert other is not None
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**kwargs, **other.connect_kwargs())


def test_check_login_uses_the_keys_and_falls_back_to_the_password_when_the_salt_changed(
        pg_server: PgTestServer, names: str) -> None:
    if not KEYS_SUPPORTED:
        pytest.skip(f"libpq {psycopg.pq.version()} takes no SCRAM keys")
    role, password = f"{names}_check", "pencil-0123456789"
    salt = _set_password(pg_server, role, password)
    pool = ServerPool()

    async def check(pw: str, recorded: str | None) -> LoginCheck:
        return await check_login(pool, pg_server.admin, role, pw, "postgres", recorded)

    assert [asyncio.run(check(password, salt)) for _ in range(2)] == [LoginCheck.OK, LoginCheck.OK]
    assert (pool.stats.login_checks, pool.stats.key_logins) == (2, 2)
    assert asyncio.run(check(password + "x", salt)) is LoginCheck.REJECTED  # other keys, then the password
    # The same password set again out of band: a new salt, the recorded one no longer fits; the password decides.
    assert _set_password(pg_server, role, password) != salt
    assert [asyncio.run(check(password, salt)) for _ in range(2)] == [LoginCheck.OK, LoginCheck.OK]
    assert pool.stats.key_logins == 2
    assert asyncio.run(check(password, None)) is LoginCheck.OK  # no salt recorded: the password
    assert pool.stats.key_logins == 2


def test_non_ascii_passwords_get_no_keys() -> None:
    assert derive_keys("naïve-Ⅸ", "4096:" + base64.b64encode(b"0123456789abcdef").decode()) is None
    assert derive_keys("tab\there", "4096:" + base64.b64encode(b"0123456789abcdef").decode()) is None


@pytest.mark.parametrize("salt", ["", "4096", "x:MDEyMw==", "4096:not base64!", "0:MDEyMw==", "99999999:MDEyMw==",
                                  "1:2:3"])
def test_a_malformed_recorded_salt_gets_no_keys(salt: str) -> None:
    assert derive_keys("secret", salt) is None  # the login uses the password
