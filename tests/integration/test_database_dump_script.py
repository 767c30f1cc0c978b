"""The dump/verify/restore script of the backup Jobs (builders/database_backup.py DUMP_SCRIPT), run with /bin/sh and
the pg_dump/pg_restore of each server's major against real servers (15 and the newer major), as the database's own
role, exactly as the Job runs it (libpq's PG* variables); its report parsed by the operator's own parser."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import psycopg
import pytest

from aitbc_operator.builders.database_backup import DUMP_SCRIPT
from aitbc_operator.models.dump_report import DumpReport
from aitbc_operator.passwords import generate_password
from aitbc_operator.postgres import DesiredDatabase, ServerPool, reconcile
from aitbc_operator.reconcilers.database_backup import parse_report
from tests.pg.fixtures import PgTestServer
from tests.pg.server import find_debian_bin_dir

pytestmark = pytest.mark.postgres


def make_database(pg: PgTestServer, names: str) -> tuple[DesiredDatabase, str]:
    want = DesiredDatabase(database=f"{names}_db", role=f"{names}_app", owner="ns/dump")
    password = generate_password()

    async def body() -> None:
        pool = ServerPool()
        try:
            await reconcile(pool, pg.admin, want, password=password)
        finally:
            await pool.aclose()

    asyncio.run(body())
    return want, password


def run_script(pg: PgTestServer, want: DesiredDatabase, password: str, directory: Path, action: str, *,
               bin_dir: Path | None = None, file: str | None = None, keep: int = 0,
               prefix: str | None = None) -> tuple[int, DumpReport | None]:
    """The script as a Job runs it; returns its exit code and the report it wrote."""
    report = directory.parent / f"report-{action}"
    env = {
        "PATH": f"{bin_dir or pg.server.bin_dir}:/usr/bin:/bin",
        "PGHOST": pg.server.host, "PGPORT": str(pg.server.port), "PGDATABASE": want.database, "PGUSER": want.role,
        "PGPASSWORD": password, "PGSSLMODE": "disable", "AITBC_ACTION": action,
        "AITBC_SERVER_MAJOR": str(pg.major), "AITBC_DATABASE": want.database,
        "AITBC_PREFIX": prefix or want.database, "AITBC_KEEP": str(keep), "AITBC_DIR": str(directory),
        "AITBC_REPORT": str(report), "TMPDIR": str(directory.parent),
        **({"AITBC_FILE": file} if file else {}),
    }
    done = subprocess.run(["/bin/sh", "-c", DUMP_SCRIPT], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    return done.returncode, parse_report(report.read_text()) if report.exists() else None


def app(pg: PgTestServer, want: DesiredDatabase, password: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(pg.server.login(want.role, password, want.database).conninfo(), autocommit=True)


def test_dump_verify_restore_as_the_database_role(pg_server: PgTestServer, names: str, tmp_path: Path) -> None:
    want, password = make_database(pg_server, names)
    volume = tmp_path / "backup"
    volume.mkdir()
    with app(pg_server, want, password) as conn:
        conn.execute("CREATE TABLE trades (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO trades VALUES (1, 'before'), (2, 'before')")
    code, report = run_script(pg_server, want, password, volume, "dump", keep=2)
    assert code == 0
    assert report is not None
    assert report.ok, report
    assert report.file is not None
    assert report.file.startswith(f"{want.database}-")
    assert report.file.endswith(
        "Z.dump")
    assert (volume / report.file).stat().st_size == report.size_bytes
    assert report.entries
    assert report.entries > 0
    assert report.pg_dump_major == pg_server.major
    assert not list(volume.glob(".*partial")), "no partial file left"

    with app(pg_server, want, password) as conn:
        conn.execute("UPDATE trades SET note = 'after'")
        conn.execute("CREATE TABLE later (id int)")
    code, verified = run_script(pg_server, want, password, volume, "verify", file=report.file)
    assert code == 0
    assert verified is not None
    assert verified.ok
    assert verified.entries == report.entries
    code, restored = run_script(pg_server, want, password, volume, "restore", file=report.file)
    assert code == 0
    assert restored is not None
    assert restored.ok, restored
    with app(pg_server, want, password) as conn:
        assert conn.execute("SELECT note FROM trades ORDER BY id").fetchall() == [("before",), ("before",)]
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'trades'").fetchone()
        assert owner == (want.role,)


def test_keep_prunes_only_the_oldest_scheduled_dumps(pg_server: PgTestServer, names: str, tmp_path: Path) -> None:
    want, password = make_database(pg_server, names)
    volume = tmp_path / "backup"
    volume.mkdir()
    for stamp in ("20200101T000000Z", "20200102T000000Z", "20200103T000000Z"):
        (volume / f"{want.database}-{stamp}.dump").write_bytes(b"old")
    (volume / f"{want.database}-pre-restore-20200101T000000Z.dump").write_bytes(b"kept")
    (volume / "other_db-20200101T000000Z.dump").write_bytes(b"not ours")
    code, report = run_script(pg_server, want, password, volume, "dump", keep=2)
    assert code == 0
    assert report is not None
    assert report.removed == 2
    left = sorted(p.name for p in volume.iterdir())
    assert left == sorted([f"{want.database}-20200103T000000Z.dump", report.file,
                           f"{want.database}-pre-restore-20200101T000000Z.dump", "other_db-20200101T000000Z.dump"])


def test_a_missing_or_unreadable_dump_is_refused_and_nothing_is_dropped(pg_server: PgTestServer, names: str,
                                                                         tmp_path: Path) -> None:
    want, password = make_database(pg_server, names)
    volume = tmp_path / "backup"
    volume.mkdir()
    with app(pg_server, want, password) as conn:
        conn.execute("CREATE TABLE keep_me (id int)")
    code, report = run_script(pg_server, want, password, volume, "restore", file="nope.dump")
    assert code == 1
    assert report is not None
    assert not report.ok
    assert report.error == "dump nope.dump not found in the backup volume"
    (volume / "garbage.dump").write_bytes(b"this is not a dump")
    code, report = run_script(pg_server, want, password, volume, "restore", file="garbage.dump")
    assert code == 1
    assert report is not None
    assert "not a readable custom-format dump" in (report.error or "")
    if os.geteuid() != 0:  # root reads every file
        (volume / "secret.dump").write_bytes(b"x")
        (volume / "secret.dump").chmod(0)
        code, report = run_script(pg_server, want, password, volume, "verify", file="secret.dump")
        assert code == 1
        assert report is not None
        assert "not readable" in (report.error or "")
    with app(pg_server, want, password) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'keep_me'").fetchone() == (1,)


def test_a_pg_dump_older_than_the_server_is_refused(pg_new: PgTestServer, names: str, tmp_path: Path) -> None:
    old = find_debian_bin_dir("15")
    if old is None or pg_new.major <= 15:
        pytest.skip("needs pg_dump 15 and a newer server")
    want, password = make_database(pg_new, names)
    volume = tmp_path / "backup"
    volume.mkdir()
    code, report = run_script(pg_new, want, password, volume, "dump", bin_dir=old)
    assert code == 1
    assert report is not None
    assert not report.ok
    assert report.error == (f"pg_dump 15 is older than the server (PostgreSQL {pg_new.major}): use an image of that "
                            "major")
    assert list(volume.iterdir()) == []
