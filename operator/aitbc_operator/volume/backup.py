"""`aitbc-operator volume backup`: online, consistent copies of the chain databases while the node runs.

Each copy is made with SQLite's backup API (see `db.online_backup`) into a hidden partial file, checked and
fsynced, then renamed to ``<data_dir>/backups/<chain>/chain-<UTC timestamp>.db``; only the newest ``keep`` copies
per chain are kept.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import chainpaths
from . import db as sq
from .prepare import utcnow

#: ``chain-20261125T090000.123456Z.db``: fixed width, so name order is time order.
BACKUP_NAME_FORMAT = "chain-%Y%m%dT%H%M%S.%fZ.db"
BACKUP_NAME = re.compile(r"^chain-\d{8}T\d{6}\.\d{6}Z\.db$")
DEFAULT_KEEP = 7


@dataclass(frozen=True)
class BackupOptions:
    """Inputs of `volume backup`."""

    data_dir: Path
    chains: tuple[str, ...]
    keep: int = DEFAULT_KEEP
    """How many copies per chain to keep (the newest)."""
    busy_timeout: float = sq.DEFAULT_BUSY_TIMEOUT
    now: Callable[[], datetime] = utcnow


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups in ``directory`` (only files named like ours); the deleted."""
    ours = sorted(p for p in directory.iterdir() if BACKUP_NAME.fullmatch(p.name) and p.is_file())
    doomed = ours[: max(len(ours) - keep, 0)]
    for path in doomed:
        path.unlink()
    return doomed


def backup_chain(opts: BackupOptions, chain: str) -> dict[str, Any]:
    """Back up one chain; a JSON-ready entry for the report."""
    src = Path(chainpaths.chain_db_path(opts.data_dir, chain))
    if not src.is_file():
        return {"chain": chain, "skipped": "no database"}
    directory = Path(chainpaths.backup_dir(opts.data_dir, chain))
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / opts.now().astimezone(UTC).strftime(BACKUP_NAME_FORMAT)
    partial = directory / f".{final.name}.partial"
    try:
        sq.online_backup(src, partial, timeout=opts.busy_timeout)
        partial.replace(final)
        sq.fsync_path(directory)
    except (sq.VolumeError, sqlite3.Error, OSError) as exc:
        sq.remove_with_sidecars(partial)
        return {"chain": chain, "error": f"{src}: {exc}"}
    pruned = prune(directory, opts.keep)
    entry: dict[str, Any] = {"chain": chain, "path": str(final), "size": final.stat().st_size}
    if pruned:
        entry["pruned"] = [p.name for p in pruned]
    return entry


def backup(opts: BackupOptions) -> dict[str, Any]:
    """Back up every chain; the JSON report (``ok`` false when any copy failed)."""
    if opts.keep < 1:
        raise ValueError("keep must be at least 1")
    for chain in opts.chains:
        chainpaths.validate_chain_id(chain)
    entries = [backup_chain(opts, chain) for chain in opts.chains]
    return {"ok": not any("error" in e for e in entries), "backups": entries}
