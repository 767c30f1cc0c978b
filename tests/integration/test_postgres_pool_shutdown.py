"""ServerPool.shutdown against a real PostgreSQL 15 (what the operator does when it loses the leader lease): no job and
no statement starts after it; the running job fails at its next statement, queued and new jobs fail at once."""

from __future__ import annotations

import asyncio
import threading

import pytest
from psycopg import sql

from aitbc_operator.errors import Stopped
from aitbc_operator.postgres import ServerPool, Session
from tests.pg.fixtures import PgTestServer

pytestmark = pytest.mark.postgres


def pool_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("pg-admin")}


def test_shutdown_stops_every_job_and_statement_that_has_not_started(pg15: PgTestServer) -> None:
    ran: list[str] = []
    sleeping = threading.Event()

    def running_job(session: Session) -> None:
        sleeping.set()
        session.query(sql.SQL("SELECT pg_sleep(1)"), doing="sleep")
        ran.append("after the sleep")
        session.query(sql.SQL("SELECT 1"), doing="the statement after the shutdown")
        ran.append("never")

    def queued_job(session: Session) -> None:
        ran.append("queued")

    async def main() -> tuple[list[BaseException | None], int]:
        pool = ServerPool()
        try:
            running = asyncio.ensure_future(pool.run(pg15.admin, running_job))
            await asyncio.to_thread(sleeping.wait, 10)
            # Queued once the connection is open: while it is being opened, other jobs are refused (ServerConnecting).
            queued = [asyncio.ensure_future(pool.run(pg15.admin, queued_job)) for _ in range(3)]
            await asyncio.sleep(0.05)
            # From another thread, as the lease's renewal thread calls it.
            await asyncio.to_thread(pool.shutdown)
            outcomes = await asyncio.gather(running, *queued, return_exceptions=True)
            with pytest.raises(Stopped, match="not started"):
                await pool.run(pg15.admin, queued_job)
            return [o if isinstance(o, BaseException) else None for o in outcomes], pool.stats.statements
        finally:
            await pool.aclose()

    before = pool_threads()  # other tests' pools may still have theirs
    outcomes, statements = asyncio.run(main())
    assert all(isinstance(o, Stopped) for o in outcomes), outcomes
    assert "the statement after the shutdown" in str(outcomes[0])
    assert ran == ["after the sleep"], "the running statement finished; nothing started after the shutdown"
    assert statements == 1, "the pg_sleep alone was sent"
    assert pool_threads() <= before, "the worker thread ended"
