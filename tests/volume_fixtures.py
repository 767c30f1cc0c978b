"""A real Btrfs filesystem for the chain volume tests: a sparse image file on a loop device, mounted.

`btrfs_mount` (session) makes it once: ``truncate`` an image, ``mkfs.btrfs``, ``losetup --find --show``, ``mount``;
afterwards ``umount``, ``losetup --detach`` and removal of the image, also when tests failed. `btrfs_dir` gives each
test a fresh, empty directory on it.

Skips, saying why, when not root, without mkfs.btrfs (``apt-get install btrfs-progs``), without Btrfs in the kernel
or without a free loop device. With ``AITBC_REQUIRE_BTRFS=1`` those are failures instead, so a CI machine that
should run them cannot silently skip them.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from localcluster import btrfs
from localcluster.btrfs import LoopBtrfs
from localcluster.cluster import ClusterError


def _unavailable(reason: str) -> None:
    if os.environ.get("AITBC_REQUIRE_BTRFS") == "1":
        pytest.fail(f"Btrfs tests required (AITBC_REQUIRE_BTRFS=1) but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def btrfs_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The mount point of a freshly made Btrfs on a loop device (session-wide)."""
    reason = btrfs.unavailable()
    if reason:
        _unavailable(reason)
    base = tmp_path_factory.mktemp("btrfs")
    loop = LoopBtrfs(base / "btrfs.img", base / "mnt")
    try:
        loop.open()
    except ClusterError as exc:
        _unavailable(f"no usable loop-mounted Btrfs: {exc}")
    try:
        yield loop.mount_point
    finally:
        loop.close()


@pytest.fixture
def btrfs_dir(btrfs_mount: Path) -> Path:
    """A fresh, empty directory on the loop-mounted Btrfs (no NOCOW flag)."""
    path = btrfs_mount / f"t-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    return path


# --- chain databases for the tests --------------------------------------------------------------------------------


def make_chain_db(path: Path, *, blocks: int = 500, chain: str = "ait-mainnet", wal: bool = False) -> Path:
    """A chain database shaped like the node's: ``block`` (height, hash) and ``tx`` rows, ``blocks`` heights."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE block (height INTEGER PRIMARY KEY, chain_id TEXT NOT NULL, hash TEXT NOT NULL)")
        conn.execute("CREATE TABLE tx (id INTEGER PRIMARY KEY, height INTEGER NOT NULL, payload BLOB NOT NULL)")
        conn.execute("CREATE INDEX tx_height ON tx (height)")
        conn.executemany(
            "INSERT INTO block VALUES (?, ?, ?)", ((h, chain, f"{h:064x}") for h in range(blocks))
        )
        txs = ((h % blocks, os.urandom(64)) for h in range(blocks * 3))
        conn.executemany("INSERT INTO tx (height, payload) VALUES (?, ?)", txs)
        conn.commit()
    finally:
        conn.close()
    return path


def dump(path: Path) -> list[str]:
    """The database's full content as SQL statements (schema and rows). Reads only; leaves no -wal/-shm behind."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)
    try:
        conn.execute("PRAGMA query_only=ON")
        return list(conn.iterdump())
    finally:
        conn.close()


def corrupt(path: Path) -> None:
    """Overwrite the b-tree pages after the schema page of a database with garbage (a torn, CoW-damaged file)."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(4096)
        f.write(b"\xa5" * (size - 4096))
