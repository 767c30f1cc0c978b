"""`aitbc-operator volume restore`: put a verified copy back as a chain's ``chain.db`` (the node and RPC stopped).

Steps, each looking before it acts; nothing of the current database is changed until the new file is ready:
1. resolve the copy (a file name, ``latest`` or ``latest-verified``) in the chain's manifest and verify it: the
   file's SHA-256 equals the manifest's, ``integrity_check`` passes, it has a ``block`` table. ``--check-only``
   stops here (the operator runs that while the node still runs: a missing or corrupt copy changes nothing);
2. refuse while any process has the current database open (`db.open_by_others`);
3. copy it into a new file in the chain directory (so it is created with the directory's NOCOW flag), check the
   copy's SHA-256, set WAL mode, run ``integrity_check``, give it the current file's owner and mode, fsync;
4. move the current ``chain.db`` and its ``-wal``/``-shm`` aside to ``chain.db.pre-restore-<UTC>`` (never deleted),
   rename the new file into place, fsync the directory.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .. import chainpaths
from ..models.chain_reports import BackupCopy, RestoreReport
from . import db as sq
from .backup import block_height, read_manifest, sha256_of
from .defaults import DEFAULT_BUSY_TIMEOUT
from .fs import has_nocow
from .prepare import STAMP_FORMAT, utcnow

TMP_SUFFIX = ".restore-tmp"


@dataclass(frozen=True)
class RestoreOptions:
    """Inputs of `volume restore`."""

    data_dir: Path
    chain: str
    backup: str = "latest-verified"
    """A copy's file name, ``latest`` or ``latest-verified``."""
    backup_dir: Path | None = None
    """Where the copies are (``<backup_dir>/<chain>/``); default ``<data_dir>/backups``."""
    check_only: bool = False
    uid: int | None = None
    """Owner of the restored file (default: the current file's, else the chain directory's)."""
    gid: int | None = None
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    now: Callable[[], datetime] = utcnow

    @property
    def copies_dir(self) -> Path:
        """``<backups>/<chain>``."""
        if self.backup_dir is None:
            return Path(chainpaths.backup_dir(self.data_dir, self.chain))
        return self.backup_dir / chainpaths.validate_chain_id(self.chain)


class RestoreRefused(sq.VolumeError):
    """The copy cannot be used (missing, corrupt, not matching its manifest) or the database is in use."""


def resolve(copies: list[BackupCopy], selector: str) -> BackupCopy:
    """The copy a selector names (copies oldest first); RestoreRefused naming what is missing."""
    if selector == "latest":
        found = copies[-1] if copies else None
    elif selector == "latest-verified":
        found = next((c for c in reversed(copies) if c.verified), None)
    else:
        found = next((c for c in copies if c.name == selector), None)
    if found is None:
        listed = ", ".join(c.name for c in copies[-5:]) or "none"
        raise RestoreRefused(f"no backup {selector!r} (newest copies: {listed})")
    return found


def verify(directory: Path, copy: BackupCopy) -> int | None:
    """Check a copy against its manifest entry and SQLite; its MAX(height). RestoreRefused saying why not."""
    path = directory / copy.name
    if not path.is_file():
        raise RestoreRefused(f"backup {copy.name} is in the manifest but its file is missing")
    if copy.sha256 and sha256_of(path) != copy.sha256:
        raise RestoreRefused(f"backup {copy.name} does not match its manifest's sha256 (damaged or replaced)")
    result = sq.integrity_check(path, "full")
    if result is None or not result.ok:
        raise RestoreRefused(f"backup {copy.name} is corrupt: {result.detail if result else 'not checked'}")
    try:
        return block_height(path)
    except sqlite3.Error as exc:
        raise RestoreRefused(f"backup {copy.name} is unreadable: {exc}") from exc


def _owner(opts: RestoreOptions, current: Path) -> tuple[int, int]:
    ref = (current if current.exists() else current.parent).stat()
    return (ref.st_uid if opts.uid is None else opts.uid), (ref.st_gid if opts.gid is None else opts.gid)


def _stage(opts: RestoreOptions, source: Path, copy: BackupCopy, current: Path) -> Path:
    """The copy as a ready WAL database beside ``current`` (not yet in place)."""
    tmp = current.with_name(current.name + TMP_SUFFIX)
    sq.remove_with_sidecars(tmp)
    shutil.copyfile(source, tmp)
    sq.fsync_path(tmp)
    if copy.sha256 and sha256_of(tmp) != copy.sha256:
        raise sq.VolumeError(f"the staged copy of {copy.name} differs from the backup")
    sq.ensure_wal(tmp, timeout=opts.busy_timeout)
    result = sq.integrity_check(tmp, "full")
    if result is None or not result.ok:
        raise sq.VolumeError(f"the staged copy of {copy.name} failed integrity_check: {result and result.detail}")
    uid, gid = _owner(opts, current)
    os.chown(tmp, uid, gid)
    tmp.chmod((current.stat().st_mode & 0o7777) if current.exists() else 0o644)
    sq.fsync_path(tmp)
    return tmp


def _move_aside(current: Path, stamp: str) -> str | None:
    """``chain.db`` and its sidecars to ``chain.db.pre-restore-<stamp>`` (paired names SQLite finds again)."""
    if not current.exists():
        return None
    target, n = current.with_name(f"{current.name}.pre-restore-{stamp}"), 1
    while target.exists():
        n += 1
        target = current.with_name(f"{current.name}.pre-restore-{stamp}-{n}")
    for sidecar in sq.sidecars(current):
        sidecar.rename(target.with_name(target.name + sidecar.name.removeprefix(current.name)))
    current.rename(target)
    return target.name


def restore(opts: RestoreOptions) -> RestoreReport:
    """Restore (or with check_only, only verify) one chain; never raises for what it finds."""
    chainpaths.validate_chain_id(opts.chain)
    report = RestoreReport(ok=False, chain=opts.chain, check_only=opts.check_only)
    current = Path(chainpaths.chain_db_path(opts.data_dir, opts.chain))
    tmp = current.with_name(current.name + TMP_SUFFIX)
    try:
        copy = resolve(read_manifest(opts.copies_dir), opts.backup)
        report.backup = copy.name
        report.height = verify(opts.copies_dir, copy)
        if opts.check_only:
            report.ok = True
            return report
        if current.exists() and (reason := sq.open_by_others(current)):
            raise RestoreRefused(f"{current} is in use ({reason}): stop the node and the RPC first")
        current.parent.mkdir(parents=True, exist_ok=True)
        staged = _stage(opts, opts.copies_dir / copy.name, copy, current)
        report.moved_aside = _move_aside(current, opts.now().astimezone(UTC).strftime(STAMP_FORMAT))
        staged.replace(current)
        sq.remove_with_sidecars(tmp)  # an -shm the staging connections left (the file itself was renamed)
        sq.fsync_path(current.parent)
        report.nocow = has_nocow(current)
        report.ok = True
    except (sq.VolumeError, sqlite3.Error, OSError) as exc:
        sq.remove_with_sidecars(tmp)
        report.error = str(exc)[:500]
    return report
