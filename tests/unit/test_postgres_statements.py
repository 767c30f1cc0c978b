"""Every planned step renders to one SQL statement, with quoted identifiers and literals (psycopg.sql only)."""

from __future__ import annotations

import pytest

from aitbc_operator.postgres.plan import Action, DesiredDatabase, Step
from aitbc_operator.postgres.statements import statement

#: SQL keywords as names: they must come out double-quoted.
WANT = DesiredDatabase(database="select", role="user", owner="ns/x", connection_limit=-1)
#: A verifier's shape (libpq computes the real ones: postgres/scram.py); it is a literal like any other.
VERIFIER = "SCRAM-SHA-256$4096:MDAwMDAwMDAwMDAwMDAwMA==$c3RvcmVk:c2VydmVy"

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
    # the other roles (step.role) and the statements inside the database (as the owner role)
    Action.DISABLE_LOGIN: 'ALTER ROLE "grant" WITH NOLOGIN',
    Action.CLEAR_PASSWORD: 'ALTER ROLE "grant" WITH PASSWORD NULL',
    Action.GRANT_MEMBERSHIP: 'GRANT "user" TO "grant"',
    Action.SET_ACTS_AS: "ALTER ROLE \"grant\" SET role = 'user'",
    Action.CREATE_EXTENSION: "CREATE EXTENSION IF NOT EXISTS \"order\" VERSION '1.2'",
    Action.UPDATE_EXTENSION: "ALTER EXTENSION \"order\" UPDATE TO '1.2'",
    Action.DROP_EXTENSION: 'DROP EXTENSION IF EXISTS "order"',
    Action.CREATE_SCHEMA: 'CREATE SCHEMA IF NOT EXISTS "order"',
    Action.DROP_SCHEMA: 'DROP SCHEMA IF EXISTS "order"',
    Action.GRANT_CONNECT: 'GRANT CONNECT ON DATABASE "select" TO "grant"',
    Action.GRANT_USAGE: 'GRANT USAGE ON SCHEMA "order" TO "grant"',
    Action.GRANT_SELECT: 'GRANT SELECT ON ALL TABLES IN SCHEMA "order" TO "grant"',
    Action.DEFAULT_PRIVILEGES: 'ALTER DEFAULT PRIVILEGES FOR ROLE "user" GRANT SELECT ON TABLES TO "grant"',
}
#: The actions about another role than the owner, or an object inside the database.
OTHER_ROLE = {Action.DISABLE_LOGIN, Action.CLEAR_PASSWORD, Action.GRANT_MEMBERSHIP, Action.SET_ACTS_AS,
              Action.GRANT_CONNECT, Action.GRANT_USAGE, Action.GRANT_SELECT, Action.DEFAULT_PRIVILEGES}


def step_of(action: Action) -> Step:
    """A step of ``action``, about role "grant" and object "order" where it concerns them (keywords: quoted)."""
    return Step(action, "msg", role="grant" if action in OTHER_ROLE else None, target="order", version="1.2")


def test_every_action_has_a_statement() -> None:
    assert set(EXPECTED) == set(Action)


@pytest.mark.parametrize("action", list(Action))
def test_statement_text(action: Action) -> None:
    text = statement(step_of(action), WANT, VERIFIER).as_string(None)
    assert " ".join(text.split()) == EXPECTED[action]
    assert "pa'ss" not in text


@pytest.mark.parametrize("action", [Action.CREATE_ROLE, Action.SET_PASSWORD])
def test_password_steps_need_a_verifier(action: Action) -> None:
    with pytest.raises(ValueError, match="verifier"):
        statement(Step(action, "msg"), WANT, None)


def test_a_nologin_owner_and_a_standby_login_are_created_without_a_password() -> None:
    alternating = DesiredDatabase(database="d", role="app", owner="ns/x", owner_login=False,
                                  logins=("app_a", "app_b"))
    owner = statement(Step(Action.CREATE_ROLE, "m"), alternating, None).as_string(None)
    assert " ".join(owner.split()) == ('CREATE ROLE "app" WITH NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                                       "CONNECTION LIMIT -1 PASSWORD NULL")
    standby = statement(Step(Action.CREATE_ROLE, "m", role="app_b"), alternating, None).as_string(None)
    assert " ".join(standby.split()) == ('CREATE ROLE "app_b" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                                         "CONNECTION LIMIT -1 PASSWORD NULL")
