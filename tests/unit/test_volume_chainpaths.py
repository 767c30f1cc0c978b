"""The chain volume layout and the SQLite URLs built from it (aitbc_operator.chainpaths)."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
from sqlalchemy.engine import make_url

from aitbc_operator import chainpaths


def test_sqlite_url_is_the_runbook_form() -> None:
    assert chainpaths.sqlite_url("/var/lib/aitbc", "ait-mainnet") == "sqlite:////var/lib/aitbc/data/ait-mainnet/chain.db"


@pytest.mark.parametrize("data_dir", ["/var/lib/aitbc", "/srv/aitbc data", "/var/lib/aitbc/"])
def test_sqlite_url_round_trips_to_the_database_path(data_dir: str) -> None:
    url = make_url(chainpaths.sqlite_url(data_dir, "ait-testnet"))
    assert url.drivername == "sqlite"
    assert PurePosixPath(url.database or "") == chainpaths.chain_db_path(data_dir, "ait-testnet")


def test_layout() -> None:
    assert chainpaths.chain_dir("/d", "c1") == PurePosixPath("/d/data/c1")
    assert chainpaths.chain_db_path("/d", "c1") == PurePosixPath("/d/data/c1/chain.db")
    assert chainpaths.stray_default_db_path("/d") == PurePosixPath("/d/data/chain.db")
    assert chainpaths.backup_dir("/d", "c1") == PurePosixPath("/d/backups/c1")
    assert chainpaths.sidecar_paths(PurePosixPath("/d/data/c1/chain.db")) == (
        PurePosixPath("/d/data/c1/chain.db-wal"),
        PurePosixPath("/d/data/c1/chain.db-shm"),
        PurePosixPath("/d/data/c1/chain.db-journal"),
    )


@pytest.mark.parametrize("chain", ["..", "../etc", "a/b", "", "Upper", "-x", "x-", "a" * 64, "a.b"])
def test_chain_ids_that_would_escape_or_are_invalid_are_refused(chain: str) -> None:
    with pytest.raises(ValueError, match="DNS label"):
        chainpaths.chain_db_path("/var/lib/aitbc", chain)


def test_relative_data_dir_is_refused() -> None:
    with pytest.raises(ValueError, match="absolute"):
        chainpaths.sqlite_url("var/lib/aitbc", "ait-mainnet")
