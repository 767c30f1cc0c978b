"""The report a dump, verify or restore Job writes to its termination message (JSON, at most 4096 bytes), read by the
operator into ``AitbcDatabase.status.backup`` / ``status.restore``.

The Jobs run an image with pg_dump (an official postgres image by default: a POSIX shell, no Python), so the report is
printed by the shell script of builders/database_backup.py, which writes exactly these keys; this model is the one
definition both sides follow (the script is golden-tested, the parser unit-tested on its output).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Status

DumpAction = Literal["dump", "verify", "restore"]


class DumpReport(Status):
    """What one Job did."""

    ok: bool
    """The action succeeded."""
    action: DumpAction
    """dump (pg_dump --format=custom, then pg_restore --list), verify (pg_restore --list) or restore (pg_restore
    --clean --if-exists in one transaction)."""
    file: str | None = Field(default=None, max_length=255)
    """The dump file, in the backup volume."""
    size_bytes: int | None = Field(default=None, ge=0)
    """Its size."""
    entries: int | None = Field(default=None, ge=0)
    """Entries in its table of contents (pg_restore --list)."""
    removed: int | None = Field(default=None, ge=0)
    """Older scheduled dumps removed to keep `backup.keep`."""
    pg_dump_major: int | None = None
    """Major version of the image's pg_dump."""
    error: str | None = Field(default=None, max_length=512)
    """Why it failed (quotes, backslashes and control characters removed)."""
