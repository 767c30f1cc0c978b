"""The stand-in RPC: ``GET /rpc/head?chain_id=<id>`` from a per-chain engine cache, like the real RPC's."""

from __future__ import annotations

import logging
import os
import signal
import threading

from sqlalchemy import Engine

from .chaindb import chain_url, chains, head, make_engine
from .http import JsonServer, Reply

log = logging.getLogger("standin.rpc")

#: The runbook's ``_engines`` dict: made on first use, never refreshed. A chain database replaced under it (a new
#: inode) goes unnoticed; the pooled connection keeps reading the old file until the process restarts.
_engines: dict[str, Engine] = {}


def get_engine(chain_id: str) -> Engine:
    """The cached engine of a chain (created on first use)."""
    if chain_id not in _engines:
        _engines[chain_id] = make_engine(chain_url(chain_id))
    return _engines[chain_id]


def rpc_head(query: dict[str, list[str]]) -> Reply:
    """The chain's head as this process sees it: ``{"chain_id", "height"}`` (0 before the first block)."""
    chain_id = (query.get("chain_id") or [os.environ.get("CHAIN_ID", "")])[0]
    if chain_id not in chains():
        return 404, {"error": f"unknown chain {chain_id!r}"}
    return 200, {"chain_id": chain_id, "height": head(get_engine(chain_id)) or 0}


def main(port: int) -> int:
    """Serve until SIGTERM."""
    server = JsonServer(port, {"/rpc/head": rpc_head, "/health": lambda _q: (200, {"ok": True})})
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    log.info("rpc up on port %d for chains %s", port, ",".join(chains()))
    done.wait()
    server.close()
    return 0
