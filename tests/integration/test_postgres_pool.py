"""ServerPool against a real PostgreSQL 15: one admin connection per server, owned by a worker thread that runs
jobs whole and in order; cancelled callers never leave the connection in an unknown state; aclose stops the thread;
a dead server (a blackholed port) is tried once per breaker cool-down and nobody waits for its connection; a full
queue is refused at once."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import time
from collections.abc import Callable

import pytest
from psycopg import sql

from aitbc_operator.errors import ServerBusy, ServerConnecting, ServerUnreachable
from aitbc_operator.postgres import AdminConnInfo, ServerPool, Session
from aitbc_operator.postgres import pool as pool_module
from tests.pg.blackhole import Blackhole
from tests.pg.fixtures import PgTestServer
from tests.pg.inspect import su

pytestmark = pytest.mark.postgres

PID = sql.SQL("SELECT pg_backend_pid()")
Trace = list[tuple[str, float, float]]


def backend_pid(session: Session) -> int:
    return int(session.query(PID, doing="read the backend pid")[0][0])


def sleep(session: Session, seconds: float) -> None:
    session.query(sql.SQL("SELECT pg_sleep(%s)"), (seconds,), doing="sleep")


def pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pg-admin")]


def test_jobs_run_whole_in_order_on_one_connection_off_the_event_loop(pg15: PgTestServer) -> None:
    trace: Trace = []
    job_threads: set[int] = set()

    def job(tag: str) -> Callable[[Session], int]:
        def work(session: Session) -> int:
            job_threads.add(threading.get_ident())
            started = time.monotonic()
            sleep(session, 0.05)
            pid = backend_pid(session)
            trace.append((tag, started, time.monotonic()))
            return pid
        return work

    async def main() -> list[int]:
        pool = ServerPool()
        try:
            await pool.run(pg15.admin, backend_pid)  # open the connection (meanwhile nobody else may wait)
            return list(await asyncio.gather(*(pool.run(pg15.admin, job(f"job{i}")) for i in range(6))))
        finally:
            await pool.aclose()

    before = len(pool_threads())
    pids = asyncio.run(main())
    assert len(set(pids)) == 1, "all jobs share the one admin connection"
    assert job_threads
    assert threading.get_ident() not in job_threads, "jobs run in the worker thread, not on the loop"
    assert [tag for tag, _, _ in trace] == [f"job{i}" for i in range(6)], "FIFO"
    for (_, _, end), (_, start, _) in itertools.pairwise(trace):
        assert start >= end, "one job's statements never interleave with another's"
    assert len(pool_threads()) == before, "aclose stopped the worker thread"


def test_a_job_cancelled_before_its_turn_is_skipped_and_a_running_one_finishes(pg15: PgTestServer) -> None:
    ran: list[str] = []

    def long_job(session: Session) -> int:
        sleep(session, 0.4)
        ran.append("long")
        return backend_pid(session)

    def queued_job(session: Session) -> None:
        ran.append("queued")

    async def main() -> tuple[int, int, int]:
        pool = ServerPool()
        try:
            await pool.run(pg15.admin, backend_pid)  # the connection is open
            first = asyncio.ensure_future(pool.run(pg15.admin, long_job))
            second = asyncio.ensure_future(pool.run(pg15.admin, queued_job))
            await asyncio.sleep(0.1)  # the long job is running, the second one waits for its turn
            first.cancel()
            second.cancel()
            for task in (first, second):
                with pytest.raises(asyncio.CancelledError):
                    await task
            # The connection is not left mid-statement: the next job reuses it.
            pid_after = await pool.run(pg15.admin, backend_pid)
            return pid_after, pool.stats.connects, pool.stats.jobs
        finally:
            await pool.aclose()

    pid_after, connects, jobs = asyncio.run(main())
    assert ran == ["long"], "the running job finished; the cancelled queued job never ran"
    assert connects == 1
    assert pid_after > 0
    assert jobs == 3


def test_errors_reach_the_caller_and_a_dead_connection_is_replaced(pg15: PgTestServer) -> None:
    admin = pg15.admin
    closed_port = dataclasses.replace(admin, port=1)

    async def main() -> tuple[int, int, int]:
        pool = ServerPool()
        try:
            with pytest.raises(ServerUnreachable):
                await pool.run(closed_port, backend_pid)
            first = await pool.run(admin, backend_pid)
            su(pg15.server, "SELECT pg_terminate_backend(%s)", (first,))  # the connection dies between jobs
            second = await pool.run(admin, backend_pid)  # found dead at its first statement: reconnected, retried
            return first, second, pool.stats.connects
        finally:
            await pool.aclose()

    first, second, connects = asyncio.run(main())
    assert first != second
    assert connects == 2  # the unreachable server never connected; the real one twice


def test_a_blackholed_server_costs_one_connect_timeout_per_cooldown() -> None:
    """A port that accepts and never answers: the first job waits out the connect timeout, the others are refused at
    once meanwhile (nobody else waits for a connection being opened) and after it (circuit open); after the cool-down
    exactly one job tries again."""
    with Blackhole() as hole:
        dead = AdminConnInfo(host=hole.host, port=hole.port, user="admin", password="unused", sslmode="disable")

        async def main() -> tuple[list[BaseException | int], float, int, int]:
            pool = ServerPool(breaker_cooldown=1.0)
            try:
                first = await asyncio.gather(*(pool.run(dead, backend_pid) for _ in range(5)), return_exceptions=True)
                # The refused ones were told when the attempt was over (their retry need not poll).
                assert all(isinstance(e, ServerConnecting) and e.settled and e.settled.done() for e in first[1:])
                started = time.monotonic()
                with pytest.raises(ServerUnreachable, match="not tried again for 1 s"):
                    await pool.run(dead, backend_pid)
                refused_in = time.monotonic() - started
                accepted_while_open = hole.accepted
                await asyncio.sleep(1.0)  # the cool-down (the behaviour under test is time-based)
                trial = await asyncio.gather(*(pool.run(dead, backend_pid) for _ in range(3)), return_exceptions=True)
                assert [type(e) for e in trial] == [ServerUnreachable] * 3, "the trial, and two refused during it"
                return first, refused_in, accepted_while_open, pool.stats.connect_failures
            finally:
                await pool.aclose()

        first, refused_in, accepted_while_open, failures = asyncio.run(main())
    assert isinstance(first[0], ServerUnreachable)
    assert all(isinstance(e, ServerConnecting) for e in first[1:]), first
    assert refused_in < 0.5, "refused at once, not after another connect timeout"
    assert accepted_while_open == 1
    assert failures == 2, "one attempt, then one trial after the cool-down"


def test_a_full_queue_is_refused_at_once(pg15: PgTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "MAX_QUEUED", 2)

    async def main() -> list[BaseException | None]:
        pool = ServerPool()
        try:
            running = asyncio.ensure_future(pool.run(pg15.admin, lambda s: sleep(s, 0.5)))
            await asyncio.sleep(0.2)  # running: the queue is empty again
            jobs = [asyncio.ensure_future(pool.run(pg15.admin, lambda s: sleep(s, 0.01))) for _ in range(3)]
            return [*(await asyncio.gather(running, *jobs, return_exceptions=True))]
        finally:
            await pool.aclose()

    outcomes = asyncio.run(main())
    assert outcomes[:3] == [None, None, None]
    assert isinstance(outcomes[3], ServerBusy)
    assert "2 jobs already wait for this server" in str(outcomes[3])
