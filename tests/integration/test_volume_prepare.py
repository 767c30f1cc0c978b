"""`aitbc-operator volume prepare` on real filesystems: a loop-mounted Btrfs and the (non-Btrfs) temp directory.

The command runs as the init container runs it: the installed console script in a child process, configured by
flags or environment, its report read from stdout and from the termination-message file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aitbc_operator.models.volume_report import VolumeReport
from aitbc_operator.volume import fs
from tests.volume_fixtures import corrupt, dump, make_chain_db

SCRIPT = str(Path(sys.executable).parent / "aitbc-operator")
LONG_CHAINS = [f"c{i:02d}-" + "x" * 59 for i in range(16)]  # 16 chains with 63-character ids


def prepare(data_dir: Path, *chains: str, extra: tuple[str, ...] = (), env: dict[str, str] | None = None
            ) -> tuple[int, VolumeReport, str]:
    """Run `volume prepare`; exit status, the parsed report, stderr."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AITBC_")}
    term = str(data_dir.parent / "term")
    args = [SCRIPT, "volume", "prepare", "--data-dir", str(data_dir), "--termination-log", term]
    if chains:
        args += ["--chains", ",".join(chains)]
    result = subprocess.run([*args, *extra], capture_output=True, text=True, timeout=120, env={**base, **(env or {})})
    assert result.stdout.count("\n") == 1, result.stdout + result.stderr
    return result.returncode, VolumeReport.model_validate_json(result.stdout), result.stderr


