"""Chain-data day-2 on a 200 MB chain.db: backup time and the node's write stall, restore time, VACUUM time.

A chain database of the stand-in node's schema (localcluster/standin/chaindb.py: the ``block`` table) is filled to
``--size-mb`` in a NOCOW directory on a loop-mounted Btrfs (``--fs btrfs``, root; what the chain volume is) or in a
temporary directory (``--fs host``). A writer process then commits one block every 5 ms in WAL mode, as the node does
(one transaction per block), and records how long each commit took. Measured in the same run:

* baseline: the writer alone for ``--seconds``: commit latency p50/p99/max;
* during ``aitbc-operator volume backup`` (SQLite online backup API, verified): its wall time, the writer's commit
  latencies while it ran, and the ratio of their p99/max to the baseline's (the stall, if any);
* ``volume restore`` of that copy (writer stopped, as the operator stops the node): wall time;
* ``volume maintain --vacuum`` (writer stopped): wall time.

    python -m benchmarks.chain_bench [--size-mb 200] [--fs btrfs|host] [--seconds 10]     # or: make bench-chain
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from localcluster.btrfs import LoopBtrfs
from localcluster.standin.chaindb import block, metadata
from sqlalchemy import create_engine, insert

SCRIPT = str(Path(sys.executable).parent / "aitbc-operator")
CHAIN = "ait-mainnet"
#: Commits one block every 5 ms until killed; prints each commit's duration in microseconds, one per line.
WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("PRAGMA journal_mode=WAL")
h = conn.execute("SELECT MAX(height) FROM block").fetchone()[0] + 1
while True:
    began = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO block VALUES (?, ?, ?, 'ait-mainnet', ?, 0)",
                 (h, f"{h:064x}", f"{h-1:064x}", int(time.time())))
    conn.execute("COMMIT")
    print(int((time.perf_counter() - began) * 1e6), time.monotonic(), flush=True)
    h += 1
    time.sleep(0.005)
"""


def fill(db: Path, size_mb: int) -> int:
    """Blocks of the stand-in schema until the file reaches ``size_mb``; returns the number of rows."""
    db.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{db}")
    metadata.create_all(engine, tables=[block])
    height, batch = 0, 50000
    while db.stat().st_size < size_mb * 2**20:
        with engine.begin() as conn:
            conn.execute(insert(block), [{"height": h, "hash": f"{h:064x}", "parent_hash": f"{h - 1:064x}",
                                          "chain_id": CHAIN, "timestamp": 1764547200 + h, "tx_count": h % 7}
                                         for h in range(height, height + batch)])
        height += batch
    engine.dispose()
    subprocess.run(["sqlite3", str(db), "PRAGMA journal_mode=WAL;"], check=True, capture_output=True)
    return height


class Writer:
    """The node stand-in for the measurement: a process committing blocks, its latencies with timestamps."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # committed once: running

    def stop(self) -> list[tuple[float, float]]:
        """Stop; every (latency ms, monotonic time) since the start."""
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=30)
        return [(int(us) / 1000, float(t)) for us, t in (line.split() for line in out.splitlines() if line)]


def stats(latencies: list[float]) -> dict[str, float]:
    """p50, p99 and max (ms) and the count."""
    ordered = sorted(latencies)
    return {"n": len(ordered), "p50": statistics.median(ordered), "p99": ordered[int(0.99 * (len(ordered) - 1))],
            "max": ordered[-1]}


def volume(*args: str) -> tuple[float, dict[str, object]]:
    """Run a volume command; (seconds, its report)."""
    began = time.monotonic()
    done = subprocess.run([SCRIPT, "volume", *args], capture_output=True, text=True, check=True)
    return time.monotonic() - began, json.loads(done.stdout)


@contextmanager
def data_dir(fs: str) -> Iterator[Path]:
    """A data dir whose chain directory is NOCOW on a loop Btrfs, or a temporary directory on the host."""
    with tempfile.TemporaryDirectory(prefix="chain-bench-") as tmp:
        if fs == "host":
            yield Path(tmp) / "aitbc"
            return
        loop = LoopBtrfs(Path(tmp) / "btrfs.img", Path(tmp) / "mnt", size="2G").open()
        try:
            root = Path(tmp) / "mnt" / "aitbc"
            subprocess.run([SCRIPT, "volume", "prepare", "--data-dir", str(root), "--chains", CHAIN],
                           check=True, capture_output=True)
            yield root
        finally:
            loop.close()


def run(size_mb: int, fs: str, seconds: float) -> None:
    with data_dir(fs) as root:
        db = root / "data" / CHAIN / "chain.db"
        rows = fill(db, size_mb)
        print(f"chain.db: {db.stat().st_size / 2**20:.0f} MiB, {rows} blocks, on {fs}")
        writer = Writer(db)
        time.sleep(seconds)  # the baseline: the writer alone
        backup_began = time.monotonic()
        took, report = volume("backup", "--data-dir", str(root), "--chains", CHAIN)
        backup_ended = time.monotonic()
        time.sleep(2)
        samples = writer.stop()
        base = stats([ms for ms, t in samples if t < backup_began])
        during = stats([ms for ms, t in samples if backup_began <= t <= backup_ended])
        copy = report["chains"][0]["copy"]  # type: ignore[index]
        print(f"backup: {took:.2f} s, copy h{copy['height']} {copy['size'] / 2**20:.0f} MiB,"
              f" verified={copy['verified']}")
        print(f"  writer commits alone  : n={base['n']} p50={base['p50']:.2f} ms p99={base['p99']:.2f} ms"
              f" max={base['max']:.2f} ms")
        print(f"  writer during backup  : n={during['n']} p50={during['p50']:.2f} ms p99={during['p99']:.2f} ms"
              f" max={during['max']:.2f} ms  (p99 x{during['p99'] / base['p99']:.1f}, max x"
              f"{during['max'] / base['max']:.1f} the baseline's; blocks/s {during['n'] / took:.0f} vs"
              f" {base['n'] / seconds:.0f})")
        took, restored = volume("restore", "--data-dir", str(root), "--chains", CHAIN, "--backup", str(copy["name"]))
        print(f"restore (writer stopped): {took:.2f} s, ok={restored['ok']}, moved aside {restored['movedAside']}")
        took, maintained = volume("maintain", "--data-dir", str(root), "--chains", CHAIN, "--vacuum")
        chain = maintained["chains"][0]  # type: ignore[index]
        print(f"maintain --vacuum + integrity_check (writer stopped): {took:.2f} s,"
              f" {chain['bytesBefore'] - chain['bytesAfter']} bytes reclaimed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--fs", choices=("btrfs", "host"), default="btrfs" if os.geteuid() == 0 else "host")
    parser.add_argument("--seconds", type=float, default=10.0, help="baseline duration")
    args = parser.parse_args()
    run(args.size_mb, args.fs, args.seconds)


if __name__ == "__main__":
    main()
