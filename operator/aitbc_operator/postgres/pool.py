"""One reused admin connection per PostgreSQL server, owned by a worker thread, with statement counters.

Why a thread: the SQL of one reconcile is several round trips (observe; create role, mark it, grant it, create the
database, mark it; read its size). Run on the event loop, every round trip waits for the loop's next turn, and with
hundreds of resources in flight that turn is tens of milliseconds away, so the connection - the one point where a
server's work is serialized (DDL such as CREATE DATABASE serializes on the server anyway) - sat idle most of the time
it was held: 150-280 ms per new database against ~50 ms for the same statements in a plain loop. Here each server has
a worker thread that owns a blocking psycopg connection and runs whole units of work (*jobs*: "observe", "apply the
plan and read the size") back to back from a FIFO queue. The event loop is involved once per job: to hand it over and
to take its result. The SQL of one job never interleaves with another's.

A broken connection is dropped and re-opened by the next job; a reused connection that turns out to be dead at the
first statement of a job (server restarted, backend terminated, idle_session_timeout) is re-opened and that
(read-only) statement retried once, so none of these costs a failed reconcile. A job whose caller was cancelled
before it started is skipped; one already running finishes (its result is dropped), so a connection is never left in
an unknown state. Long-lived: create one ServerPool at operator startup and ``aclose()`` it at cleanup.

``shutdown()`` (leadership lost, from any thread) stops the pool at once: no job and no statement starts after it;
queued and new jobs fail with ``Stopped``, a running job fails at its next statement.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from ..errors import Stopped
from .conninfo import ADMIN_OPTIONS, AdminConnInfo
from .translate import translate, translate_connect_error

log = logging.getLogger(__name__)

Row = tuple[Any, ...]
Connection = psycopg.Connection[Row]
Query = sql.SQL | sql.Composed
Params = Sequence[Any] | Mapping[str, Any] | None
ServerKey = tuple[str, int, str, str]
T = TypeVar("T")

#: How long ``aclose()`` waits for a worker to finish its current job (statements time out after 120 s anyway).
CLOSE_TIMEOUT = 30.0


@dataclass
class StatementStats:
    """What the pool did, for tests, benchmarks and metrics (written by the worker threads)."""

    connects: int = 0
    statements: int = 0
    ddl: int = 0
    login_checks: int = 0
    jobs: int = 0
    ddl_by_server: dict[ServerKey, int] = field(default_factory=dict)


class Session:
    """Exclusive, blocking use of one server's admin connection inside a job (see ``ServerPool.run``)."""

    def __init__(self, worker: _Worker, *, reused: bool) -> None:
        self._worker = worker
        self._may_retry = reused

    @property
    def info(self) -> AdminConnInfo:
        """The admin connection this session uses."""
        return self._worker.info

    def query(self, statement: Query, params: Params = None, *, doing: str) -> list[Row]:
        """Run a read-only statement and return its rows. ``doing`` describes it for error messages."""
        return self._execute(statement, params, doing=doing, fetch=True)

    def ddl(self, statement: Query, *, doing: str) -> None:
        """Run one DDL statement (autocommit). Counted in ``ServerPool.stats.ddl``."""
        self._may_retry = False
        stats = self._worker.stats
        stats.ddl += 1
        key = self.info.server_key
        stats.ddl_by_server[key] = stats.ddl_by_server.get(key, 0) + 1
        self._execute(statement, None, doing=doing, fetch=False)

    def _execute(self, statement: Query, params: Params, *, doing: str, fetch: bool) -> list[Row]:
        while True:
            self._worker.check_running(doing)
            conn = self._worker.connection()
            self._worker.stats.statements += 1
            try:
                cursor = conn.execute(statement, params)
                return cursor.fetchall() if fetch else []
            except psycopg.OperationalError as exc:
                self._worker.discard()
                if self._may_retry and _connection_lost(exc):
                    log.info("admin connection to %s was stale; reconnecting", self.info.describe())
                    self._may_retry = False
                    continue
                raise translate(exc, doing) from None
            except psycopg.Error as exc:
                raise translate(exc, doing) from None
            finally:
                self._may_retry = False


