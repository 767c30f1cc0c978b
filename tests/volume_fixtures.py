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
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

IMAGE_SIZE = "256M"  # mkfs.btrfs needs more than 109 MiB with the default (DUP metadata) profile


def _unavailable(reason: str) -> None:
    if os.environ.get("AITBC_REQUIRE_BTRFS") == "1":
        pytest.fail(f"Btrfs tests required (AITBC_REQUIRE_BTRFS=1) but {reason}")
    pytest.skip(reason)


def _btrfs_precondition() -> str | None:
    if os.geteuid() != 0:
        return "needs root to attach a loop device and mount Btrfs"
    if shutil.which("mkfs.btrfs") is None:
        return "mkfs.btrfs not installed (apt-get install btrfs-progs)"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control missing)"
    if "btrfs" not in Path("/proc/filesystems").read_text():
        subprocess.run(["modprobe", "btrfs"], capture_output=True, check=False)
        if "btrfs" not in Path("/proc/filesystems").read_text():
            return "the kernel has no Btrfs support"
    return None


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False, timeout=120)


def _checked(*cmd: str) -> str:
    result = _run(*cmd)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout.strip()


@pytest.fixture(scope="session")
def btrfs_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The mount point of a freshly made Btrfs on a loop device (session-wide)."""
    reason = _btrfs_precondition()
    if reason:
        _unavailable(reason)
    base = tmp_path_factory.mktemp("btrfs")
    image, mount_point = base / "btrfs.img", base / "mnt"
    mount_point.mkdir()
    with ExitStack() as cleanup:
        cleanup.callback(lambda: image.unlink(missing_ok=True))
        _checked("truncate", "-s", IMAGE_SIZE, str(image))
        _checked("mkfs.btrfs", "-q", str(image))
        attach = _run("losetup", "--find", "--show", str(image))
        if attach.returncode != 0:
            _unavailable(f"no usable loop device: {attach.stderr.strip()}")
        device = attach.stdout.strip()
        cleanup.callback(lambda: _run("losetup", "--detach", device))
        _checked("mount", "-t", "btrfs", device, str(mount_point))
        cleanup.callback(_unmount, mount_point)
        yield mount_point


def _unmount(mount_point: Path) -> None:
    if _run("umount", str(mount_point)).returncode != 0:
        _run("umount", "--lazy", str(mount_point))  # something still holds it; detach it anyway


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
