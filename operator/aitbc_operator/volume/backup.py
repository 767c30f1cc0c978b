"""`aitbc-operator volume backup`: online, consistent, height-stamped copies of the chain databases while the node runs.

Each copy is made with SQLite's backup API (see `db.online_backup`: one read transaction, so a snapshot, which in
WAL mode does not block the writer) into a hidden partial file, checked (quick_check, and integrity_check with
``verify``), fsynced, then renamed to ``<backups>/<chain>/chain-<UTC>-h<height>.db`` where ``<height>`` is MAX(height)
of the copy itself. ``<backups>/<chain>/manifest.json`` records every copy (time, height, size, sha256, verified);
retention (``keep`` copies, ``max_age``) never deletes the newest verified copy.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from .. import chainpaths
from ..models.chain_reports import BackupCopy, BackupReport, ChainBackupResult, backup_name, is_backup_name
from . import db as sq
from .defaults import DEFAULT_BUSY_TIMEOUT, DEFAULT_KEEP
from .prepare import utcnow

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BackupOptions:
    """Inputs of `volume backup`."""

    data_dir: Path
    chains: tuple[str, ...]
    keep: int = DEFAULT_KEEP
    """How many copies per chain to keep (the newest)."""
    max_age: timedelta | None = None
    """Copies older than this are removed too (never the newest verified one)."""
    backup_dir: Path | None = None
    """Where the copies go (``<backup_dir>/<chain>/``); default ``<data_dir>/backups``."""
    verify: bool = True
    """integrity_check on every copy."""
    stamp: datetime | None = None
    """The time in the copies' names (a Job passes its slot); default: now."""
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    now: Callable[[], datetime] = utcnow

    def chain_dir(self, chain: str) -> Path:
        """``<backups>/<chain>``."""
        if self.backup_dir is None:
            return Path(chainpaths.backup_dir(self.data_dir, chain))
        return self.backup_dir / chainpaths.validate_chain_id(chain)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(directory: Path) -> list[BackupCopy]:
    """The copies recorded in ``directory``'s manifest that still exist, oldest first (empty without a manifest)."""
    path = directory / MANIFEST
    try:
        raw = json.loads(path.read_text())
        copies = [BackupCopy.model_validate(entry) for entry in raw.get("backups", [])]
    except FileNotFoundError:
        return []
    except (ValueError, ValidationError, AttributeError) as exc:
        raise sq.VolumeError(f"{path}: unreadable manifest: {exc}") from exc
    return sorted((c for c in copies if is_backup_name(c.name) and (directory / c.name).is_file()),
                  key=lambda c: (c.time, c.name))


def write_manifest(directory: Path, chain: str, copies: list[BackupCopy]) -> None:
    """Replace the manifest atomically (temporary file, fsync, rename, fsync of the directory)."""
    tmp = directory / f".{MANIFEST}.tmp"
    body = {"chain": chain, "backups": [c.to_wire() for c in sorted(copies, key=lambda c: (c.time, c.name))]}
    tmp.write_text(json.dumps(body, indent=1) + "\n")
    sq.fsync_path(tmp)
    tmp.replace(directory / MANIFEST)
    sq.fsync_path(directory)


def retained(copies: list[BackupCopy], keep: int, max_age: timedelta | None, now: datetime) -> list[BackupCopy]:
    """The copies to keep: the newest ``keep`` not older than ``max_age``, plus the newest verified one always."""
    newest_first = sorted(copies, key=lambda c: (c.time, c.name), reverse=True)
    kept = [c for c in newest_first[:keep] if max_age is None or now - c.time <= max_age]
    verified = next((c for c in newest_first if c.verified), None)
    if verified is not None and verified not in kept:
        kept.append(verified)
    return kept


def max_height(conn: sqlite3.Connection) -> int | None:
    """MAX(height) of the ``block`` table on an open connection (None: empty or no such table)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'block'").fetchone() is None:
        return None
    value = conn.execute("SELECT MAX(height) FROM block").fetchone()[0]
    return None if value is None else int(value)


def block_height(db: Path) -> int | None:
    """MAX(height) of the ``block`` table of a database file (read-only)."""
    with sq.connect(db, read_only=True) as conn:
        conn.execute("PRAGMA query_only=ON")
        return max_height(conn)


def _copy(opts: BackupOptions, src: Path, directory: Path, stamp: datetime) -> BackupCopy:
    partial = directory / f".chain-{stamp.strftime('%Y%m%dT%H%M%SZ')}.partial"
    try:
        sq.online_backup(src, partial, timeout=opts.busy_timeout)
        verified = False
        if opts.verify:
            result = sq.integrity_check(partial, "full")
            if result is None or not result.ok:
                raise sq.CopyVerificationFailed(f"the copy failed integrity_check: {result.detail if result else '-'}")
            verified = True
        height = block_height(partial)
        final = directory / backup_name(stamp, height or 0)
        copy = BackupCopy(name=final.name, time=stamp, height=height, size=partial.stat().st_size,
                          sha256=sha256_of(partial), verified=verified)
        partial.replace(final)
        sq.fsync_path(directory)
    finally:
        sq.remove_with_sidecars(partial)
    return copy


def backup_chain(opts: BackupOptions, chain: str) -> ChainBackupResult:
    """Back up one chain, record it in the manifest, apply retention."""
    src = Path(chainpaths.chain_db_path(opts.data_dir, chain))
    if not src.is_file():
        return ChainBackupResult(chain=chain, skipped="no database")
    directory = opts.chain_dir(chain)
    stamp = (opts.stamp or opts.now()).astimezone(UTC).replace(microsecond=0)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        existing = read_manifest(directory)
        made = _copy(opts, src, directory, stamp)
        copies = [c for c in existing if c.name != made.name] + [made]
        kept = retained(copies, opts.keep, opts.max_age, opts.now())
        pruned = [c for c in copies if c not in kept]
        write_manifest(directory, chain, kept)
        for old in pruned:
            (directory / old.name).unlink(missing_ok=True)
    except (sq.VolumeError, sqlite3.Error, OSError) as exc:
        return ChainBackupResult(chain=chain, error=f"{src}: {exc}"[:300])
    return ChainBackupResult(chain=chain, copy=made, pruned=len(pruned))


def backup(opts: BackupOptions) -> BackupReport:
    """Back up every chain; ``ok`` false when any copy failed."""
    if opts.keep < 1:
        raise ValueError("keep must be at least 1")
    for chain in opts.chains:
        chainpaths.validate_chain_id(chain)
    results = [backup_chain(opts, chain) for chain in opts.chains]
    return BackupReport(ok=not any(r.error for r in results), chains=results)