def _connection_lost(exc: psycopg.OperationalError) -> bool:
    """The connection died while idle: closed (no SQLSTATE), or ended by the server (class 57P: terminated by an
    administrator, server shutdown or crash, idle_session_timeout)."""
    return not exc.sqlstate or exc.sqlstate.startswith("57P")


@dataclass
class _Job:
    info: AdminConnInfo
    work: Callable[[Session], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


class _Worker:
    """The thread that owns one server's admin connection and runs its jobs in order."""

    def __init__(self, info: AdminConnInfo, stats: StatementStats, stopped: threading.Event) -> None:
        self.info = info
        self.stats = stats
        self.stopped = stopped
        self.conn: Connection | None = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=f"pg-admin {info.describe()}", daemon=True)
        self._thread.start()

    def submit(self, job: _Job) -> None:
        self._jobs.put(job)

    def stop(self) -> None:
        self._jobs.put(None)

    def check_running(self, doing: str) -> None:
        """Raise Stopped once the pool was shut down."""
        if self.stopped.is_set():
            raise Stopped(f"{doing}: not started, the operator stopped acting")

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def connection(self) -> Connection:
        conn = self.conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self.conn = None
        try:
            conn = psycopg.Connection.connect(autocommit=True, options=ADMIN_OPTIONS, **self.info.connect_kwargs())
        except psycopg.Error as exc:
            raise translate_connect_error(exc, self.info.describe()) from None
        self.stats.connects += 1
        self.conn = conn
        return conn

    def discard(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:  # pragma: no cover - closing a broken connection
                log.debug("ignoring error while closing a broken connection", exc_info=True)

    def _serve(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                if job.future.cancelled():  # the caller gave up before its turn
                    continue
                try:
                    self.check_running("SQL job")
                    result: Any = self._run(job)
                except Exception as exc:  # handed to the caller, whatever it is
                    _deliver(job, None, exc)
                else:
                    _deliver(job, result, None)
        finally:
            self.discard()

    def _run(self, job: _Job) -> Any:
        if job.info != self.info:  # password, sslmode or CA changed in the admin Secret
            self.discard()
            self.info = job.info
        reused = self.conn is not None and not self.conn.closed
        self.connection()
        self.stats.jobs += 1
        return job.work(Session(self, reused=reused))


def _deliver(job: _Job, result: Any, exc: BaseException | None) -> None:
    def settle() -> None:
        if job.future.done():  # cancelled while running: nobody waits for it
            return
        if exc is not None:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)

    try:
        job.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: its caller is gone
        log.debug("dropping the result of a job whose event loop is closed")


class ServerPool:
    """Admin connections to PostgreSQL servers, one per (host, port, user, dbname), reused across reconciles."""

    def __init__(self) -> None:
        self._workers: dict[ServerKey, _Worker] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.stats = StatementStats()

    async def run(self, info: AdminConnInfo, work: Callable[[Session], T]) -> T:
        """Run ``work`` on the server's admin connection, in its worker thread, after the jobs queued before it.

        ``work`` must be blocking code using only the Session (no event loop). Raises what it raises, and
        ServerUnreachable / AuthenticationFailed / InvalidSpec when the connection cannot be opened.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:  # a job is queued before shutdown()'s stop request, or refused
            if self._stopped.is_set():
                raise Stopped(f"SQL job on {info.describe()}: not started, the operator stopped acting")
            worker = self._workers.get(info.server_key)
            if worker is None:
                worker = self._workers[info.server_key] = _Worker(info, self.stats, self._stopped)
            worker.submit(_Job(info, work, loop, future))
        return await future

    def shutdown(self) -> None:
        """Stop at once (from any thread): no job or statement starts after this; queued and new jobs fail with
        Stopped. The workers end after their current statement and close their connections."""
        with self._lock:
            self._stopped.set()
            workers = list(self._workers.values())
        for worker in workers:
            worker.stop()

    async def aclose(self) -> None:
        """Stop every worker after its queued jobs and close its connection (operator cleanup)."""
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.stop()
        for worker in workers:
            if not await asyncio.to_thread(worker.join, CLOSE_TIMEOUT):
                log.warning("admin connection to %s still busy after %.0f s; leaving it", worker.info.describe(),
                            CLOSE_TIMEOUT)
