"""What the operator refuses on a real PostgreSQL server (15 and the newer major), before any DDL: roles and
databases it did not create unless adoption is asked for, privileged ones even then, and plans its admin has no
privilege for. Each refusal is checked from the outside: the error's message, and nothing changed on the server (no
DDL in the server's log by the admin, the objects as they were)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from aitbc_operator.errors import AdoptionRefused, InsufficientPrivilege, NameConflict, ServerBusy
from aitbc_operator.passwords import generate_password
from aitbc_operator.postgres import Action, DesiredDatabase, ReconcileResult, ServerPool, reconcile
from aitbc_operator.postgres.conninfo import AdminConnInfo
from tests.pg.fixtures import ADMIN, PgTestServer
from tests.pg.inspect import databases, login_error, roles, su

pytestmark = pytest.mark.postgres


def converge(admin: AdminConnInfo, want: DesiredDatabase, password: str) -> ReconcileResult:
    """One reconcile with a fresh pool."""
    async def main() -> ReconcileResult:
        pool = ServerPool()
        try:
            return await reconcile(pool, admin, want, password=password)
        finally:
            await pool.aclose()

    return asyncio.run(main())


def desired(prefix: str, *, adopt: bool = False) -> DesiredDatabase:
    return DesiredDatabase(database=f"{prefix}_db", role=f"{prefix}_app", owner="apps/mempool", adopt=adopt)


def ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


@pytest.fixture
def cleanup(pg_server: PgTestServer, names: str) -> Iterator[None]:
    """Drop what a test made by hand (databases and roles named with its prefix) afterwards."""
    yield
    for database in databases(pg_server.server, names):
        su(pg_server.server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(database)))
    for role in roles(pg_server.server, names):
        su(pg_server.server, sql.SQL("DROP ROLE IF EXISTS {}").format(ident(role)))


def refused(pg: PgTestServer, admin: AdminConnInfo, want: DesiredDatabase,
            error: type[Exception]) -> str:
    """Reconcile, expecting ``error`` and no DDL at all by ``admin``; returns the message."""
    offset = pg.server.log_size()
    with pytest.raises(error) as info:
        converge(admin, want, generate_password())
    assert pg.server.ddl_statements(admin.user, since=offset) == [], "DDL ran before the refusal"
    return str(info.value)


def runbook_setup(pg: PgTestServer, want: DesiredDatabase) -> None:
    """The runbook's hand-made setup, by the superuser: createdb, CREATE USER ... PASSWORD, GRANT ALL."""
    su(pg.server, sql.SQL("CREATE DATABASE {}").format(ident(want.database)))
    su(pg.server, sql.SQL("CREATE USER {} WITH PASSWORD 'secure_password'").format(ident(want.role)))
    su(pg.server, sql.SQL("GRANT ALL PRIVILEGES ON DATABASE {} TO {}").format(ident(want.database), ident(want.role)))


# --- adoption ---------------------------------------------------------------------------------------------------------


def test_existing_unmarked_objects_are_a_name_conflict_without_adopt(pg_server: PgTestServer, names: str,
                                                                     cleanup: None) -> None:
    want = desired(names)
    runbook_setup(pg_server, want)

    message = refused(pg_server, pg_server.admin, want, NameConflict)

    assert f"role '{want.role}' already exists and was not created by the operator" in message
    assert "set spec.adopt: true" in message
    assert login_error(pg_server.server, want.role, "secure_password", want.database) is None, "password kept"
    assert roles(pg_server.server, names)[want.role].comment is None


def test_the_runbook_setup_is_adopted_when_asked(pg_server: PgTestServer, names: str, cleanup: None) -> None:
    want, password = desired(names, adopt=True), generate_password()
    runbook_setup(pg_server, want)
    # The database belongs to the superuser postgres: refused even with adopt, with the way out in the message.
    message = refused(pg_server, pg_server.admin, want, AdoptionRefused)
    assert "its owner postgres has SUPERUSER" in message
    assert f"ALTER DATABASE {want.database} OWNER TO {want.role}" in message
    su(pg_server.server, sql.SQL("ALTER DATABASE {} OWNER TO {}").format(ident(want.database), ident(want.role)))
    if pg_server.major >= 16:
        # 16+: a CREATEROLE admin manages only roles it holds the ADMIN option on; postgres made the runbook's role.
        message = refused(pg_server, pg_server.admin, want, InsufficientPrivilege)
        assert f"lacks the ADMIN option on role {want.role}" in message
        assert f"GRANT {want.role} TO {ADMIN} WITH ADMIN OPTION" in message
        su(pg_server.server, sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(ident(want.role), ident(ADMIN)))

    result = converge(pg_server.admin, want, password)

    assert {Action.MARK_ROLE, Action.MARK_DATABASE, Action.SET_PASSWORD} <= {s.action for s in result.steps}
    assert databases(pg_server.server, names) == {want.database: want.role}
    assert roles(pg_server.server, names)[want.role].comment == want.marker
    assert login_error(pg_server.server, want.role, password, want.database) is None
    assert login_error(pg_server.server, want.role, "secure_password", want.database) == "28P01"


