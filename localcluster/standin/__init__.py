"""A STAND-IN for the AITBC blockchain node and RPC, not the real programs (which are not available here).

It is faithful where the operator depends on the real ones (the runbook, shared/reference/...):

- the node reads ``DATA_DIR``, ``CHAIN_ID``, ``CHAINS``, ``CHAIN_DB_URL`` / ``CHAIN_DB_URL_<CHAIN>``,
  ``MEMPOOL_DB_URL`` and ``REDIS_URL`` as the operator writes them, appends blocks to each chain's SQLite ``block``
  table (``height``, ``hash``, ...) through SQLAlchemy in WAL mode, and keeps its mempool in PostgreSQL when
  ``MEMPOOL_DB_URL`` is set (in SQLite under ``DATA_DIR`` otherwise);
- the RPC serves ``GET /rpc/head?chain_id=<id>`` from a per-chain SQLAlchemy engine cache (the runbook's ``_engines``
  dict): a database file replaced under it (NOCOW re-creation, a stray default ``chain.db`` moved, a restore) makes
  it serve a stale height until it is restarted, the bug the operator's coordinated rollout exists for.

    python -m localcluster.standin node      # or: rpc
"""
