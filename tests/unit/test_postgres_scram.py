"""SCRAM-SHA-256 verifiers checked against RFC 7677's exchange (user 'user', password 'pencil')."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from aitbc_operator.postgres.scram import is_scram_verifier, salted_keys, scram_sha256_verifier

# RFC 7677, section 3.
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
CLIENT_FIRST_BARE = "n=user,r=rOprNGfwEbeRWgbNEkqO"
SERVER_FIRST = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
CLIENT_FINAL_NO_PROOF = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
CLIENT_PROOF = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
SERVER_SIGNATURE = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
AUTH_MESSAGE = f"{CLIENT_FIRST_BARE},{SERVER_FIRST},{CLIENT_FINAL_NO_PROOF}".encode()


def _parse(verifier: str) -> tuple[int, bytes, bytes, bytes]:
    head, rest = verifier.split("$", 1)
    assert head == "SCRAM-SHA-256"
    params, keys = rest.split("$")
    iterations, salt = params.split(":")
    stored, server = keys.split(":")
    return int(iterations), base64.b64decode(salt), base64.b64decode(stored), base64.b64decode(server)


def test_verifier_matches_rfc7677_server_signature_and_client_proof() -> None:
    iterations, salt, stored_key, server_key = _parse(scram_sha256_verifier("pencil", salt=SALT))
    assert (iterations, salt) == (4096, SALT)
    server_signature = hmac.new(server_key, AUTH_MESSAGE, hashlib.sha256).digest()
    assert base64.b64encode(server_signature).decode() == SERVER_SIGNATURE
    # The server checks a client proof with StoredKey: ClientKey = proof XOR HMAC(StoredKey, AuthMessage).
    client_signature = hmac.new(stored_key, AUTH_MESSAGE, hashlib.sha256).digest()
    client_key = bytes(a ^ b for a, b in zip(base64.b64decode(CLIENT_PROOF), client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key
    assert salted_keys("pencil", SALT)[0] == client_key


def test_wrong_password_gives_other_keys_and_salts_are_random() -> None:
    stored_keys = {_parse(scram_sha256_verifier(pw, salt=SALT))[2] for pw in ("pencil", "pencil2")}
    assert len(stored_keys) == 2
    first, second = scram_sha256_verifier("pencil"), scram_sha256_verifier("pencil")
    assert first != second
    assert len(_parse(first)[1]) == 16
    assert is_scram_verifier(first)
    assert not is_scram_verifier("md5abcdef")
    assert "pencil" not in first


@pytest.mark.parametrize("password", ["", "naïve", "tab\there", "new\nline"])
def test_non_ascii_or_control_passwords_are_refused(password: str) -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        scram_sha256_verifier(password)
