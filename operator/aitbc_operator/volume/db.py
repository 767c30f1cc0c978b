"""SQLite operations on chain databases: journal mode, integrity, exclusivity probes, copies.

The standard library's sqlite3 is used for PRAGMAs and the online backup API. Connections are opened in
autocommit mode (``isolation_level=None``) so that transactions are explicit.

Every connection is hardened (:func:`harden`) before it reads a schema: the chain databases are writable by the node
container, and this tool runs as root in the init container, so a view, trigger, CHECK/DEFAULT or index expression
planted in a schema must not get to call anything but SQLite's innocuous built-ins, and nothing may load an extension.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..chainpaths import SQLITE_SIDECAR_SUFFIXES
from .defaults import DEFAULT_BUSY_TIMEOUT

IntegrityLevel = Literal["quick", "full", "off"]

#: SQLite's unix VFS lock bytes (os_unix.c): the main file's PENDING/RESERVED/SHARED range starts at 1 GiB;
#: every connection to a WAL database holds a shared lock on the -shm "dead man switch" byte while it is open.
_PENDING_BYTE = 0x40000000
_LOCK_RANGE = 512
_SHM_DMS_BYTE = 128



class VolumeError(Exception):
    """A chain database could not be prepared, checked or copied."""


class DatabaseBusy(VolumeError):
    """Another process has the database open; it must not be re-created or moved now."""


class CopyVerificationFailed(VolumeError):
    """A copy of a database did not pass its integrity check or its row counts differ from the original."""


@dataclass(frozen=True)
class IntegrityResult:
    """The outcome of PRAGMA quick_check / integrity_check."""

    ok: bool
    detail: str
    """``ok``, or the first problem SQLite reported."""


def sidecars(db: Path) -> list[Path]:
    """The ``-wal``, ``-shm`` and ``-journal`` files beside ``db`` that exist."""
    return [p for p in (db.with_name(db.name + s) for s in SQLITE_SIDECAR_SUFFIXES) if p.exists()]


def harden(conn: sqlite3.Connection) -> sqlite3.Connection:
    """``PRAGMA trusted_schema=OFF`` (schema code may call innocuous built-ins only) and extension loading off.

    Python builds without loadable extensions have no ``enable_load_extension`` (and then SQLite's
    ``load_extension()`` is off already); where it exists it is switched off explicitly.
    """
    if hasattr(conn, "enable_load_extension"):
        conn.enable_load_extension(False)
    conn.execute("PRAGMA trusted_schema=OFF")
    return conn


@contextmanager
def connect(
    db: Path, *, timeout: float = DEFAULT_BUSY_TIMEOUT, read_only: bool = False
) -> Iterator[sqlite3.Connection]:
    """A hardened connection to an existing database file (never creates one), closed on exit."""
    mode = "ro" if read_only else "rw"
    uri = f"{db.resolve().as_uri()}?mode={mode}"
    with closing(sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)) as conn:
        yield harden(conn)


@contextmanager
def create(db: Path) -> Iterator[sqlite3.Connection]:
    """A hardened connection to a new database file of this tool (a copy), closed on exit."""
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        yield harden(conn)


def journal_mode(conn: sqlite3.Connection) -> str:
    """The connection's journal mode, lower case (``wal``, ``delete``, ...)."""
    row = conn.execute("PRAGMA journal_mode").fetchone()
    return str(row[0]).lower()


def ensure_wal(db: Path, *, timeout: float = DEFAULT_BUSY_TIMEOUT) -> bool:
    """Put ``db`` in WAL mode and verify, on a fresh connection, that it reads back as WAL.

    Returns True when the mode was changed, False when the database already was in WAL mode.
    """
    with connect(db, timeout=timeout) as conn:
        if journal_mode(conn) == "wal":
            return False
        row = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if str(row[0]).lower() != "wal":
            raise VolumeError(f"{db}: SQLite refused journal_mode=WAL (still {row[0]})")
    with connect(db, timeout=timeout) as conn:
        mode = journal_mode(conn)
    if mode != "wal":
        raise VolumeError(f"{db}: journal mode reads back as {mode} after reopening, not wal")
    return True


def read_journal_mode(db: Path, *, timeout: float = DEFAULT_BUSY_TIMEOUT) -> str:
    """The journal mode stored in ``db``."""
    with connect(db, timeout=timeout) as conn:
        return journal_mode(conn)


def integrity_check(
    db: Path, level: IntegrityLevel, *, timeout: float = DEFAULT_BUSY_TIMEOUT, read_only: bool = False
) -> IntegrityResult | None:
    """Run PRAGMA quick_check (``quick``) or integrity_check (``full``); None for ``off``.

    A file SQLite cannot read at all ("file is not a database", "malformed") counts as corrupt. Only reads.
    """
    if level == "off":
        return None
    pragma = "PRAGMA quick_check" if level == "quick" else "PRAGMA integrity_check"
    try:
        with connect(db, timeout=timeout, read_only=read_only) as conn:
            conn.execute("PRAGMA query_only=ON")
            rows = [str(r[0]) for r in conn.execute(pragma).fetchall()]
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise DatabaseBusy(f"{db}: {exc}") from exc
        return IntegrityResult(ok=False, detail=str(exc))
    except sqlite3.DatabaseError as exc:
        return IntegrityResult(ok=False, detail=str(exc))
    if rows == ["ok"]:
        return IntegrityResult(ok=True, detail="ok")
    return IntegrityResult(ok=False, detail=rows[0] if rows else "no result")


