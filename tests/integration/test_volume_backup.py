"""`aitbc-operator volume backup` and `volume check` on real SQLite files, with a real concurrent writer."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.volume_fixtures import corrupt, make_chain_db

SCRIPT = str(Path(sys.executable).parent / "aitbc-operator")

#: Writes block h and its tx in one transaction, forever, in WAL mode; prints the first committed height.
WRITER = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
h = conn.execute("SELECT COALESCE(MAX(height), -1) + 1 FROM block").fetchone()[0]
while True:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO block VALUES (?, 'ait-mainnet', ?)", (h, f"{h:064x}"))
    conn.execute("INSERT INTO tx (height, payload) VALUES (?, ?)", (h, os.urandom(2048)))
    conn.execute("COMMIT")
    if h % 200 == 0:
        print(h, flush=True)
    h += 1
"""


def volume(*args: str) -> tuple[int, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITBC_")}
    result = subprocess.run([SCRIPT, "volume", *args], capture_output=True, text=True, timeout=120, env=env)
    return result.returncode, json.loads(result.stdout)


def count(db: Path, sql: str) -> Any:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchone()
    finally:
        conn.close()


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Path]:
    """A chain database another process keeps writing to (WAL mode) for the duration of the test."""
    db = make_chain_db(tmp_path / "aitbc" / "data" / "ait-mainnet" / "chain.db", blocks=1000, wal=True)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = int(proc.stdout.readline())  # blocks until it has committed while we watch
        assert first >= 1000
        yield db
        assert proc.poll() is None, "the writer must still be running at the end of the test"
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_backup_while_another_process_writes_is_consistent(tmp_path: Path, writer: Path) -> None:
    data_dir = tmp_path / "aitbc"

    code, report = volume("backup", "--data-dir", str(data_dir), "--chains", "ait-mainnet")

    assert code == 0, report
    (entry,) = report["chains"]
    made = entry["copy"]
    copy = data_dir / "backups" / "ait-mainnet" / made["name"]
    assert made["size"] == copy.stat().st_size > 0
    assert made["verified"] is True
    assert made["name"].endswith(f"-h{made['height']}.db"), "named after the height in the copy"
    assert count(copy, "PRAGMA integrity_check") == ("ok",)
    blocks, max_height = count(copy, "SELECT COUNT(*), MAX(height) FROM block")
    assert blocks == max_height + 1 >= 1000
    # One snapshot: every block's transaction is there, none from a block that is not.
    assert count(copy, "SELECT COUNT(*) FROM tx WHERE height >= 1000") == (blocks - 1000,)
    assert count(copy, "PRAGMA journal_mode") == ("delete",), "a self-contained single file"
    assert max_height >= 1000, "taken while the writer was adding blocks"
    assert max_height == made["height"]
    deadline = time.monotonic() + 30
    while count(writer, "SELECT MAX(height) FROM block")[0] <= max_height:
        assert time.monotonic() < deadline, "the writer stopped"


def test_backup_keeps_the_newest_copies_and_never_the_only_verified_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "aitbc"
    db = make_chain_db(data_dir / "data" / "ait-mainnet" / "chain.db", blocks=10)
    made = []
    for hour in range(4):
        code, report = volume("backup", "--data-dir", str(data_dir), "--chains", "ait-mainnet,ait-testnet",
                              "--keep", "2", f"--time=2026-12-01T0{hour}:00:00Z")
        assert code == 0
        assert report["chains"][1] == {"chain": "ait-testnet", "skipped": "no database", "pruned": 0}
        made.append(report["chains"][0]["copy"]["name"])
    directory = data_dir / "backups" / "ait-mainnet"
    assert sorted(p.name for p in directory.glob("chain-*.db")) == made[-2:]
    assert made == sorted(made), "name order is time order"
    assert made[0] == "chain-20261201T000000Z-h9.db"
    manifest = json.loads((directory / "manifest.json").read_text())
    assert [e["name"] for e in manifest["backups"]] == made[-2:]
    assert all(len(e["sha256"]) == 64 and e["verified"] for e in manifest["backups"])

    # Unverified copies (--no-verify) push the verified ones out, except the newest verified one.
    for hour in range(4, 7):
        code, report = volume("backup", "--data-dir", str(data_dir), "--chains", "ait-mainnet", "--keep", "2",
                              "--no-verify", f"--time=2026-12-01T0{hour}:00:00Z")
        assert code == 0
        assert report["chains"][0]["copy"]["verified"] is False
    kept = sorted(p.name for p in directory.glob("chain-*.db"))
    assert kept == [made[-1], "chain-20261201T050000Z-h9.db", "chain-20261201T060000Z-h9.db"]
    assert db.exists()


def test_check_reports_the_runbook_query(tmp_path: Path) -> None:
    data_dir = tmp_path / "aitbc"
    make_chain_db(data_dir / "data" / "ait-mainnet" / "chain.db", blocks=321)
    make_chain_db(data_dir / "data" / "chain.db", blocks=3)

    code, report = volume("check", "--data-dir", str(data_dir), "--chains", "ait-mainnet,ait-testnet")

    assert code == 0
    mainnet, testnet = report["chains"]
    assert (mainnet["integrity"], mainnet["blocks"]) == ("ok", {"count": 321, "maxHeight": 320})
    assert testnet["integrity"] == "missing"
    assert not (data_dir / "data" / "ait-testnet" / "chain.db").exists(), "check never creates a database"
    assert report["strayDefault"] == str(data_dir / "data" / "chain.db")


def test_check_fails_on_a_corrupt_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "aitbc"
    db = make_chain_db(data_dir / "data" / "ait-mainnet" / "chain.db", blocks=300)
    corrupt(db)

    code, report = volume("check", "--data-dir", str(data_dir), "--chains", "ait-mainnet")

    assert code == 1
    assert report["ok"] is False
    assert report["chains"][0]["integrity"] == "corrupt"


def test_check_never_runs_untrusted_schema_code(tmp_path: Path) -> None:
    """A `block` view calling regexp() (a function SQLAlchemy registers on every SQLite connection, not marked
    innocuous): with trusted_schema=OFF the check refuses to run it instead of reporting what it returns."""
    data_dir = tmp_path / "aitbc"
    db = data_dir / "data" / "ait-mainnet" / "chain.db"
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    conn.create_function("regexp", 2, lambda pattern, value: True)  # as the node's SQLAlchemy would have it
    conn.execute("CREATE TABLE raw (height INTEGER)")
    conn.execute("INSERT INTO raw VALUES (7)")
    conn.execute("CREATE VIEW block AS SELECT height FROM raw WHERE regexp('.*', 'planted')")
    conn.commit()
    conn.close()

    code, report = volume("check", "--data-dir", str(data_dir), "--chains", "ait-mainnet")
    assert code == 1
    (entry,) = report["chains"]
    assert entry["detail"].endswith("unsafe use of regexp()"), entry
    assert "blocks" not in entry
