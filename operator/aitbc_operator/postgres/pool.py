"""One reused admin connection per PostgreSQL server, with statement counters.

Statements on one connection are serialized by a lock per server (DDL such as CREATE DATABASE serializes on the
server anyway). A broken connection is dropped and re-opened on next use; a reused connection that turns out to be
dead at the first statement of a session is re-opened and that (read-only) statement retried once, so a server restart
costs no failed reconcile. Long-lived: create one ServerPool at operator startup and ``aclose()`` it at cleanup.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from .conninfo import ADMIN_OPTIONS, AdminConnInfo
from .translate import translate, translate_connect_error

log = logging.getLogger(__name__)

Row = tuple[Any, ...]
Connection = psycopg.AsyncConnection[Row]
Query = sql.SQL | sql.Composed
Params = Sequence[Any] | Mapping[str, Any] | None


@dataclass
class StatementStats:
    """What the pool did, for tests, benchmarks and metrics."""

    connects: int = 0
    statements: int = 0
    ddl: int = 0
    login_checks: int = 0
    ddl_by_server: dict[tuple[str, int, str, str], int] = field(default_factory=dict)


@dataclass
class _Server:
    info: AdminConnInfo
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    conn: Connection | None = None


class Session:
    """Exclusive use of one server's admin connection; obtained from ``ServerPool.session()``."""

    def __init__(self, pool: ServerPool, server: _Server, *, reused: bool) -> None:
        self._pool = pool
        self._server = server
        self._may_retry = reused

    @property
    def info(self) -> AdminConnInfo:
        """The admin connection this session uses."""
        return self._server.info

    async def query(self, statement: Query, params: Params = None, *,
                    doing: str) -> list[Row]:
        """Run a read-only statement and return its rows. ``doing`` describes it for error messages."""
        return await self._execute(statement, params, doing=doing, fetch=True)

    async def ddl(self, statement: Query, *, doing: str) -> None:
        """Run one DDL statement (autocommit). Counted in ``ServerPool.stats.ddl``."""
        self._may_retry = False
        self._pool.stats.ddl += 1
        key = self.info.server_key
        self._pool.stats.ddl_by_server[key] = self._pool.stats.ddl_by_server.get(key, 0) + 1
        await self._execute(statement, None, doing=doing, fetch=False)

    async def _execute(self, statement: Query, params: Params, *, doing: str,
                       fetch: bool) -> list[Row]:
        while True:
            conn = await self._pool._connection(self._server)
            self._pool.stats.statements += 1
            try:
                cursor = await conn.execute(statement, params)
                return await cursor.fetchall() if fetch else []
            except psycopg.OperationalError as exc:
                await self._pool._discard(self._server)
                if self._may_retry and not exc.sqlstate:
                    log.info("admin connection to %s was stale; reconnecting", self.info.describe())
                    self._may_retry = False
                    continue
                raise translate(exc, doing) from None
            except psycopg.Error as exc:
                raise translate(exc, doing) from None
            except asyncio.CancelledError:
                # Cancelled mid-statement (handler timeout): the connection's state is unknown; start afresh.
                await self._pool._discard(self._server)
                raise
            finally:
                self._may_retry = False


class ServerPool:
    """Admin connections to PostgreSQL servers, one per (host, port, user, dbname), reused across reconciles."""

    def __init__(self) -> None:
        self._servers: dict[tuple[str, int, str, str], _Server] = {}
        self.stats = StatementStats()

    @asynccontextmanager
    async def session(self, info: AdminConnInfo) -> AsyncIterator[Session]:
        """Exclusive access to the server's admin connection for a few statements.

        Raises ServerUnreachable / AuthenticationFailed / InvalidSpec when it cannot connect.
        """
        server = self._servers.get(info.server_key)
        if server is None:
            server = self._servers[info.server_key] = _Server(info)
        async with server.lock:
            if server.info != info:  # password, sslmode or CA changed in the admin Secret
                await self._discard(server)
                server.info = info
            reused = server.conn is not None and not server.conn.closed
            await self._connection(server)
            yield Session(self, server, reused=reused)

    async def _connection(self, server: _Server) -> Connection:
        if server.conn is not None and not server.conn.closed and not server.conn.broken:
            return server.conn
        server.conn = None
        info = server.info
        try:
            conn = await psycopg.AsyncConnection.connect(autocommit=True, options=ADMIN_OPTIONS,
                                                         **info.connect_kwargs())
        except psycopg.Error as exc:
            raise translate_connect_error(exc, info.describe()) from None
        self.stats.connects += 1
        server.conn = conn
        return conn

    async def _discard(self, server: _Server) -> None:
        conn, server.conn = server.conn, None
        if conn is not None:
            try:
                await conn.close()
            except psycopg.Error:  # pragma: no cover - closing a broken connection
                log.debug("ignoring error while closing a broken connection", exc_info=True)

    async def aclose(self) -> None:
        """Close every connection (operator cleanup)."""
        for server in self._servers.values():
            async with server.lock:
                await self._discard(server)
        self._servers.clear()
