"""Make an existing chain database NOCOW by re-creating it in its (already NOCOW) directory.

A directory's FS_NOCOW_FL applies only to files created in it afterwards, and Btrfs silently ignores the flag on a
non-empty file. So a ``chain.db`` created before the directory was flagged stays copy-on-write until it is
re-created: copied into a new file in the flagged directory, verified, and renamed over the original.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import suppress
from pathlib import Path

from . import db as sq
from .defaults import DEFAULT_BUSY_TIMEOUT
from .fs import has_nocow, set_nocow

#: Suffix of the temporary copy; a leftover from an interrupted run is removed (the original is still intact then).
TMP_SUFFIX = ".nocow-tmp"


def needs_recreate(db: Path) -> bool:
    """Whether ``db`` or one of its -wal/-shm/-journal files lacks FS_NOCOW_FL."""
    return any(not has_nocow(path) for path in [db, *sq.sidecars(db)])


def flag_if_empty(db: Path) -> bool:
    """Set NOCOW directly on an empty ``db`` (Btrfs allows that); True when that was possible."""
    if db.stat().st_size != 0 or sq.sidecars(db):
        return False
    set_nocow(db)
    return True


def _identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _set_journal_mode(conn: sqlite3.Connection, mode: str) -> str:
    return str(conn.execute(f"PRAGMA journal_mode={mode}").fetchone()[0]).lower()


def _copy_exclusively(db: Path, tmp: Path, timeout: float) -> tuple[dict[str, int], tuple[int, int, int]]:
    """Copy ``db`` to ``tmp`` while holding an exclusive lock on ``db``.

    The connection switches to exclusive locking and, for a WAL database, to the rollback journal: that
    checkpoints the whole log into the main file and needs every other connection gone, so SQLite itself
    refuses when someone else has the database open. Returns the original's row counts and its identity at copy
    time.
    """
    try:
        with sq.connect(db, timeout=timeout) as src:
            src.execute("PRAGMA locking_mode=EXCLUSIVE")
            if sq.journal_mode(src) == "wal" and _set_journal_mode(src, "DELETE") != "delete":
                raise sq.DatabaseBusy(f"{db}: cannot leave WAL mode to copy it; another connection is open")
            src.execute("BEGIN EXCLUSIVE")  # in exclusive locking mode the lock stays after COMMIT until close
            src.execute("COMMIT")
            counts = sq.row_counts(src)
            with sq.create(tmp) as dst:
                src.backup(dst)
            identity = _identity(db)
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise sq.DatabaseBusy(f"{db}: {exc}") from exc
        raise
    return counts, identity


def recreate_nocow(db: Path, *, timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
    """Re-create ``db`` as a NOCOW file with identical content, in place.

    Refuses (DatabaseBusy) while another process has the database open: first the probes of
    `db.open_by_others`, then SQLite's own exclusive lock while copying. Steps: copy with the backup API into
    ``chain.db.nocow-tmp`` in the same (NOCOW) directory, check the copy carries the flag, fsync, verify it
    (integrity_check and identical row counts per table), check the original did not change meanwhile, then
    rename it over the original atomically and fsync the directory. The original stays untouched in content
    until that rename; on any failure the copy is removed and the original's journal mode restored.
    """
    reason = sq.open_by_others(db)
    if reason:
        raise sq.DatabaseBusy(f"{db}: {reason}")
    tmp = db.with_name(db.name + TMP_SUFFIX)
    sq.remove_with_sidecars(tmp)
    mode_before = sq.read_journal_mode(db, timeout=timeout)
    try:
        counts, identity = _copy_exclusively(db, tmp, timeout)
        if not has_nocow(tmp):
            raise sq.VolumeError(f"{tmp}: the copy did not inherit NOCOW from its directory")
        sq.verify_copy(tmp, counts)
        st = db.stat()
        os.chown(tmp, st.st_uid, st.st_gid)
        tmp.chmod(st.st_mode & 0o7777)
        sq.fsync_path(tmp)
        if _identity(db) != identity:
            raise sq.DatabaseBusy(f"{db}: changed while it was being copied; another process is using it")
        live = [p.name for p in sq.sidecars(db) if not p.name.endswith("-shm") and p.stat().st_size > 0]
        if live:
            raise sq.DatabaseBusy(f"{db}: {', '.join(live)} appeared while copying; another process is using it")
        reason = sq.open_by_others(db)
        if reason:
            raise sq.DatabaseBusy(f"{db}: {reason}")
        tmp.replace(db)
    except BaseException:
        sq.remove_with_sidecars(tmp)
        if mode_before == "wal" and db.exists():
            with suppress(sq.VolumeError, sqlite3.Error):  # best effort: do not hide the original error
                sq.ensure_wal(db, timeout=timeout)
        raise
    sq.fsync_path(db.parent)
    for leftover in sq.sidecars(db):  # belonged to the old file: an -shm index, empty journals
        leftover.unlink()
