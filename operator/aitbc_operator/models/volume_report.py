"""The report `aitbc-operator volume prepare` writes to its termination message and the operator copies to status.

Shared by the volume tool (which writes it, inside the pod) and the AitbcNode status (which declares it in the CRD).
Kept small: the termination message is limited to 4096 bytes, with up to 16 chains.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Status

NoCowState = Literal["set", "unsupported", "disabled", "failed"]
Integrity = Literal["ok", "corrupt", "skipped", "missing"]


class ChainVolumeReport(Status):
    """What was found and done for one chain."""

    chain: str
    """Chain id."""
    nocow: NoCowState
    """NOCOW on data/<chain>/: set, unsupported (filesystem without NOCOW), disabled (by spec) or failed."""
    journal: str | None = None
    """SQLite journal mode after preparation (wal), or null when no database exists yet."""
    integrity: Integrity = "skipped"
    """Integrity check result: ok, corrupt, skipped (check off) or missing (no chain.db yet)."""
    size: int | None = Field(default=None, ge=0)
    """Size of chain.db in bytes."""


class VolumeReport(Status):
    """The volume preparation report."""

    fs: str
    """Filesystem type of the data directory, e.g. btrfs, ext4, overlay."""
    nocow: NoCowState
    """Overall NOCOW state."""
    chains: list[ChainVolumeReport] = Field(default_factory=list)
    """Per-chain results."""
    actions: list[str] = Field(default_factory=list)
    """Actions taken, short, e.g. `mkdir ait-mainnet`, `nocow-recreate ait-mainnet`,
    `stray-moved chain.db.20261125T0900Z`. Empty when nothing had to change."""
    changed: bool = False
    """Whether anything was changed on the volume."""
    ok: bool = True
    """False when preparation failed (see error)."""
    error: str | None = None
    """Why preparation failed."""
