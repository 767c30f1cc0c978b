"""SCRAM-SHA-256 password verifiers, computed by the operator (RFC 5802 / RFC 7677, PostgreSQL's stored format).

``ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$...'`` stores a verifier as is, so the cleartext password never travels in
SQL text and never reaches the server's log (what psql's ``\\password`` does too).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

#: PostgreSQL's defaults (scram_iterations, SCRAM_DEFAULT_SALT_LEN).
ITERATIONS = 4096
SALT_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _normalize(password: str) -> bytes:
    """PostgreSQL applies SASLprep to the password; for printable ASCII that is the identity.

    The operator only generates printable ASCII passwords; anything else is refused rather than risk a verifier that
    does not match what the server computes from the client's password.
    """
    if not password or not all(" " <= ch <= "~" for ch in password):
        raise ValueError("SCRAM verifiers are computed only for non-empty printable ASCII passwords")
    return password.encode("ascii")


def salted_keys(password: str, salt: bytes, iterations: int = ITERATIONS) -> tuple[bytes, bytes, bytes]:
    """(ClientKey, StoredKey, ServerKey) for a password and salt."""
    salted = hashlib.pbkdf2_hmac("sha256", _normalize(password), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return client_key, stored_key, server_key


def scram_sha256_verifier(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` for ``password`` (random salt by default)."""
    if iterations < 1:
        raise ValueError("iterations must be positive")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    _, stored_key, server_key = salted_keys(password, salt, iterations)
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def is_scram_verifier(value: str) -> bool:
    """Whether a string has the shape of a SCRAM-SHA-256 verifier."""
    head, _, rest = value.partition("$")
    return head == "SCRAM-SHA-256" and rest.count("$") == 1 and ":" in rest
