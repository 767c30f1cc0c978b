"""Where chain data live on the chain volume, and the SQLite URLs the node and RPC use for them. Pure: no I/O.

One place for the layout the runbook describes (``<DATA_DIR>/data/<chain>/chain.db``), shared by the volume tool
(which prepares the files, inside the pod) and the builders (which hand the URLs to the node and RPC containers).

>>> sqlite_url("/var/lib/aitbc", "ait-mainnet")
'sqlite:////var/lib/aitbc/data/ait-mainnet/chain.db'
"""

from __future__ import annotations

import re
from pathlib import PurePath, PurePosixPath

from . import dburl
from .models.base import DNS_LABEL_PATTERN

#: DATA_DIR when the spec does not say otherwise (the runbook's directory).
DEFAULT_DATA_DIR = "/var/lib/aitbc"
#: Sub-directory of DATA_DIR holding one directory per chain.
DATA_SUBDIR = "data"
#: Sub-directory of DATA_DIR holding `aitbc-operator volume backup` copies, one directory per chain.
BACKUP_SUBDIR = "backups"
#: File name of a chain database.
CHAIN_DB_NAME = "chain.db"
#: Files SQLite keeps beside a database: write-ahead log, its shared-memory index, rollback journal.
SQLITE_SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")
#: Chain ids are DNS labels (they name directories and Kubernetes objects); at most 63 characters.
CHAIN_ID_MAX_LENGTH = 63

_CHAIN_ID = re.compile(DNS_LABEL_PATTERN)

PathLike = str | PurePath


def validate_chain_id(chain: str) -> str:
    """Return ``chain`` if it is a valid chain id (a DNS label, so never ``..`` or a path), else raise ValueError."""
    if len(chain) > CHAIN_ID_MAX_LENGTH or not _CHAIN_ID.fullmatch(chain):
        raise ValueError(f"chain id {chain!r} must be a DNS label (lower-case letters, digits, '-'; at most 63)")
    return chain


def _absolute(data_dir: PathLike) -> PurePosixPath:
    path = PurePosixPath(data_dir)
    if not path.is_absolute():
        raise ValueError(f"data dir {str(data_dir)!r} must be an absolute path")
    return path


def data_root(data_dir: PathLike) -> PurePosixPath:
    """``<data_dir>/data``: the directory holding one directory per chain."""
    return _absolute(data_dir) / DATA_SUBDIR


def chain_dir(data_dir: PathLike, chain: str) -> PurePosixPath:
    """``<data_dir>/data/<chain>``."""
    return data_root(data_dir) / validate_chain_id(chain)


def chain_db_path(data_dir: PathLike, chain: str) -> PurePosixPath:
    """``<data_dir>/data/<chain>/chain.db``."""
    return chain_dir(data_dir, chain) / CHAIN_DB_NAME


def sidecar_paths(db_path: PurePosixPath) -> tuple[PurePosixPath, ...]:
    """The ``-wal``, ``-shm`` and ``-journal`` files SQLite may keep beside ``db_path``."""
    return tuple(db_path.with_name(db_path.name + suffix) for suffix in SQLITE_SIDECAR_SUFFIXES)


def stray_default_db_path(data_dir: PathLike) -> PurePosixPath:
    """``<data_dir>/data/chain.db``: the node's non-chain-specific default database.

    When it sits beside the per-chain databases it shadows them (the runbook's "RPC returns wrong block height").
    """
    return data_root(data_dir) / CHAIN_DB_NAME


def backup_dir(data_dir: PathLike, chain: str) -> PurePosixPath:
    """``<data_dir>/backups/<chain>``: where `aitbc-operator volume backup` writes copies of a chain database."""
    return _absolute(data_dir) / BACKUP_SUBDIR / validate_chain_id(chain)


def sqlite_url(data_dir: PathLike, chain: str) -> str:
    """The SQLAlchemy URL of a chain database: ``sqlite:////var/lib/aitbc/data/<chain>/chain.db``."""
    return dburl.render("sqlite", database=str(chain_db_path(data_dir, chain)))