@pytest.mark.parametrize("attribute", ["SUPERUSER", "REPLICATION", "BYPASSRLS", "CREATEROLE"])
def test_a_privileged_role_is_never_adopted(pg_server: PgTestServer, names: str, cleanup: None,
                                            attribute: str) -> None:
    want = desired(names, adopt=True)
    su(pg_server.server, sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'theirs-123' " + attribute).format(ident(want.role)))

    message = refused(pg_server, pg_server.admin, want, AdoptionRefused)

    assert f"role '{want.role}' is not adopted even with spec.adopt: it has {attribute}" in message
    assert login_error(pg_server.server, want.role, "theirs-123", "postgres") is None, "its password is untouched"
    assert databases(pg_server.server, names) == {}


def test_a_member_of_a_privileged_role_is_never_adopted(pg_server: PgTestServer, names: str, cleanup: None) -> None:
    want = desired(names, adopt=True)
    su(pg_server.server, sql.SQL("CREATE ROLE {} LOGIN IN ROLE pg_read_all_data").format(ident(want.role)))

    message = refused(pg_server, pg_server.admin, want, AdoptionRefused)

    assert "it is a member of pg_read_all_data" in message


def test_a_database_owned_by_a_privileged_role_is_never_adopted(pg_server: PgTestServer, names: str,
                                                                cleanup: None) -> None:
    want = desired(names, adopt=True)
    dba = f"{names}_dba"
    su(pg_server.server, sql.SQL("CREATE ROLE {} CREATEROLE").format(ident(dba)))
    su(pg_server.server, sql.SQL("CREATE DATABASE {} OWNER {}").format(ident(want.database), ident(dba)))

    message = refused(pg_server, pg_server.admin, want, AdoptionRefused)

    assert f"database '{want.database}' is not adopted even with spec.adopt: its owner {dba} has CREATEROLE" in message
    assert databases(pg_server.server, names) == {want.database: dba}
    assert want.role not in roles(pg_server.server, names), "the role was not created either"


# --- privileges first ---------------------------------------------------------------------------------------------


@pytest.fixture
def weak_admin(pg_server: PgTestServer, names: str, request: pytest.FixtureRequest) -> Iterator[AdminConnInfo]:
    """An admin with only the attributes the test names (``indirect`` parameter), e.g. "CREATEROLE"."""
    user, password = f"{names}_weak", secrets.token_urlsafe(12)
    su(pg_server.server, sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} " + request.param).format(
        ident(user), sql.Literal(password)))
    try:
        yield AdminConnInfo(host=pg_server.admin.host, port=pg_server.admin.port, user=user, password=password,
                            sslmode="disable")
    finally:
        su(pg_server.server, sql.SQL("DROP ROLE IF EXISTS {}").format(ident(user)))


@pytest.mark.parametrize(("weak_admin", "missing"), [
    ("CREATEROLE", "CREATEDB (to create database {db} owned by {role})"),
    ("CREATEDB", "CREATEROLE (to create role {role})"),
    ("CREATEROLE CREATEDB NOINHERIT", "INHERIT"),
], indirect=["weak_admin"], ids=["no-createdb", "no-createrole", "noinherit"])
def test_a_missing_privilege_refuses_before_any_ddl(pg_server: PgTestServer, names: str, weak_admin: AdminConnInfo,
                                                    cleanup: None, missing: str) -> None:
    want = desired(names)

    message = refused(pg_server, weak_admin, want, InsufficientPrivilege)

    assert message.startswith(f"admin {weak_admin.user} lacks ")
    assert missing.format(db=want.database, role=want.role) in message
    assert message.endswith("nothing was changed")
    assert "created" not in message, "no success message glued to the error"
    assert roles(pg_server.server, names).keys() == {weak_admin.user}, "no role made"
    assert databases(pg_server.server, names) == {}


def test_a_failing_step_names_itself_and_what_ran_before(pg_server: PgTestServer, names: str, cleanup: None) -> None:
    """A step can still fail for reasons no privilege check sees: someone connected to template1 blocks CREATE
    DATABASE. The error names that step, then what the steps before it did; the next reconcile finishes the job."""
    want, password = desired(names), generate_password()
    with psycopg.connect(pg_server.server.superuser_conninfo("template1")), pytest.raises(ServerBusy) as info:
        converge(pg_server.admin, want, password)
    message = str(info.value)
    assert message.startswith(f"create database {want.database} owned by {want.role}: source database")
    assert f"(done before it: role {want.role} created; " in message
    result = converge(pg_server.admin, want, password)
    assert [s.action for s in result.steps] == [Action.CREATE_DATABASE, Action.MARK_DATABASE]
    assert login_error(pg_server.server, want.role, password, want.database) is None
