"""Every planned step renders to one SQL statement, with quoted identifiers and literals (psycopg.sql only)."""

from __future__ import annotations

import pytest

from aitbc_operator.postgres.plan import Action, DesiredDatabase, Step
from aitbc_operator.postgres.scram import scram_sha256_verifier
from aitbc_operator.postgres.statements import statement

#: SQL keywords as names: they must come out double-quoted.
WANT = DesiredDatabase(database="select", role="user", owner="ns/x", connection_limit=-1)
VERIFIER = scram_sha256_verifier("pa'ss\"word", salt=b"0" * 16)

EXPECTED = {
    Action.CREATE_ROLE: 'CREATE ROLE "user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE CONNECTION LIMIT -1 '
                        f"PASSWORD '{VERIFIER}'",
    Action.MARK_ROLE: "COMMENT ON ROLE \"user\" IS 'aitbc-operator: ns/x'",
    Action.GRANT_ROLE_TO_ADMIN: 'GRANT "user" TO CURRENT_USER',
    Action.ENABLE_LOGIN: 'ALTER ROLE "user" WITH LOGIN',
    Action.SET_CONNECTION_LIMIT: 'ALTER ROLE "user" WITH CONNECTION LIMIT -1',
    Action.CLEAR_EXPIRY: "ALTER ROLE \"user\" WITH VALID UNTIL 'infinity'",
    Action.SET_PASSWORD: f"ALTER ROLE \"user\" WITH PASSWORD '{VERIFIER}'",
    Action.CREATE_DATABASE: 'CREATE DATABASE "select" OWNER "user"',
    Action.SET_DATABASE_OWNER: 'ALTER DATABASE "select" OWNER TO "user"',
    Action.MARK_DATABASE: "COMMENT ON DATABASE \"select\" IS 'aitbc-operator: ns/x'",
    Action.DROP_DATABASE: 'DROP DATABASE IF EXISTS "select" WITH (FORCE)',
    Action.DROP_ROLE: 'DROP ROLE IF EXISTS "user"',
}


def test_every_action_has_a_statement() -> None:
    assert set(EXPECTED) == set(Action)


@pytest.mark.parametrize("action", list(Action))
def test_statement_text(action: Action) -> None:
    text = statement(Step(action, "msg"), WANT, VERIFIER).as_string(None)
    assert " ".join(text.split()) == EXPECTED[action]
    assert "pa'ss" not in text


@pytest.mark.parametrize("action", [Action.CREATE_ROLE, Action.SET_PASSWORD])
def test_password_steps_need_a_verifier(action: Action) -> None:
    with pytest.raises(ValueError, match="verifier"):
        statement(Step(action, "msg"), WANT, None)
