"""SCRAM-SHA-256 verifiers computed by libpq on the admin connection (postgres/scram.py): stored as they are by
``ALTER ROLE ... PASSWORD``, accepted by the server at login, never containing the password (15 and the newer
major)."""

from __future__ import annotations

import base64

import psycopg
import pytest
from psycopg import sql

from aitbc_operator.postgres.scram import scram_sha256_verifier
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
