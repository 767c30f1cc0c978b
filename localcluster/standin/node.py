"""The stand-in node: produces a block per chain every interval, fed by a mempool (PostgreSQL or SQLite)."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select

from .chaindb import block, chain_url, chains, head, make_engine, mempool, metadata
from .http import JsonServer

log = logging.getLogger("standin.node")


@dataclass
class Node:
    """One node process: an engine per chain, one for the mempool, a block loop and a health endpoint."""

    chain_ids: list[str]
    mempool_url: str
    interval: float
    engines: dict[str, Engine] = field(default_factory=dict)
    mempool_errors: int = 0
    last_error: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def open(self) -> None:
        """Create the tables where missing (the real node's migrations), WAL on every chain database."""
        for chain in self.chain_ids:
            engine = make_engine(chain_url(chain))
            metadata.create_all(engine, tables=[block])
            self.engines[chain] = engine
        self.mempool_engine = make_engine(self.mempool_url)
        metadata.create_all(self.mempool_engine, tables=[mempool])
        log.info("chains %s, mempool on %s", ",".join(self.chain_ids), self.mempool_engine.dialect.name)

    def produce(self) -> None:
        """One block on every chain, carrying what the mempool holds for it."""
        for chain, engine in self.engines.items():
            taken = self._take_transactions(chain)
            with engine.begin() as conn:
                top = conn.execute(select(block.c.height, block.c.hash).order_by(block.c.height.desc()).limit(1))
                row = top.first()
                height, parent = (row[0] + 1, row[1]) if row else (1, "0" * 64)
                digest = hashlib.sha256(f"{chain}:{height}:{parent}:{taken}".encode()).hexdigest()
                conn.execute(insert(block).values(height=height, hash=digest, parent_hash=parent, chain_id=chain,
                                                  timestamp=int(time.time()), tx_count=taken))

    def _take_transactions(self, chain: str) -> int:
        """Add one transaction for the chain and take all pending ones (a failure is counted, blocks go on)."""
        try:
            with self.mempool_engine.begin() as conn:
                conn.execute(insert(mempool).values(chain_id=chain, payload=os.urandom(16).hex()))
                count = conn.execute(select(func.count()).where(mempool.c.chain_id == chain)).scalar() or 0
                conn.execute(delete(mempool).where(mempool.c.chain_id == chain))
            return int(count)
        except Exception as exc:  # any database error is reported on /health, not fatal
            self.mempool_errors += 1
            self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            log.warning("mempool: %s", self.last_error)
            return 0

    def health(self) -> dict[str, Any]:
        """What /health answers: heights in the files this node writes, mempool backend and errors."""
        return {
            "chains": {chain: head(engine) for chain, engine in self.engines.items()},
            "mempool": self.mempool_engine.dialect.name,
            "mempoolErrors": self.mempool_errors,
            "lastError": self.last_error,
        }

    def run(self) -> None:
        """Produce blocks until stopped (SIGTERM), then close the databases."""
        while not self.stop.wait(self.interval):
            self.produce()
        for engine in (*self.engines.values(), self.mempool_engine):
            engine.dispose()


def mempool_url() -> str:
    """MEMPOOL_DB_URL (PostgreSQL), else a SQLite file under DATA_DIR (the node's default)."""
    explicit = os.environ.get("MEMPOOL_DB_URL")
    if explicit:
        return explicit
    return f"sqlite:///{Path(os.environ.get('DATA_DIR', '/var/lib/aitbc')) / 'data' / 'mempool.db'}"


def main(port: int) -> int:
    """Run the node: blocks every AITBC_STANDIN_BLOCK_INTERVAL seconds (default 1), /health on ``port``."""
    node = Node(chains(), mempool_url(), float(os.environ.get("AITBC_STANDIN_BLOCK_INTERVAL", "1")))
    node.open()
    server = JsonServer(port, {"/health": lambda _query: (200, node.health())})
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: node.stop.set())
    log.info("node up on port %d (REDIS_URL=%s)", port, os.environ.get("REDIS_URL", "-"))
    node.run()
    server.close()
    return 0
