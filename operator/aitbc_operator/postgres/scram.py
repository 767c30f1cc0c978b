"""SCRAM-SHA-256 password verifiers, computed by libpq (``PQencryptPasswordConn``, through psycopg) on the admin
connection that sets them.

``CREATE/ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$...'`` stores a verifier as is, so the cleartext password never
travels in SQL text and never reaches the server's log (what psql's ``\\password`` does too). libpq applies SASLprep
and takes the iteration count the server announces (``scram_iterations``, PostgreSQL 16+; 4096 before): the same
verifier the server would compute itself.

The drift checks log in as each role to see that it still accepts its Secret's password. With the password, libpq
runs the salted password's PBKDF2 (4,096 rounds or more) at every login; with libpq 18's ``scram_client_key`` and
``scram_server_key`` it takes the two keys that PBKDF2 leads to instead. They are derived here once per password and
salt (hashlib's PBKDF2 and hmac, RFC 5802: libpq computes the same keys but does not hand them out), from the salt of
the verifier the operator set (recorded in the resource's status).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
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


#: libpq 18 takes a role's SCRAM keys in place of its password (``scram_client_key``, ``scram_server_key``).
KEYS_SUPPORTED = psycopg.pq.version() >= 180000


def salt_of(verifier: str) -> str:
    """``<iterations>:<salt>`` of a ``SCRAM-SHA-256$...`` verifier. Not secret: the server sends both to any client
    that starts a login as the role."""
    scheme, salt, _keys = verifier.split("$")
    if scheme != "SCRAM-SHA-256":
        raise ValueError(f"not a SCRAM-SHA-256 verifier: {scheme}")
    return salt


@dataclass(frozen=True)
class ScramKeys:
    """A password's SCRAM-SHA-256 ClientKey and ServerKey for one salt (RFC 5802 section 3, RFC 7677)."""

    client_key: bytes
    server_key: bytes

    def connect_kwargs(self) -> dict[str, str]:
        """libpq's parameters for a login with these keys: its client skips the password's PBKDF2 (4,096 rounds
        and more) and proves the same thing; the server's signature is still verified."""
        return {"scram_client_key": base64.b64encode(self.client_key).decode("ascii"),
                "scram_server_key": base64.b64encode(self.server_key).decode("ascii")}


#: More PBKDF2 rounds than any verifier of a sane server has (PostgreSQL's scram_iterations tops out at INT_MAX, but
#: a salt asking for more than this is a hand-edited status, not worth seconds of CPU per password).
_MAX_ROUNDS = 1_000_000


def derive_keys(password: str, salt: str) -> ScramKeys | None:
    """The keys of ``password`` under ``salt`` (``<iterations>:<base64 salt>``), or None when libpq would not derive
    them from these very bytes: a password that is not printable ASCII may be changed by SASLprep (RFC 4013); or when
    ``salt`` is not of that form (a hand-edited status: the login then uses the password)."""
    if not (password.isascii() and password.isprintable()):
        return None
    try:
        iterations, salt_b64 = salt.split(":")
        rounds, raw = int(iterations), base64.b64decode(salt_b64, validate=True)
    except ValueError:  # binascii.Error included
        return None
    if not 0 < rounds <= _MAX_ROUNDS:
        return None
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("ascii"), raw, rounds)
    return ScramKeys(hmac.digest(salted, b"Client Key", "sha256"), hmac.digest(salted, b"Server Key", "sha256"))


class LoginKeys:
    """The SCRAM keys of the passwords the drift checks log in with, per server and role, derived once per password
    and salt (a login with them costs a fraction of one with the password: no PBKDF2 per check)."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, int, str], tuple[str, bytes, ScramKeys | None]] = {}

    def get(self, server: tuple[str, int], role: str, password: str, salt: str) -> ScramKeys | None:
        """The keys for a login as ``role`` (None: log in with the password, e.g. after ``refused``)."""
        if not KEYS_SUPPORTED:
            return None
        fingerprint = hashlib.sha256(password.encode()).digest()
        known = self._keys.get((*server, role))
        if known is not None and known[0] == salt and hmac.compare_digest(known[1], fingerprint):
            return known[2]
        keys = derive_keys(password, salt)
        self._keys[(*server, role)] = (salt, fingerprint, keys)
        return keys

    def refused(self, server: tuple[str, int], role: str) -> None:
        """The server refused the keys although the password may be right (the role's salt is not the recorded one:
        the password was set again out of band): log in with the password from now on."""
        known = self._keys.get((*server, role))
        if known is not None:
            self._keys[(*server, role)] = (known[0], known[1], None)
