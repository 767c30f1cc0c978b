"""The day-2 SQL of an AitbcDatabase against real servers (15 and the newer major), through the NON-superuser admin:
AlternatingRoles logins, the read-only role, extensions and schemas. Out-of-band changes as the superuser."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql

from aitbc_operator.errors import InsufficientPrivilege, InvalidSpec, NameConflict
from aitbc_operator.passwords import generate_password
from aitbc_operator.postgres import (
    Action,
    AuxPassword,
    DesiredDatabase,
    DesiredExtension,
    DesiredSchema,
    PasswordAction,
    ReconcileResult,
    ServerPool,
    drop,
    execute,
    prepare,
)
from tests.pg.fixtures import ADMIN, PgTestServer
from tests.pg.inspect import databases, login_error, roles, su

pytestmark = pytest.mark.postgres
T = TypeVar("T")


def run(body: Callable[[ServerPool], Awaitable[T]]) -> T:
    pool = ServerPool()

    async def main() -> T:
        try:
            return await body(pool)
        finally:
            await pool.aclose()

    return asyncio.run(main())


def converge(pg: PgTestServer, want: DesiredDatabase, *, password: str = "", created: bool = False,
             aux: dict[str, AuxPassword] | None = None) -> ReconcileResult:
    """prepare + execute, as the reconciler calls them (the main role's password only matters for InPlace)."""

    async def body(pool: ServerPool) -> ReconcileResult:
        prepared = await prepare(pool, pg.admin, want, password=password or "unused-owner-password",
                                 previously_created=created, aux_passwords=aux,
                                 aux_created=frozenset(want.aux_roles) if created else frozenset())
        return await execute(pool, pg.admin, want, prepared, password=password or "unused-owner-password",
                             aux_passwords=aux)

    return run(body)


def actions(result: ReconcileResult) -> list[Action]:
    return [s.action for s in result.steps]


def as_role(pg: PgTestServer, user: str, password: str, dbname: str) -> psycopg.Connection[Any]:
    return psycopg.connect(pg.server.login(user, password, dbname).conninfo(), autocommit=True)


# --- AlternatingRoles ---


def alternating(names: str, **kwargs: Any) -> DesiredDatabase:
    role = f"{names}_app"
    return DesiredDatabase(database=f"{names}_db", role=role, owner="ns/alt", owner_login=False,
                           logins=(f"{role}_a", f"{role}_b"), **kwargs)


def test_alternating_roles_a_nologin_owner_two_logins_and_objects_owned_by_the_owner(
        pg_server: PgTestServer, names: str) -> None:
    want = alternating(names)
    a, b = want.logins
    pw_a = generate_password()
    first = converge(pg_server, want, aux={a: AuxPassword(pw_a, PasswordAction.ROTATE), b: AuxPassword(None)})
    found = roles(pg_server.server, names)
    assert not found[want.role].can_login, "the owner role must be NOLOGIN"
    assert found[a].can_login
    assert found[b].can_login
    assert {found[r].comment for r in (want.role, a, b)} == {"aitbc-operator: ns/alt"}
    assert databases(pg_server.server, names)[want.database] == want.role
    assert login_error(pg_server.server, a, pw_a, want.database) is None
    assert login_error(pg_server.server, b, pw_a, want.database) is not None, "the standby login has no password"
    with as_role(pg_server, a, pw_a, want.database) as conn:
        conn.execute("CREATE TABLE trades (id int)")
        assert conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'trades'").fetchone() == (want.role,)
        assert conn.execute("SELECT current_user, session_user").fetchone() == (want.role, a)
    assert Action.SET_ACTS_AS in actions(first)

    # The switch: b gets a password; a keeps its own until it is retired.
    pw_b = generate_password()
    switch = converge(pg_server, want, created=True,
                      aux={b: AuxPassword(pw_b, PasswordAction.ROTATE), a: AuxPassword(None)})
    assert actions(switch) == [Action.SET_PASSWORD]
    assert login_error(pg_server.server, a, pw_a, want.database) is None, "the old login still works"
    with as_role(pg_server, b, pw_b, want.database) as conn:
        conn.execute("INSERT INTO trades VALUES (1)")  # the owner's table, through the other login
    retire = converge(pg_server, want, created=True,
                      aux={b: AuxPassword(pw_b), a: AuxPassword(None, PasswordAction.CLEAR)})
    assert actions(retire) == [Action.CLEAR_PASSWORD]
    assert login_error(pg_server.server, a, pw_a, want.database) is not None, "the retired login no longer works"
    assert converge(pg_server, want, created=True, aux={b: AuxPassword(pw_b), a: AuxPassword(None)}).steps == ()


def test_alternating_drift_is_repaired_and_foreign_logins_are_not_taken_over(pg_server: PgTestServer,
                                                                             names: str) -> None:
    want = alternating(names)
    a, b = want.logins
    pw = generate_password()
    converge(pg_server, want, aux={a: AuxPassword(pw, PasswordAction.ROTATE), b: AuxPassword(None)})
    su(pg_server.server, f'REVOKE "{want.role}" FROM "{a}" GRANTED BY "{ADMIN}"')
    su(pg_server.server, f'ALTER ROLE "{a}" RESET role')
    su(pg_server.server, f'ALTER ROLE "{want.role}" LOGIN')
    su(pg_server.server, f"ALTER ROLE \"{a}\" PASSWORD 'changed-by-hand'")
    repair = converge(pg_server, want, created=True, aux={a: AuxPassword(pw), b: AuxPassword(None)})
    assert set(actions(repair)) == {Action.DISABLE_LOGIN, Action.GRANT_MEMBERSHIP, Action.SET_ACTS_AS,
                                    Action.SET_PASSWORD}
    assert all(s.drift for s in repair.steps)
    assert login_error(pg_server.server, a, pw, want.database) is None

    other = alternating(f"{names}x")
    su(pg_server.server, f'CREATE ROLE "{other.logins[1]}" LOGIN')  # made by hand: never adopted
    with pytest.raises(NameConflict, match="not taken over"):
        converge(pg_server, other, aux={other.logins[0]: AuxPassword(pw, PasswordAction.ROTATE)})
    assert other.role not in roles(pg_server.server, f"{names}x"), "refused before anything was made"


# --- the read-only role ---


def test_read_only_role_reads_tables_made_later_and_cannot_write(pg_server: PgTestServer, names: str) -> None:
    owner_pw, ro_pw = generate_password(), generate_password()
    want = DesiredDatabase(database=f"{names}_db", role=f"{names}_app", owner="ns/ro", read_only=f"{names}_ro",
                           schemas=(DesiredSchema("ledger"),))
    ro = want.read_only
    assert ro is not None
    converge(pg_server, want, password=owner_pw, aux={ro: AuxPassword(ro_pw, PasswordAction.ROTATE)})
    with as_role(pg_server, want.role, owner_pw, want.database) as conn:
        conn.execute("CREATE TABLE public.later (id int)")
        conn.execute("INSERT INTO later VALUES (42)")
        conn.execute("CREATE TABLE ledger.entries (id int)")
        conn.execute("INSERT INTO ledger.entries VALUES (7)")
    with as_role(pg_server, ro, ro_pw, want.database) as conn:
        assert conn.execute("SELECT id FROM later").fetchall() == [(42,)]
        assert conn.execute("SELECT id FROM ledger.entries").fetchall() == [(7,)]
        for write in ("INSERT INTO later VALUES (1)", "UPDATE later SET id = 1", "DELETE FROM later",
                      "CREATE TABLE public.mine (id int)", "CREATE TABLE ledger.mine (id int)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(write)
    # drift: a grant revoked by hand is given back, nothing else changes
    su(pg_server.server, f'REVOKE SELECT ON later FROM "{ro}"', dbname=want.database)
    repair = converge(pg_server, want, password=owner_pw, created=True, aux={ro: AuxPassword(ro_pw)})
    assert actions(repair) == [Action.GRANT_SELECT]
    assert converge(pg_server, want, password=owner_pw, created=True, aux={ro: AuxPassword(ro_pw)}).steps == ()
    # readOnly disabled: the role stays, without LOGIN
    off = DesiredDatabase(database=want.database, role=want.role, owner="ns/ro", read_only=ro,
                          read_only_login=False, schemas=want.schemas)
    assert actions(converge(pg_server, off, password=owner_pw, created=True)) == [Action.DISABLE_LOGIN]
    assert login_error(pg_server.server, ro, ro_pw, want.database) is not None


# --- extensions and schemas ---


def test_trusted_extension_created_as_the_owner_recreated_and_dropped(pg_server: PgTestServer, names: str) -> None:
    pw = generate_password()
    want = DesiredDatabase(database=f"{names}_db", role=f"{names}_app", owner="ns/ext",
                           extensions=(DesiredExtension("citext"),), schemas=(DesiredSchema("app"),))
    first = converge(pg_server, want, password=pw)
    assert Action.CREATE_EXTENSION in actions(first)
    assert Action.CREATE_SCHEMA in actions(first)
    with as_role(pg_server, want.role, pw, want.database) as conn:
        owner = conn.execute("SELECT pg_get_userbyid(extowner) FROM pg_extension WHERE extname = 'citext'").fetchone()
        assert owner == (want.role,)
        assert conn.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'app'").fetchone() == (
            want.role,)
    assert converge(pg_server, want, password=pw, created=True).steps == ()
    su(pg_server.server, "DROP EXTENSION citext", dbname=want.database)
    su(pg_server.server, "DROP SCHEMA app", dbname=want.database)
    again = converge(pg_server, want, password=pw, created=True)
    assert sorted(actions(again)) == sorted([Action.CREATE_EXTENSION, Action.CREATE_SCHEMA])
    gone = DesiredDatabase(database=want.database, role=want.role, owner="ns/ext",
                           extensions=(DesiredExtension("citext", present=False),),
                           schemas=(DesiredSchema("app", present=False),))
    assert sorted(actions(converge(pg_server, gone, password=pw, created=True))) == sorted(
        [Action.DROP_EXTENSION, Action.DROP_SCHEMA])
    # removed from the list: left alone
    su(pg_server.server, "CREATE EXTENSION citext", dbname=want.database)
    plain = DesiredDatabase(database=want.database, role=want.role, owner="ns/ext")
    assert converge(pg_server, plain, password=pw, created=True).steps == ()


def test_untrusted_extension_is_refused_before_anything_is_made(pg_server: PgTestServer, names: str) -> None:
    want = DesiredDatabase(database=f"{names}_db", role=f"{names}_app", owner="ns/ext",
                           extensions=(DesiredExtension("file_fdw"),))
    with pytest.raises(InsufficientPrivilege, match=r"file_fdw is not trusted.*nothing was changed"):
        converge(pg_server, want, password=generate_password())
    assert roles(pg_server.server, names) == {}
    assert databases(pg_server.server, names) == {}
    unknown = DesiredDatabase(database=f"{names}_db", role=f"{names}_app", owner="ns/ext",
                              extensions=(DesiredExtension("no_such_extension"),))
    with pytest.raises(InvalidSpec, match="not available"):
        converge(pg_server, unknown, password=generate_password())
    wrong_version = DesiredDatabase(database=f"{names}_db", role=f"{names}_app", owner="ns/ext",
                                    extensions=(DesiredExtension("citext", "0.1"),))
    with pytest.raises(InvalidSpec, match=r"no version 0\.1"):
        converge(pg_server, wrong_version, password=generate_password())
    assert databases(pg_server.server, names) == {}


def test_a_schema_owned_by_someone_else_is_not_taken_over(pg_server: PgTestServer, names: str) -> None:
    pw = generate_password()
    want = DesiredDatabase(database=f"{names}_db", role=f"{names}_app", owner="ns/sch")
    converge(pg_server, want, password=pw)
    su(pg_server.server, "CREATE SCHEMA theirs", dbname=want.database)  # owned by the superuser
    taken = DesiredDatabase(database=want.database, role=want.role, owner="ns/sch",
                            schemas=(DesiredSchema("theirs", present=False),))
    with pytest.raises(NameConflict, match="owned by postgres"):
        converge(pg_server, taken, password=pw, created=True)


def test_drop_removes_the_logins_and_the_read_only_role(pg_server: PgTestServer, names: str) -> None:
    want = alternating(names, read_only=f"{names}_ro")
    a, b = want.logins
    converge(pg_server, want, aux={a: AuxPassword(generate_password(), PasswordAction.ROTATE), b: AuxPassword(None),
                                   f"{names}_ro": AuxPassword(generate_password(), PasswordAction.ROTATE)})
    assert len(roles(pg_server.server, names)) == 4
    steps = run(lambda pool: drop(pool, pg_server.admin, want))
    assert [s.action for s in steps].count(Action.DROP_ROLE) == 4
    assert roles(pg_server.server, names) == {}
    assert databases(pg_server.server, names) == {}


# --- Secret templates: the rendered forms log in with a hostile password ---


def test_templated_urls_and_pgpass_line_log_in_with_a_password_full_of_url_hostile_characters(
        pg_server: PgTestServer, names: str, tmp_path: Path) -> None:
    import sqlalchemy

    from aitbc_operator.builders.secret_templates import render

    hostile = "p@ss:w/o?r#d%'\"\\+x"
    role = f"{names}_tpl"
    su(pg_server.server, sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role),
                                                                            sql.Literal(hostile)))
    values = {"user": role, "password": hostile, "host": pg_server.server.host, "port": str(pg_server.server.port),
              "database": "postgres", "sslmode": "disable"}
    url = render("postgresql+psycopg://{{ .user | urlescape }}:{{ .password | urlescape }}@{{ .host }}:{{ .port }}/"
                 "{{ .database }}?sslmode={{ .sslmode }}", values)
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT current_user").scalar_one() == role
    engine.dispose()
    libpq = render("postgresql://{{ .user | urlescape }}:{{ .password | urlescape }}@{{ .host }}:{{ .port }}/"
                   "{{ .database }}?sslmode={{ .sslmode }}", values)
    with psycopg.connect(libpq) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)
    passfile = tmp_path / "pgpass"
    passfile.write_text(render("{{ .host | pgpass }}:{{ .port }}:{{ .database | pgpass }}:{{ .user | pgpass }}:"
                               "{{ .password | pgpass }}", values) + "\n")
    passfile.chmod(0o600)
    with psycopg.connect(host=values["host"], port=values["port"], user=role, dbname="postgres", sslmode="disable",
                         passfile=str(passfile)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)
    su(pg_server.server, sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
