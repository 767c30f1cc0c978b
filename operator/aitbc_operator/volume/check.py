"""`aitbc-operator volume check`: integrity and the runbook's verification query, per chain, as JSON.

The query (``SELECT COUNT(*), MAX(height) FROM block``) runs through SQLAlchemy on the very
``sqlite:////…/chain.db`` URL the node and RPC get (`chainpaths.sqlite_url`), so a check also proves that URL
points at the file. Nothing is written: connections are ``query_only`` and a missing database is not created; they
are hardened like every connection of the tool (db.harden: no untrusted schema code, no extensions).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import column, create_engine, event, func, inspect, select, table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from .. import chainpaths
from . import db as sq
from .defaults import DEFAULT_BUSY_TIMEOUT
from .fs import filesystem_type, has_nocow


@dataclass(frozen=True)
class CheckOptions:
    """Inputs of `volume check`."""

    data_dir: Path
    chains: tuple[str, ...]
    integrity_check: sq.IntegrityLevel = "full"
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT


def block_stats(url: str) -> dict[str, int | None] | None:
    """``{"count": COUNT(*), "maxHeight": MAX(height)}`` of the ``block`` table at ``url``; None without one."""
    engine = create_engine(url, poolclass=NullPool)
    event.listen(engine, "connect", lambda dbapi_connection, _record: sq.harden(dbapi_connection))
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA query_only=ON")
            if not inspect(conn).has_table("block"):
                return None
            block = table("block", column("height"))
            count, max_height = conn.execute(select(func.count(), func.max(block.c.height)).select_from(block)).one()
    finally:
        engine.dispose()
    return {"count": int(count), "maxHeight": None if max_height is None else int(max_height)}


def check_chain(opts: CheckOptions, chain: str) -> dict[str, Any]:
    """One chain's entry: path, size, NOCOW, journal mode, integrity, block count and height."""
    dbfile = Path(chainpaths.chain_db_path(opts.data_dir, chain))
    entry: dict[str, Any] = {"chain": chain, "path": str(dbfile)}
    if not dbfile.is_file():
        entry["integrity"] = "missing"
        return entry
    entry["size"] = dbfile.stat().st_size
    entry["nocow"] = has_nocow(dbfile)
    result = sq.integrity_check(dbfile, opts.integrity_check, timeout=opts.busy_timeout)
    entry["integrity"] = "skipped" if result is None else ("ok" if result.ok else "corrupt")
    if result is not None and not result.ok:
        entry["detail"] = result.detail
        return entry
    try:
        entry["journal"] = sq.read_journal_mode(dbfile, timeout=opts.busy_timeout)
        stats = block_stats(chainpaths.sqlite_url(opts.data_dir, chain))
    except (sqlite3.Error, SQLAlchemyError) as exc:
        entry["detail"] = str(exc).splitlines()[0]
        return entry
    if stats is not None:
        entry["blocks"] = stats
    return entry


def check(opts: CheckOptions) -> dict[str, Any]:
    """The JSON report of every chain (``ok`` false when a database is corrupt or unreadable)."""
    for chain in opts.chains:
        chainpaths.validate_chain_id(chain)
    stray = Path(chainpaths.stray_default_db_path(opts.data_dir))
    chains = [check_chain(opts, chain) for chain in opts.chains]
    report: dict[str, Any] = {
        "ok": all(c["integrity"] != "corrupt" and "detail" not in c for c in chains),
        "fs": filesystem_type(opts.data_dir),
        "chains": chains,
    }
    if stray.exists():
        report["strayDefault"] = str(stray)
    return report