def lsattr_has_c(path: Path) -> bool:
    """Read the flag back the runbook's way (lsattr from e2fsprogs, independent of the code under test)."""
    out = subprocess.run(["lsattr", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return "C" in out.split()[0]


def snapshot(root: Path) -> dict[str, tuple[int, int, int, int, int, int]]:
    """Every path under root with inode, size, mode, owner, NOCOW flag and, for files, mtime.

    (Directory mtimes are left out: any SQLite connection to a WAL database creates and removes -wal/-shm.)
    """
    found = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        mtime = 0 if path.is_dir() else st.st_mtime_ns
        found[str(path)] = (st.st_ino, st.st_size, mtime, st.st_mode, st.st_uid, int(fs.has_nocow(path)))
    return found


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def chain_db(data_dir: Path, chain: str) -> Path:
    return data_dir / "data" / chain / "chain.db"


# --- Btrfs ----------------------------------------------------------------------------------------------------------


@pytest.mark.btrfs
def test_nocow_is_set_on_the_directories(btrfs_dir: Path) -> None:
    data_dir = btrfs_dir / "aitbc"
    code, report, _ = prepare(data_dir, "ait-mainnet", "ait-testnet", extra=("--uid", "1000", "--gid", "1001"))

    assert code == 0, report.error
    assert (report.fs, report.nocow, report.ok, report.changed) == ("btrfs", "set", True, True)
    for path in (data_dir, data_dir / "data", data_dir / "data" / "ait-mainnet", data_dir / "data" / "ait-testnet"):
        assert fs.get_flags(path) & fs.FS_NOCOW_FL, path
        assert lsattr_has_c(path), path
        assert (path.stat().st_uid, path.stat().st_gid) == (1000, 1001)
    assert [(c.chain, c.nocow, c.journal, c.integrity) for c in report.chains] == [
        ("ait-mainnet", "set", None, "missing"),
        ("ait-testnet", "set", None, "missing"),
    ]
    assert {"mkdir data-dir", "nocow data-dir", "mkdir ait-mainnet", "chown ait-testnet"} <= set(report.actions)
    assert "nocow ait-mainnet" not in report.actions, "created inside a NOCOW directory: inherited, nothing to set"


@pytest.mark.btrfs
@pytest.mark.parametrize("wal", [False, True], ids=["rollback-journal", "wal"])
def test_existing_cow_database_is_recreated_nocow_with_identical_content(btrfs_dir: Path, wal: bool) -> None:
    data_dir = btrfs_dir / "aitbc"
    db = make_chain_db(chain_db(data_dir, "ait-mainnet"), blocks=2000, wal=wal)
    assert not fs.has_nocow(db), "precondition: a copy-on-write file"
    assert not lsattr_has_c(db)
    content, inode = dump(db), db.stat().st_ino

    code, report, _ = prepare(data_dir, "ait-mainnet")

    assert code == 0, report.error
    assert fs.has_nocow(db)
    assert lsattr_has_c(db)
    assert db.stat().st_ino != inode, "a new file, not the old one with a flag Btrfs would ignore"
    assert dump(db) == content
    assert "nocow-recreate ait-mainnet" in report.actions
    assert (report.chains[0].nocow, report.chains[0].journal, report.chains[0].integrity) == ("set", "wal", "ok")
    assert sorted(p.name for p in db.parent.iterdir()) == ["chain.db"], "no temporary copy or stale -wal/-shm left"


@pytest.mark.btrfs
def test_wal_persists_across_reopen(btrfs_dir: Path) -> None:
    data_dir = btrfs_dir / "aitbc"
    db = make_chain_db(chain_db(data_dir, "ait-mainnet"), blocks=10)

    code, report, _ = prepare(data_dir, "ait-mainnet")

    assert code == 0
    assert report.chains[0].journal == "wal"
    # A new process opens it: the mode is stored in the file header (bytes 18/19 == 2), not in a connection.
    probe = "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA journal_mode').fetchone()[0])"
    reopened = subprocess.run([sys.executable, "-c", probe, str(db)], capture_output=True, text=True, check=True)
    assert reopened.stdout.strip() == "wal"
    assert db.read_bytes()[18:20] == b"\x02\x02"


@pytest.mark.btrfs
def test_corrupt_database_is_reported_and_left_untouched(btrfs_dir: Path) -> None:
    data_dir = btrfs_dir / "aitbc"
    good = make_chain_db(chain_db(data_dir, "ait-testnet"), blocks=50)
    bad = make_chain_db(chain_db(data_dir, "ait-mainnet"), blocks=500)
    corrupt(bad)
    digest, inode = sha256(bad), bad.stat().st_ino

    code, report, stderr = prepare(data_dir, "ait-mainnet", "ait-testnet")

    assert code == 1
    assert not report.ok
    assert report.error is not None
    assert str(bad) in report.error
    assert str(bad) in stderr
    by_chain = {c.chain: c for c in report.chains}
    assert by_chain["ait-mainnet"].integrity == "corrupt"
    assert (sha256(bad), bad.stat().st_ino) == (digest, inode), "never repaired, copied or re-created"
    assert sorted(p.name for p in bad.parent.iterdir()) == ["chain.db"]
    assert by_chain["ait-testnet"].integrity == "ok", "the healthy chain is still prepared"
    assert fs.has_nocow(good)


@pytest.mark.btrfs
def test_stray_default_database_is_moved_aside_and_a_second_run_changes_nothing(btrfs_dir: Path) -> None:
    data_dir = btrfs_dir / "aitbc"
    make_chain_db(chain_db(data_dir, "ait-mainnet"), blocks=100)
    stray = make_chain_db(data_dir / "data" / "chain.db", blocks=7)
    stray_content = dump(stray)

    code, first, _ = prepare(data_dir, "ait-mainnet", extra=("--uid", "1000", "--gid", "1000"))

    assert code == 0, first.error
    assert not stray.exists()
    moved = [p for p in (data_dir / "data").iterdir() if p.name.startswith("chain.db.")]
    assert len(moved) == 1
    assert f"stray-moved {moved[0].name}" in first.actions
    assert dump(moved[0]) == stray_content, "moved, never deleted"

    before = snapshot(data_dir)
    code, second, stderr = prepare(data_dir, "ait-mainnet", extra=("--uid", "1000", "--gid", "1000"))

    assert code == 0
    assert (second.changed, second.actions) == (False, [])
    assert "nothing changed" in stderr
    assert snapshot(data_dir) == before
    assert second.chains == first.chains


@pytest.mark.btrfs
def test_termination_message_stays_under_4096_bytes_with_16_chains(btrfs_dir: Path) -> None:
    data_dir = btrfs_dir / "aitbc"
    for chain in LONG_CHAINS:
        make_chain_db(chain_db(data_dir, chain), blocks=3)

    code, report, _ = prepare(data_dir, *LONG_CHAINS, extra=("--uid", "1000", "--gid", "1000"))

    assert code == 0, report.error
    message = (btrfs_dir / "term").read_bytes()
    assert len(message) <= 4096
    parsed = VolumeReport.model_validate_json(message)
    assert [c.chain for c in parsed.chains] == LONG_CHAINS
    assert all((c.nocow, c.journal, c.integrity) == ("set", "wal", "ok") for c in parsed.chains)
    assert "nocow-recreate x16" in parsed.actions, "per-chain actions summarised per verb to fit"


@pytest.mark.btrfs
def test_nocow_disabled_leaves_flags_alone(btrfs_dir: Path) -> None:
    data_dir = btrfs_dir / "aitbc"
    code, report, _ = prepare(data_dir, "ait-mainnet", env={"AITBC_DISABLE_COW": "false"})

    assert code == 0
    assert report.nocow == "disabled"
    assert report.chains[0].nocow == "disabled"
    assert not fs.has_nocow(data_dir / "data" / "ait-mainnet")


HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1])
conn.execute("SELECT COUNT(*) FROM block").fetchone()
print("open", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes keeping a database open; ended (stdin closed) afterwards."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def hold_open(db: Path, procs: list[subprocess.Popen[str]]) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    procs.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "open"


@pytest.mark.btrfs
@pytest.mark.parametrize("wal", [False, True], ids=["rollback-journal-idle", "wal"])
def test_database_open_in_another_process_is_not_recreated(
    btrfs_dir: Path, holder: list[subprocess.Popen[str]], wal: bool
) -> None:
    data_dir = btrfs_dir / "aitbc"
    db = make_chain_db(chain_db(data_dir, "ait-mainnet"), blocks=200, wal=wal)
    content, inode = dump(db), db.stat().st_ino
    hold_open(db, holder)

    code, report, stderr = prepare(data_dir, "ait-mainnet")

    assert code == 0, "not required: reported, and the node may start"
    assert report.chains[0].nocow == "failed"
    assert report.nocow == "failed"
    assert "nocow-deferred ait-mainnet" in report.actions
    assert "another process" in stderr or "open by process" in stderr
    assert db.stat().st_ino == inode
    assert not fs.has_nocow(db)
    assert dump(db) == content

    code, report, _ = prepare(data_dir, "ait-mainnet", extra=("--require-nocow",))
    assert code == 1
    assert not report.ok
    assert report.error is not None
    assert str(db) in report.error


# --- not Btrfs ------------------------------------------------------------------------------------------------------


def test_non_btrfs_reports_unsupported_and_prepares_the_rest(tmp_path: Path) -> None:
    data_dir = tmp_path / "aitbc"
    db = make_chain_db(chain_db(data_dir, "ait-mainnet"), blocks=20)
    content = dump(db)

    code, report, _ = prepare(data_dir, "ait-mainnet", "ait-testnet")

    assert code == 0, report.error
    assert report.fs != "btrfs"
    assert report.nocow == "unsupported"
    assert [(c.chain, c.nocow, c.journal, c.integrity) for c in report.chains] == [
        ("ait-mainnet", "unsupported", "wal", "ok"),
        ("ait-testnet", "unsupported", None, "missing"),
    ]
    assert (data_dir / "data" / "ait-testnet").is_dir()
    assert dump(db) == content
    assert json.loads((tmp_path / "term").read_text()) == report.to_wire()


def test_non_btrfs_with_nocow_required_fails_before_changing_anything(tmp_path: Path) -> None:
    data_dir = tmp_path / "aitbc"
    code, report, stderr = prepare(data_dir, "ait-mainnet", env={"AITBC_REQUIRE_NOCOW": "true"})

    assert code == 1
    assert not report.ok
    assert report.error is not None
    assert "NOCOW is required" in report.error
    assert "NOCOW is required" in stderr
    assert not data_dir.exists()


def test_inputs_from_the_environment(tmp_path: Path) -> None:
    data_dir = tmp_path / "aitbc"
    env = {"AITBC_DATA_DIR": str(data_dir), "AITBC_CHAINS": "ait-mainnet, ait-devnet", "AITBC_UID": "1000",
           "AITBC_GID": "1000", "AITBC_INTEGRITY_CHECK": "off", "AITBC_TERMINATION_LOG": str(tmp_path / "term")}
    base = {k: v for k, v in os.environ.items() if not k.startswith("AITBC_")}
    result = subprocess.run([SCRIPT, "volume", "prepare"], capture_output=True, text=True, env={**base, **env},
                            timeout=120, check=False)

    assert result.returncode == 0, result.stderr
    report = VolumeReport.model_validate_json(result.stdout)
    assert [c.chain for c in report.chains] == ["ait-mainnet", "ait-devnet"]
    assert (data_dir / "data" / "ait-devnet").stat().st_uid == 1000
    assert (tmp_path / "term").read_text() == result.stdout.strip()


@pytest.mark.parametrize(
    ("env", "message"),
    [({"AITBC_CHAINS": ""}, "no chains"), ({"AITBC_CHAINS": "../etc"}, "DNS label"),
     ({"AITBC_CHAINS": "a", "AITBC_DISABLE_COW": "maybe"}, "expected true or false"),
     ({"AITBC_CHAINS": "a", "AITBC_INTEGRITY_CHECK": "deep"}, "expected one of")],
)
def test_bad_inputs_exit_2(tmp_path: Path, env: dict[str, str], message: str) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AITBC_")}
    result = subprocess.run([SCRIPT, "volume", "prepare", "--data-dir", str(tmp_path)], capture_output=True,
                            text=True, env={**base, **env}, timeout=120, check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


# --- never out of the data dir ----------------------------------------------------------------------------------------


def _outside(tmp_path: Path) -> tuple[Path, Path]:
    """A directory outside the data dir with a root-owned file and a database in it (what a link could point at)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "shadow").write_text("root's\n")
    return outside, make_chain_db(outside / "chain.db", blocks=5)


@pytest.mark.parametrize("link", ["data", "data/ait-mainnet", "data/ait-mainnet/chain.db",
                                  "data/ait-mainnet/chain.db-wal", "data/chain.db"])
def test_a_symbolic_link_under_the_data_dir_is_never_followed(tmp_path: Path, link: str) -> None:
    """The node container owns data/: a link it planted must not make this root-run tool chown, flag or open what
    the link names. The run fails, naming the link, and the target is left exactly as it was."""
    if os.geteuid() != 0:
        pytest.skip("needs root to chown (the init container's user)")
    outside, outside_db = _outside(tmp_path)
    data_dir = tmp_path / "aitbc"
    (data_dir / link).parent.mkdir(parents=True, exist_ok=True)
    (data_dir / link).symlink_to(outside_db if link.endswith(("chain.db", "-wal")) else outside)
    before = snapshot(outside)

    code, report, _ = prepare(data_dir, "ait-mainnet", extra=("--uid", "1000", "--gid", "1000"))

    assert code == 1
    assert report.error == (f"{data_dir / link} is a symbolic link: volume prepare never follows one under the"
                            " data dir (remove it)"), report.error
    assert snapshot(outside) == before
    assert (data_dir / link).is_symlink()
