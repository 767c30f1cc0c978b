"""SCRAM-SHA-256 password verifiers, computed by libpq (``PQencryptPasswordConn``, through psycopg) on the admin
connection that sets them.

``CREATE/ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$...'`` stores a verifier as is, so the cleartext password never
travels in SQL text and never reaches the server's log (what psql's ``\\password`` does too). libpq applies SASLprep
and takes the iteration count the server announces (``scram_iterations``, PostgreSQL 16+; 4096 before): the same
verifier the server would compute itself.
"""

from __future__ import annotations

from typing import Any

import psycopg

#: The algorithm libpq is asked for (never "on", which would follow the server's password_encryption, maybe md5).
ALGORITHM = b"scram-sha-256"


def scram_sha256_verifier(conn: psycopg.Connection[Any], role: str, password: str) -> str:
    """``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` for ``role`` logging in with ``password`` (a
    random salt each time); computed client-side, nothing is sent to the server."""
    if not password:
        raise ValueError("a SCRAM verifier needs a non-empty password")
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), ALGORITHM)
    return verifier.decode("ascii")
