"""Every SQLite connection of the volume tool is hardened: schema code may call innocuous built-ins only, and
nothing loads an extension (the tool runs as root in the init container on files the node container writes)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aitbc_operator.volume import db as sq


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A database whose view and trigger call `record()`, an application function (not marked innocuous)."""
    path = tmp_path / "chain.db"
    conn = sqlite3.connect(path)
    conn.create_function("record", 1, lambda value: value)
    conn.execute("CREATE TABLE block (height INTEGER)")
    conn.execute("CREATE TABLE log (height INTEGER)")
    conn.execute("CREATE VIEW heights AS SELECT record(height) AS h FROM block")
    conn.execute("CREATE TRIGGER spy AFTER INSERT ON log BEGIN SELECT record(NEW.height); END")
    conn.execute("INSERT INTO block VALUES (1)")
    conn.commit()
    conn.close()
    return path


def check_hardened(conn: sqlite3.Connection) -> None:
    calls: list[object] = []
    conn.create_function("record", 1, lambda value: calls.append(value) or value)
    assert conn.execute("PRAGMA trusted_schema").fetchone() == (0,)
    with pytest.raises(sqlite3.OperationalError, match=r"unsafe use of record\(\)"):
        conn.execute("SELECT * FROM heights").fetchall()
    with pytest.raises(sqlite3.OperationalError, match=r"unsafe use of record\(\)"):
        conn.execute("INSERT INTO log VALUES (2)")
    assert conn.execute("SELECT record(5)").fetchone() == (5,)  # called directly, by the tool itself: fine
    assert calls == [5]


def test_an_opened_database_cannot_call_an_untrusted_function(planted: Path) -> None:
    with sq.connect(planted) as conn:
        check_hardened(conn)


def test_a_copy_the_tool_makes_cannot_either(planted: Path, tmp_path: Path) -> None:
    """The connection to a new file (backup target, NOCOW re-creation) once it holds the copied schema."""
    with sq.connect(planted) as source, sq.create(tmp_path / "copy.db") as target:
        source.backup(target)
        check_hardened(target)


def test_no_extension_can_be_loaded(planted: Path, tmp_path: Path) -> None:
    library = tmp_path / "planted.so"
    with sq.connect(planted) as conn, pytest.raises(sqlite3.OperationalError, match="not authorized"):
        conn.execute("SELECT load_extension(?)", (str(library),))