def quote_identifier(name: str) -> str:
    """An SQLite identifier in double quotes (for table names read from sqlite_schema, never user input)."""
    return '"' + name.replace('"', '""') + '"'


def row_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """``COUNT(*)`` of every table in the database, by name."""
    names = [str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {name: int(conn.execute(f"SELECT COUNT(*) FROM {quote_identifier(name)}").fetchone()[0]) for name in names}


# --- is anyone else using the database? -------------------------------------------------------------------------------


def _range_locked_by_others(path: Path, start: int, length: int) -> bool:
    """Whether another process holds a POSIX lock on [start, start+length) of ``path``.

    Takes and drops a non-blocking write lock. Closing the descriptor drops every POSIX lock this process holds
    on the file, so this must not be called while this process has the database open.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start, os.SEEK_SET)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return True
        raise
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, length, start, os.SEEK_SET)
        return False
    finally:
        os.close(fd)


def _processes_with_open(paths: set[str], proc: Path = Path("/proc")) -> list[str]:
    """``pid (comm)`` of other processes (visible in this PID namespace) with one of ``paths`` open."""
    found: list[str] = []
    own = os.getpid()
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == own:
            continue
        try:
            targets = {str(fd.readlink()) for fd in (pid_dir / "fd").iterdir()}
        except OSError:  # gone, or not ours to look at
            continue
        if targets & paths:
            try:
                comm = (pid_dir / "comm").read_text().strip()
            except OSError:
                comm = "?"
            found.append(f"{pid_dir.name} ({comm})")
    return found


def open_by_others(db: Path) -> str | None:
    """Why ``db`` must be considered in use by another process, or None.

    Three probes, none of which opens the database through SQLite:
    - a lock on the ``-shm`` dead-man-switch byte: any connection to a WAL database, in any process or container
      on this kernel, holds it for as long as it is open;
    - a lock on the main file's lock range: a read or write transaction in rollback-journal mode;
    - open descriptors in ``/proc/*/fd``: idle connections of processes in this PID namespace (an idle
      rollback-journal connection in another container holds no lock and cannot be seen).
    Call it while this process has no connection to ``db`` (see `_range_locked_by_others`).
    """
    shm = db.with_name(db.name + "-shm")
    if _range_locked_by_others(shm, _SHM_DMS_BYTE, 1):
        return "open in WAL mode by another process (lock on the -shm file)"
    if _range_locked_by_others(db, _PENDING_BYTE, _LOCK_RANGE):
        return "locked by another process (a transaction is in progress)"
    names = {str(db.resolve())} | {str(p.resolve()) for p in sidecars(db)}
    holders = _processes_with_open(names)
    if holders:
        return "open by process " + ", ".join(holders[:3])
    return None


# --- copies ----------------------------------------------------------------------------------------------------------


def fsync_path(path: Path) -> None:
    """fsync a file or directory."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_with_sidecars(db: Path) -> None:
    """Remove a database file of ours (a temporary copy) and whatever SQLite left beside it."""
    for path in [db, *sidecars(db)]:
        with suppress(FileNotFoundError):
            path.unlink()


def verify_copy(copy: Path, expected_counts: dict[str, int]) -> None:
    """Raise CopyVerificationFailed unless ``copy`` passes integrity_check and has exactly ``expected_counts``."""
    result = integrity_check(copy, "full")
    if result is None or not result.ok:
        detail = result.detail if result else "not checked"
        raise CopyVerificationFailed(f"copy {copy.name} failed integrity_check: {detail}")
    with connect(copy) as conn:
        counts = row_counts(conn)
    if counts != expected_counts:
        raise CopyVerificationFailed(f"copy {copy.name} has row counts {counts}, the original {expected_counts}")


def online_backup(src: Path, dest: Path, *, timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
    """A consistent copy of ``src`` at ``dest`` made with SQLite's backup API while others may be writing.

    One backup step copies everything inside one read transaction, so the copy is a snapshot; in WAL mode that
    does not block the writer. The copy is switched to the rollback journal (a single self-contained file),
    checked with quick_check and fsynced.
    """
    with connect(src, timeout=timeout) as source, create(dest) as target:
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")
        check = target.execute("PRAGMA quick_check").fetchone()
        if str(check[0]) != "ok":
            raise CopyVerificationFailed(f"backup {dest.name} failed quick_check: {check[0]}")
    fsync_path(dest)
