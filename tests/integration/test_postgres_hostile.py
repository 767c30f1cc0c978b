"""Hostile input at a real server: injection-shaped names never reach SQL; suspicious-but-valid names and passwords
full of quotes create exactly the intended objects and nothing else."""

from __future__ import annotations

import asyncio

import pytest
from benchmarks.db_floor import create_floor

from aitbc_operator.errors import InvalidSpec
from aitbc_operator.postgres import Action, DesiredDatabase, ServerPool, database_size, drop, reconcile
from tests.pg.fixtures import PgTestServer
from tests.pg.inspect import databases, login_error, roles

pytestmark = pytest.mark.postgres

HOSTILE_NAMES = [
    'a"b',
    "x; DROP ROLE aitbc_admin; --",
    "x'; DROP DATABASE postgres; --",
    "with space",
    "ünïcode",
    "a" * 64,
    "é" * 32,  # 32 characters, 64 bytes
    "Upper",
    "1abc",
    "a-b",
    "",
    "a\x00b",
    "pg_signal_backend",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_rejected_before_any_sql(pg_server: PgTestServer, name: str) -> None:
    before_roles, before_dbs = roles(pg_server.server), databases(pg_server.server)
    log_start = pg_server.server.log_size()
    pool = ServerPool()

    with pytest.raises(InvalidSpec):
        DesiredDatabase(database=name, role="ok_role", owner="ns/name")
    with pytest.raises(InvalidSpec):
        DesiredDatabase(database="ok_db", role=name, owner="ns/name")
    with pytest.raises(InvalidSpec):
        asyncio.run(database_size(pool, pg_server.admin, name))

    assert pool.stats.connects == 0  # not even a connection was opened
    assert pool.stats.statements == 0
    assert pg_server.server.ddl_statements("aitbc_admin", log_start) == []
    assert roles(pg_server.server) == before_roles
    assert databases(pg_server.server) == before_dbs


@pytest.mark.parametrize(("database", "role"), [("postgres", "ok_role"), ("template1", "ok_role"),
                                                ("ok_db", "postgres"), ("ok_db", "public"), ("ok_db", "current_user")])
def test_reserved_names_are_rejected(database: str, role: str) -> None:
    with pytest.raises(InvalidSpec, match="reserved"):
        DesiredDatabase(database=database, role=role, owner="ns/name")


def test_admin_role_itself_is_refused(pg_server: PgTestServer) -> None:
    want = DesiredDatabase(database="admin_db_probe", role="aitbc_admin", owner="ns/name")
    with pytest.raises(InvalidSpec, match="admin role itself"):
        asyncio.run(reconcile(ServerPool(), pg_server.admin, want, password="x" * 20))
    assert "admin_db_probe" not in databases(pg_server.server)


def test_suspicious_valid_names_and_quoted_passwords_create_only_the_intended_objects(pg_server: PgTestServer) -> None:
    """Names that pass validation but are SQL keywords or read like SQL, and passwords full of quotes."""
    server = pg_server.server
    cases = [
        (DesiredDatabase(database="select", role="user", owner="ns/a"), "'; DROP ROLE aitbc_admin; --\"\\"),
        (DesiredDatabase(database="drop_database_postgres", role="or_1_eq_1", owner="ns/b"),
         "x' || pg_sleep(10) || '\"; $$ $q$ ;--"),
        (DesiredDatabase(database="_" + "x" * 62, role="table", owner="ns/c"), "%s %(x)s {} \\' \\\\ '' \"\""),
    ]
    before_roles, before_dbs = roles(server), databases(server)

    async def body(pool: ServerPool) -> None:
        for want, password in cases:
            result = await reconcile(pool, pg_server.admin, want, password=password)
            assert Action.CREATE_DATABASE in [s.action for s in result.steps]

    pool = ServerPool()

    async def main() -> None:
        try:
            await body(pool)
        finally:
            await pool.aclose()

    asyncio.run(main())
    try:
        new_roles = set(roles(server)) - set(before_roles)
        new_dbs = set(databases(server)) - set(before_dbs)
        assert new_roles == {want.role for want, _ in cases}
        assert new_dbs == {want.database for want, _ in cases}
        assert {name: databases(server)[name] for name in new_dbs} == {w.database: w.role for w, _ in cases}
        assert "aitbc_admin" in roles(server)
        assert set(before_roles) <= set(roles(server))
        for want, password in cases:
            assert login_error(server, want.role, password, want.database) is None
            assert password not in server.log_text()
    finally:
        async def cleanup() -> None:
            cleanup_pool = ServerPool()
            for want, _ in cases:
                await drop(cleanup_pool, pg_server.admin, want)
            await cleanup_pool.aclose()

        asyncio.run(cleanup())
    assert roles(server) == before_roles
    assert databases(server) == before_dbs


def test_benchmark_floor_runs_the_reconcilers_statements(pg_server: PgTestServer, names: str) -> None:
    server = pg_server.server
    wanted = [DesiredDatabase(database=f"{names}_db{i}", role=f"{names}_r{i}", owner=f"bench/db{i}")
              for i in range(3)]
    result = create_floor(pg_server.admin_login.conninfo(), wanted, password="floor-password-123")

    assert result.databases == 3
    assert result.ddl == 15  # the 5 DDL statements of a create reconcile, per database
    assert result.statements == 3 * (1 + 5 + 1)
    assert databases(server, names) == {w.database: w.role for w in wanted}

    # The operator's reconcile agrees that the floor created exactly what it would have: nothing left to do.
    async def check() -> list[int]:
        pool = ServerPool()
        try:
            return [len((await reconcile(pool, pg_server.admin, w, password="floor-password-123")).steps)
                    for w in wanted]
        finally:
            await pool.aclose()

    assert asyncio.run(check()) == [0, 0, 0]
