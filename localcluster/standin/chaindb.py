"""The chain databases as the real node's ``database.py`` lays them out: one SQLite file per chain, SQLAlchemy."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, create_engine, event, func, select

metadata = MetaData()
#: The runbook's ``SELECT COUNT(*), MAX(height) FROM block``: one row per block of one chain.
block = Table(
    "block", metadata,
    Column("height", Integer, primary_key=True),
    Column("hash", String(64), nullable=False),
    Column("parent_hash", String(64), nullable=False),
    Column("chain_id", String(63), nullable=False),
    Column("timestamp", Integer, nullable=False),
    Column("tx_count", Integer, nullable=False),
)
#: Pending transactions (PostgreSQL through MEMPOOL_DB_URL, else a SQLite file under DATA_DIR).
mempool = Table(
    "mempool_tx", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("chain_id", String(63), nullable=False),
    Column("payload", String(128), nullable=False),
)


def chain_url(chain: str, env: Mapping[str, str] = os.environ) -> str:
    """The chain's SQLite URL: ``CHAIN_DB_URL_<CHAIN>``, else ``CHAIN_DB_URL`` for the default chain, else the
    layout under DATA_DIR (what the real node does without the operator's variables)."""
    own = env.get("CHAIN_DB_URL_" + chain.upper().replace("-", "_"))
    if own:
        return own
    if chain == env.get("CHAIN_ID") and env.get("CHAIN_DB_URL"):
        return env["CHAIN_DB_URL"]
    return f"sqlite:///{Path(env.get('DATA_DIR', '/var/lib/aitbc')) / 'data' / chain / 'chain.db'}"


def chains(env: Mapping[str, str] = os.environ) -> list[str]:
    """CHAINS (comma-separated), else CHAIN_ID alone."""
    listed = [c.strip() for c in env.get("CHAINS", "").split(",") if c.strip()]
    return listed or [env.get("CHAIN_ID", "ait-mainnet")]


def _wal_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """WAL at the application level (the runbook: a journal mode set with sqlite3 once does not stay)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for a chain database (SQLite, WAL on every connection) or the mempool (SQLite or PostgreSQL).

    Its pool keeps connections open: a SQLite file replaced under a long-lived engine is not noticed, exactly as in
    the real RPC."""
    if not url.startswith("sqlite:"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _wal_on_connect)
    return engine


def head(engine: Engine) -> int | None:
    """MAX(height) of the chain, None when it has no block yet."""
    with engine.connect() as conn:
        value = conn.execute(select(func.max(block.c.height))).scalar()
    return int(value) if value is not None else None
