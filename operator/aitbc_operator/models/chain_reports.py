"""What the chain-data commands of the volume tool report, shared by the tool (which writes it) and the operator.

`volume backup`, `volume restore` and `volume maintain` write one of these as JSON to their termination message (at
most 4096 bytes, with up to 16 chains) when they run as a Job; the operator parses it into ``AitbcNode.status``.
`volume serve` (the node pod's health sidecar) answers ``GET /chains`` with a :class:`ChainHealthReport`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import Field

from .base import Status

#: ``chain-20261201T020000Z-h123456.db``: the UTC time of the copy's slot and MAX(height) in the copy.
BACKUP_NAME_PATTERN = r"^chain-[0-9]{8}T[0-9]{6}Z-h[0-9]{1,19}\.db$"
BACKUP_NAME_FORMAT = "chain-{stamp}-h{height}.db"
BACKUP_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
#: What a restore may name: a backup's file name, the newest copy, or the newest verified copy.
BACKUP_SELECTOR_PATTERN = r"^(latest|latest-verified|chain-[0-9]{8}T[0-9]{6}Z-h[0-9]{1,19}\.db)$"
_BACKUP_NAME = re.compile(BACKUP_NAME_PATTERN)

IntegrityResult = Literal["ok", "corrupt", "skipped", "missing"]


def backup_name(stamp: datetime, height: int) -> str:
    """The file name of a copy taken at ``stamp`` (UTC) whose MAX(height) is ``height``."""
    return BACKUP_NAME_FORMAT.format(stamp=stamp.strftime(BACKUP_STAMP_FORMAT), height=height)


def is_backup_name(name: str) -> bool:
    """Whether ``name`` is a copy's file name (:data:`BACKUP_NAME_PATTERN`)."""
    return _BACKUP_NAME.fullmatch(name) is not None


class BackupCopy(Status):
    """One verified or unverified copy of a chain database, as the manifest and status record it."""

    name: str
    """File name, ``chain-<UTC>-h<height>.db``."""
    time: datetime
    """When the copy was taken (its slot, UTC)."""
    height: int | None = None
    """MAX(height) of the block table in the copy (null: no block yet)."""
    size: int = Field(default=0, ge=0)
    """Bytes."""
    sha256: str | None = None
    """SHA-256 of the file (hex); in status only its first 16 characters."""
    verified: bool = False
    """integrity_check passed on the copy after it was written."""


class ChainBackupResult(Status):
    """One chain's outcome in a backup run."""

    chain: str
    """Chain id."""
    copy_: BackupCopy | None = Field(default=None, alias="copy")
    """The copy made (absent when skipped or failed)."""
    skipped: str | None = None
    """Why nothing was copied (e.g. no database yet)."""
    error: str | None = None
    """Why the copy failed."""
    pruned: int = 0
    """Older copies removed by the retention rules."""


class BackupReport(Status):
    """`volume backup`'s report."""

    ok: bool
    """Every chain was copied (or had nothing to copy) and, with verification, verified."""
    chains: list[ChainBackupResult] = Field(default_factory=list)
    """Per chain."""


class RestoreReport(Status):
    """`volume restore`'s report (also of `--check-only`, which verifies the copy and changes nothing)."""

    ok: bool
    """The copy was found, verified and (unless check-only) put in place."""
    chain: str
    """Chain id."""
    backup: str | None = None
    """The copy's file name (the selector resolved)."""
    height: int | None = None
    """MAX(height) in the copy."""
    moved_aside: str | None = None
    """Where the previous chain.db went (never deleted), e.g. ``chain.db.pre-restore-20261201T101500Z``."""
    nocow: bool | None = None
    """Whether the restored file carries NOCOW (Btrfs)."""
    check_only: bool = False
    """Only verified, nothing changed."""
    error: str | None = None
    """Why the restore was refused or failed."""


class ChainMaintenance(Status):
    """What a maintenance run did on one chain."""

    chain: str
    """Chain id."""
    checkpoint: str | None = None
    """Result of ``PRAGMA wal_checkpoint(TRUNCATE)``: ``ok`` or ``busy``."""
    vacuumed: bool = False
    """VACUUM ran."""
    integrity: IntegrityResult = "skipped"
    """Integrity check after the work."""
    bytes_before: int = 0
    """chain.db plus its -wal before."""
    bytes_after: int = 0
    """chain.db plus its -wal after."""
    error: str | None = None
    """Why this chain's work failed."""


class MaintainReport(Status):
    """`volume maintain`'s report."""

    ok: bool
    """Every chain's work succeeded and its integrity check passed."""
    chains: list[ChainMaintenance] = Field(default_factory=list)
    """Per chain."""

    @property
    def reclaimed(self) -> int:
        """Bytes given back over all chains (never negative)."""
        return max(0, sum(c.bytes_before - c.bytes_after for c in self.chains))


class ChainHealth(Status):
    """One chain as the health sidecar sees it (read-only)."""

    chain: str
    """Chain id."""
    size: int | None = None
    """chain.db bytes (null: no database yet)."""
    wal_size: int = 0
    """chain.db-wal bytes."""
    journal: str | None = None
    """Journal mode (wal)."""
    height: int | None = None
    """MAX(height) in the file."""
    integrity: IntegrityResult = "skipped"
    """Result of the sidecar's last quick_check."""
    integrity_at: datetime | None = None
    """When that check ran."""
    error: str | None = None
    """Why the file could not be read."""


class ChainHealthReport(Status):
    """`volume serve`'s ``GET /chains``."""

    observed_at: datetime
    """When the sidecar read the files."""
    fs: str
    """Filesystem of the data dir."""
    volume_bytes: int = 0
    """Size of the volume."""
    free_bytes: int = 0
    """Free bytes on the volume (for unprivileged users)."""
    chains: list[ChainHealth] = Field(default_factory=list)
    """Per chain."""

    @property
    def free_percent(self) -> float:
        """Free space in percent of the volume (100 for an unknown size)."""
        return 100.0 if not self.volume_bytes else round(100.0 * self.free_bytes / self.volume_bytes, 1)
