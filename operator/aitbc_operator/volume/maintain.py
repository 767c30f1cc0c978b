"""`aitbc-operator volume maintain`: the runbook's "Vacuum SQLite database", a WAL checkpoint and an integrity check.

Per chain: ``PRAGMA wal_checkpoint(TRUNCATE)`` (online: it waits for readers as SQLite does and reports ``busy``
when one kept it from finishing), ``VACUUM`` (refused while another process has the database open: the operator
stops RPC and node first), then ``integrity_check`` or ``quick_check``. VACUUM rewrites the file in place, so it
keeps its inode and its NOCOW flag. Sizes of chain.db plus -wal before and after show what was reclaimed.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .. import chainpaths
from ..models.chain_reports import ChainMaintenance, MaintainReport
from . import db as sq


@dataclass(frozen=True)
class MaintainOptions:
    """Inputs of `volume maintain`."""

    data_dir: Path
    chains: tuple[str, ...]
    checkpoint: bool = True
    vacuum: bool = False
    integrity_check: sq.IntegrityLevel = "full"
    busy_timeout: float = 30.0


def _bytes(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def _work(opts: MaintainOptions, db: Path, entry: ChainMaintenance) -> None:
    if opts.vacuum and (reason := sq.open_by_others(db)):
        raise sq.DatabaseBusy(f"VACUUM needs the database to itself; {db} is {reason}")
    with sq.connect(db, timeout=opts.busy_timeout) as conn:
        if opts.checkpoint:
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            entry.checkpoint = "busy" if busy else "ok"
        if opts.vacuum:
            conn.execute("VACUUM")
            entry.vacuumed = True
            if opts.checkpoint:  # VACUUM went through the WAL: fold it back and truncate it
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def maintain_chain(opts: MaintainOptions, chain: str) -> ChainMaintenance:
    """One chain's maintenance."""
    db = Path(chainpaths.chain_db_path(opts.data_dir, chain))
    entry = ChainMaintenance(chain=chain)
    if not db.is_file():
        entry.integrity = "missing"
        return entry
    entry.bytes_before = _bytes(db)
    try:
        _work(opts, db, entry)
        result = sq.integrity_check(db, opts.integrity_check, timeout=opts.busy_timeout)
        entry.integrity = "skipped" if result is None else ("ok" if result.ok else "corrupt")
        if result is not None and not result.ok:
            entry.error = f"integrity check: {result.detail}"[:300]
    except (sq.VolumeError, sqlite3.Error, OSError) as exc:
        entry.error = str(exc)[:300]
    entry.bytes_after = _bytes(db)
    return entry


def maintain(opts: MaintainOptions) -> MaintainReport:
    """Maintain every chain; ``ok`` false when any chain's work or check failed."""
    for chain in opts.chains:
        chainpaths.validate_chain_id(chain)
    chains = [maintain_chain(opts, chain) for chain in opts.chains]
    return MaintainReport(ok=not any(c.error for c in chains), chains=chains)
