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

Failure isolation: one dead server must not hold every handler of the operator (kopf runs at most
``AITBC_MAX_WORKERS`` at once, and each waits for its job). Each server has a circuit breaker: a connection that
cannot be opened (or is lost) fails that job, every job queued behind it and every new one at once with the same
ServerUnreachable, for ``BREAKER_COOLDOWN`` seconds; then one job (the trial) tries again, and its outcome closes or
re-opens the breaker. So a blackholed server costs one connect timeout per cool-down, not one per job. The queue is
bounded: while no connection is open, only the job opening it waits, any other is refused at once (ServerConnecting,
retried a second later: a healthy server connects in milliseconds, a dead one would hold every waiting caller for the
whole connect timeout); with a connection, at most ``MAX_QUEUED`` jobs wait (more: ServerBusy).
``shutdown()`` (leadership lost, from any thread) stops the pool at once: no job and no statement starts after it;
queued and new jobs fail with ``Stopped``, a running job fails at its next statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from ..errors import ServerBusy, ServerConnecting, ServerUnreachable, Stopped
from .conninfo import ADMIN_OPTIONS, AdminConnInfo
from .scram import LoginKeys, scram_sha256_verifier
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
#: Seconds a server's breaker stays open after a connection failure before one job may try again.
BREAKER_COOLDOWN = 10.0
#: Jobs that may wait for one server's worker; more are refused at once (ServerBusy).
MAX_QUEUED = 200


@dataclass
class StatementStats:
    """What the pool did, for tests, benchmarks and metrics (written by the worker threads)."""

    connects: int = 0
    connect_failures: int = 0
    statements: int = 0
    ddl: int = 0
    login_checks: int = 0
    key_logins: int = 0
    """Of the login checks, those the server accepted with the role's SCRAM keys (no PBKDF2)."""
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

    def verifier(self, role: str, password: str) -> str:
        """The SCRAM-SHA-256 verifier of ``password`` for ``role``, computed by libpq on this connection (no round
        trip)."""
        self._worker.check_running(f"compute the password verifier of role {role}")
        try:
            return scram_sha256_verifier(self._worker.connection(), role, password)
        except psycopg.Error as exc:
            raise translate(exc, f"compute the password verifier of role {role}") from None

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
    trial: bool = False
    """The one job allowed to try a server whose breaker is open."""


class _Breaker:
    """One server's circuit breaker, shared by the event loop (``admit``) and the worker thread (``settle``).

    Own code rather than a library such as pybreaker: it must answer before a job is queued (so a caller never waits
    behind a doomed job) and fail the jobs already queued, which call-wrapping breakers do not do.
    """

    def __init__(self, cooldown: float = BREAKER_COOLDOWN, clock: Callable[[], float] = time.monotonic) -> None:
        self._cooldown, self._clock = cooldown, clock
        self._lock = threading.Lock()
        self._failure: ServerUnreachable | None = None
        self._opened_at = 0.0
        self._trial = False

    def admit(self) -> bool:
        """Raise ServerUnreachable while open; True when this job is the trial after the cool-down."""
        with self._lock:
            if self._failure is None:
                return False
            if self._trial or self._clock() < self._opened_at + self._cooldown:
                # A constant message: a repeated refusal must not rewrite the resource's status each time.
                raise ServerUnreachable(f"{self._failure.message} (not tried again for {self._cooldown:.0f} s)")
            self._trial = True
            return True

    def settle(self, failure: ServerUnreachable | None, *, trial: bool) -> None:
        """A job ran: a connection failure opens the breaker (again), anything else closes it."""
        with self._lock:
            if trial:
                self._trial = False
            if failure is None:
                self._failure = None
            else:
                self._failure, self._opened_at = failure, self._clock()

    def abandon(self, *, trial: bool) -> None:
        """A job never ran (cancelled, or refused): if it was the trial, the next job may try instead."""
        if trial:
            with self._lock:
                self._trial = False


