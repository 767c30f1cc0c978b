"""`volume restore`, `volume maintain` and `volume serve` on real files: on Btrfs (NOCOW kept, as the node's
directory has it) and on the host's ext4."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from localcluster.cluster import free_ports

from aitbc_operator.volume.backup import sha256_of
from aitbc_operator.volume.fs import has_nocow, set_nocow
from aitbc_operator.volume.serve import HealthState, serve
from tests.cluster.fixtures import wait_until
from tests.volume_fixtures import corrupt, make_chain_db

SCRIPT = str(Path(sys.executable).parent / "aitbc-operator")


def volume(*args: str) -> tuple[int, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITBC_")}
    result = subprocess.run([SCRIPT, "volume", *args], capture_output=True, text=True, timeout=120, env=env)
    return result.returncode, json.loads(result.stdout)


def height(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT MAX(height) FROM block").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture(params=["btrfs", "ext4"])
def data_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The data dir on Btrfs (chain directory NOCOW, as volume prepare leaves it) or on the host's ext4."""
    if request.param == "btrfs":
        base: Path = request.getfixturevalue("btrfs_dir") / "aitbc"
        (base / "data" / "ait-mainnet").mkdir(parents=True)
        set_nocow(base / "data" / "ait-mainnet")
        return base
    return tmp_path / "aitbc"


def test_restore_verifies_the_copy_moves_the_current_file_aside_and_puts_the_copy_in_place(data_dir: Path) -> None:
    db = make_chain_db(data_dir / "data" / "ait-mainnet" / "chain.db", blocks=100, wal=True)
    code, report = volume("backup", "--data-dir", str(data_dir), "--chains", "ait-mainnet")
    assert code == 0
    name = report["chains"][0]["copy"]["name"]
    conn = sqlite3.connect(db)
    conn.executemany("INSERT INTO block VALUES (?, 'ait-mainnet', 'x')", ((h,) for h in range(100, 150)))
    conn.commit()
    conn.close()

    code, check = volume("restore", "--data-dir", str(data_dir), "--chains", "ait-mainnet", "--check-only")
    assert (code, check["ok"], check["backup"], check["height"]) == (0, True, name, 99)
    assert height(db) == 149, "check-only changes nothing"

    code, done = volume("restore", "--data-dir", str(data_dir), "--chains", "ait-mainnet", "--backup", name)
    assert code == 0, done
    assert height(db) == 99
    aside = db.with_name(done["movedAside"])
    assert height(aside) == 149, "the replaced database is kept, whole"
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    on_btrfs = data_dir.parent.name.startswith("t-")
    assert done["nocow"] is on_btrfs
    assert has_nocow(db) is on_btrfs


@pytest.mark.parametrize(("damage", "message"), [("missing", "no backup"), ("corrupt", "is corrupt"),
                                                  ("replaced", "does not match its manifest's sha256")])
def test_restore_refuses_a_missing_corrupt_or_replaced_copy_and_changes_nothing(
        tmp_path: Path, damage: str, message: str) -> None:
    data_dir = tmp_path / "aitbc"
    db = make_chain_db(data_dir / "data" / "ait-mainnet" / "chain.db", blocks=300)
    code, report = volume("backup", "--data-dir", str(data_dir), "--chains", "ait-mainnet")
    copy = data_dir / "backups" / "ait-mainnet" / report["chains"][0]["copy"]["name"]
    selector = copy.name
    if damage == "missing":
        selector = "chain-20200101T000000Z-h1.db"
    elif damage == "corrupt":  # damaged before its digest was taken: only integrity_check can tell
        corrupt(copy)
        manifest = copy.parent / "manifest.json"
        manifest.write_text(manifest.read_text().replace(report["chains"][0]["copy"]["sha256"], sha256_of(copy)))
    else:
        make_chain_db(copy.with_name("other.db"), blocks=3).replace(copy)
    before = db.read_bytes()

    code, done = volume("restore", "--data-dir", str(data_dir), "--chains", "ait-mainnet", "--backup", selector)
    assert code == 1
    assert message in done["error"], done
    assert db.read_bytes() == before
    assert sorted(p.name for p in db.parent.iterdir()) == ["chain.db"]