class _Worker:
    """The thread that owns one server's admin connection and runs its jobs in order."""

    def __init__(self, info: AdminConnInfo, stats: StatementStats, breaker: _Breaker,
                 stopped: threading.Event) -> None:
        self.info = info
        self.stats = stats
        self.stopped = stopped
        self.conn: Connection | None = None
        self.breaker = breaker
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._queued = 0
        self._running = False
        self._queued_lock = threading.Lock()
        #: Callers refused while a connection was being opened, told when the job opening it is over.
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._thread = threading.Thread(target=self._serve, name=f"pg-admin {info.describe()}", daemon=True)
        self._thread.start()

    def submit(self, job: _Job) -> None:
        """Queue a job; refused (ServerConnecting) while another job opens the connection, (ServerBusy) when full."""
        with self._queued_lock:
            if self.conn is None and (self._queued or self._running):
                refused = ServerConnecting(f"{self.info.describe()}: the connection is being opened; not waiting")
                refused.settled = job.loop.create_future()
                self._waiters.append((job.loop, refused.settled))
                raise refused
            if self._queued >= MAX_QUEUED:
                raise ServerBusy(f"{self.info.describe()}: {self._queued} jobs already wait for this server")
            self._queued += 1
        self._jobs.put(job)

    def _set_running(self, running: bool) -> None:
        """Mark the job in hand; at its end, tell the callers refused meanwhile (ServerConnecting) to come back."""
        with self._queued_lock:
            self._running = running
            waiters, self._waiters = ([], self._waiters) if running else (self._waiters, [])
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that caller's loop is closed
                loop.call_soon_threadsafe(_settle, future)

    def _take(self) -> _Job | None:
        job = self._jobs.get()
        if job is not None:
            with self._queued_lock:
                self._queued -= 1
        return job

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
            self.stats.connect_failures += 1
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
            while (job := self._take()) is not None:
                if job.future.cancelled():  # the caller gave up before its turn
                    self.breaker.abandon(trial=job.trial)
                    continue
                self._set_running(True)
                result: Any = None
                error: Exception | None = None
                try:
                    self.check_running("SQL job")
                    result = self._run(job)
                except Exception as exc:  # handed to the caller, whatever it is
                    error = exc
                # The breaker first: callers told of the outcome must find it open already.
                unreachable = error if isinstance(error, ServerUnreachable) else None
                self.breaker.settle(unreachable, trial=job.trial)
                self._set_running(False)
                _deliver(job, result, error)
                if unreachable is not None and not self._fail_queued(unreachable):
                    return
        finally:
            self.discard()

    def _fail_queued(self, failure: ServerUnreachable) -> bool:
        """Fail every job queued behind a connection failure at once; False when the stop request was among them."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return True
            if job is None:
                return False
            with self._queued_lock:
                self._queued -= 1
            self.breaker.abandon(trial=job.trial)
            _deliver(job, None, ServerUnreachable(f"{failure.message} (not tried: the attempt before it failed)"))

    def _run(self, job: _Job) -> Any:
        if job.info != self.info:  # password, sslmode or CA changed in the admin Secret
            self.discard()
            self.info = job.info
        reused = self.conn is not None and not self.conn.closed
        self.connection()
        self.stats.jobs += 1
        return job.work(Session(self, reused=reused))


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


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

    def __init__(self, *, breaker_cooldown: float = BREAKER_COOLDOWN,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``clock``: what the breakers' cool-downs are measured with (tests pass a clock they move)."""
        self._workers: dict[ServerKey, _Worker] = {}
        self._lock = threading.Lock()
        self._breaker_cooldown, self._clock = breaker_cooldown, clock
        self._stopped = threading.Event()
        self.stats = StatementStats()
        #: The SCRAM keys of the drift checks' logins as the roles (postgres/scram.py).
        self.login_keys = LoginKeys()

    async def run(self, info: AdminConnInfo, work: Callable[[Session], T]) -> T:
        """Run ``work`` on the server's admin connection, in its worker thread, after the jobs queued before it.

        ``work`` must be blocking code using only the Session (no event loop). Raises what it raises, and
        ServerUnreachable / AuthenticationFailed / InvalidSpec when the connection cannot be opened; at once
        ServerUnreachable while the server's breaker is open, ServerConnecting while another job opens the
        connection, ServerBusy when MAX_QUEUED jobs already wait.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:  # a job is queued before shutdown()'s stop request, or refused
            if self._stopped.is_set():
                raise Stopped(f"SQL job on {info.describe()}: not started, the operator stopped acting")
            worker = self._workers.get(info.server_key)
            if worker is None:
                worker = self._workers[info.server_key] = _Worker(
                    info, self.stats, _Breaker(self._breaker_cooldown, self._clock), self._stopped)
            trial = worker.breaker.admit()
            try:
                worker.submit(_Job(info, work, loop, future, trial))
            except (ServerBusy, ServerConnecting):
                worker.breaker.abandon(trial=trial)
                raise
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