def test_restore_refuses_while_the_database_is_open(tmp_path: Path) -> None:
    data_dir = tmp_path / "aitbc"
    db = make_chain_db(data_dir / "data" / "ait-mainnet" / "chain.db", blocks=10, wal=True)
    assert volume("backup", "--data-dir", str(data_dir), "--chains", "ait-mainnet")[0] == 0
    holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1]);"
                               " c.execute('SELECT 1 FROM block').fetchall(); print('open', flush=True);"
                               " time.sleep(60)", str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "open"
        code, done = volume("restore", "--data-dir", str(data_dir), "--chains", "ait-mainnet")
    finally:
        holder.kill()
        holder.wait()
    assert code == 1
    assert "stop the node and the RPC first" in done["error"]


def test_maintain_checkpoints_vacuums_and_reports_what_it_reclaimed(data_dir: Path) -> None:
    db = make_chain_db(data_dir / "data" / "ait-mainnet" / "chain.db", blocks=3000, wal=True)
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM tx")
    conn.commit()
    conn.close()
    code, report = volume("maintain", "--data-dir", str(data_dir), "--chains", "ait-mainnet,ait-testnet", "--vacuum")
    assert code == 0, report
    mainnet, testnet = report["chains"]
    assert (mainnet["checkpoint"], mainnet["vacuumed"], mainnet["integrity"]) == ("ok", True, "ok")
    assert mainnet["bytesAfter"] < mainnet["bytesBefore"]
    assert testnet["integrity"] == "missing"
    assert height(db) == 2999
    if data_dir.parent.name.startswith("t-"):
        assert has_nocow(db), "VACUUM rewrites in place: the file keeps its NOCOW flag"


def test_maintain_refuses_vacuum_while_the_database_is_open(tmp_path: Path) -> None:
    data_dir = tmp_path / "aitbc"
    db = make_chain_db(data_dir / "data" / "ait-mainnet" / "chain.db", blocks=10, wal=True)
    conn = sqlite3.connect(db)
    conn.execute("SELECT 1").fetchall()
    try:
        holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1]);"
                                   " c.execute('SELECT 1 FROM block').fetchall(); print('open', flush=True);"
                                   " time.sleep(60)", str(db)], stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "open"
        code, report = volume("maintain", "--data-dir", str(data_dir), "--chains", "ait-mainnet", "--vacuum")
    finally:
        holder.kill()
        holder.wait()
        conn.close()
    assert code == 1
    assert "VACUUM needs the database to itself" in report["chains"][0]["error"]


def test_serve_reports_sizes_heights_and_free_space_read_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "aitbc"
    db = make_chain_db(data_dir / "data" / "ait-mainnet" / "chain.db", blocks=77, wal=True)
    before = db.read_bytes()
    (port,) = free_ports(1)
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(HealthState(data_dir, ("ait-mainnet", "ait-testnet")), port, 3600,
                                                  stop), daemon=True)
    thread.start()
    try:
        def get(path: str) -> bytes:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                body: bytes = resp.read()
            return body

        wait_until(lambda: _answers(get), 10, "the sidecar to answer")
        chains = json.loads(get("/chains"))
        metrics = get("/metrics").decode()
    finally:
        stop.set()
        thread.join(10)
    mainnet, testnet = chains["chains"]
    assert (mainnet["height"], mainnet["journal"], mainnet["integrity"]) == (77 - 1, "wal", "ok")
    assert mainnet["size"] == db.stat().st_size
    assert testnet["integrity"] == "missing"
    assert 0 < chains["freeBytes"] <= chains["volumeBytes"]
    assert 'aitbc_chain_file_height{chain="ait-mainnet"} 76.0' in metrics
    assert db.read_bytes() == before, "the database is only read (SQLite may add its -wal/-shm index, as any reader)"
    assert not (data_dir / "data" / "ait-testnet").exists(), "nothing created"


def _answers(get: Any) -> bool:
    try:
        return bool(get("/healthz"))
    except OSError:
        return False
