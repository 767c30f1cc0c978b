"""`aitbc-operator volume` subcommands: prepare, backup, restore, check, maintain, serve.

Every flag falls back to an environment variable (the init container is configured through its env):

  AITBC_DATA_DIR            --data-dir          default /var/lib/aitbc
  AITBC_CHAINS              --chains            comma-separated chain ids (required)
  AITBC_UID, AITBC_GID      --uid, --gid        owner of the chain data (default: leave owners alone)
  AITBC_DISABLE_COW         --nocow/--no-nocow  set Btrfs NOCOW (default true)
  AITBC_REQUIRE_NOCOW       --require-nocow     fail on filesystems without NOCOW (default false)
  AITBC_JOURNAL_MODE        --journal-mode      wal (default) or keep
  AITBC_INTEGRITY_CHECK     --integrity-check   quick, full or off (prepare: quick, check: full)
  AITBC_TERMINATION_LOG     --termination-log   default /dev/termination-log (skipped when not writable)
  AITBC_BACKUP_KEEP         --keep              backups kept per chain (default 7)
  AITBC_BACKUP_DIR          --backup-dir        where copies go / come from (default <data dir>/backups)

Reports are one line of JSON on stdout; a human summary goes to stderr. Exit status 0 when everything is fine,
1 when something failed (corruption, NOCOW required but impossible, a copy that failed), 2 for bad input.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .defaults import DEFAULT_BUSY_TIMEOUT, DEFAULT_KEEP, DEFAULT_PORT


def _deferred(action: str) -> Callable[[argparse.Namespace], int]:
    """The action's implementation (volume/commands.py), imported when it runs: the operator process, which builds
    this parser too, never loads the volume tool (SQLite, the health server: 1.2 MiB resident)."""

    def run(args: argparse.Namespace) -> int:
        from . import commands

        return commands.run(action, args)

    return run


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="DATA_DIR (env AITBC_DATA_DIR, default /var/lib/aitbc)")
    parser.add_argument("--chains", help="comma-separated chain ids (env AITBC_CHAINS)")
    parser.add_argument("--busy-timeout", type=float, default=DEFAULT_BUSY_TIMEOUT,
                        help="seconds to wait for a SQLite lock held by someone else (default %(default)s)")


def _backups(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backup-dir",
                        help="copies under <dir>/<chain>/ (env AITBC_BACKUP_DIR, default <data dir>/backups)")
    parser.add_argument("--termination-log", help="env AITBC_TERMINATION_LOG, default /dev/termination-log")


def add_volume_parser(sub: Any) -> None:
    """Register `volume prepare|backup|restore|check|maintain|serve`."""
    volume: argparse.ArgumentParser = sub.add_parser("volume", help="prepare, back up or check chain volumes")
    actions = volume.add_subparsers(dest="volume_command", required=True, metavar="ACTION")

    prep = actions.add_parser("prepare", help="prepare the chain volume (what the node's init container runs)")
    _common(prep)
    prep.add_argument("--uid", type=int, help="owner uid of the chain data (env AITBC_UID; default: unchanged)")
    prep.add_argument("--gid", type=int, help="owner gid of the chain data (env AITBC_GID; default: unchanged)")
    prep.add_argument("--nocow", action=argparse.BooleanOptionalAction, default=None,
                      help="set Btrfs NOCOW on the chain directories (env AITBC_DISABLE_COW, default on)")
    prep.add_argument("--require-nocow", action=argparse.BooleanOptionalAction, default=None,
                      help="fail when the filesystem has no NOCOW (env AITBC_REQUIRE_NOCOW, default off)")
    prep.add_argument("--journal-mode", choices=("wal", "keep"), help="env AITBC_JOURNAL_MODE, default wal")
    prep.add_argument("--integrity-check", choices=("quick", "full", "off"),
                      help="PRAGMA quick_check, integrity_check or none (env AITBC_INTEGRITY_CHECK, default quick)")
    prep.add_argument("--termination-log", help="env AITBC_TERMINATION_LOG, default /dev/termination-log")
    prep.set_defaults(func=_deferred("prepare"))

    back = actions.add_parser("backup", help="online, height-stamped copy of each chain database (SQLite backup API)")
    _common(back)
    _backups(back)
    back.add_argument("--keep", type=int, help=f"copies kept per chain (env AITBC_BACKUP_KEEP, default {DEFAULT_KEEP})")
    back.add_argument("--max-age", help="remove copies older than this too, e.g. 720h (never the newest verified)")
    back.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                      help="integrity_check every copy (default on)")
    back.add_argument("--time", help="the time in the copies' names (ISO 8601, e.g. a schedule's slot); default now")
    back.set_defaults(func=_deferred("backup"))

    rest = actions.add_parser("restore", help="put a verified copy back as chain.db (node and RPC stopped)")
    _common(rest)
    _backups(rest)
    rest.add_argument("--backup", default="latest-verified",
                      help="a copy's file name, latest or latest-verified (default)")
    rest.add_argument("--check-only", action="store_true", help="only find and verify the copy; change nothing")
    rest.add_argument("--uid", type=int, help="owner of the restored file (env AITBC_UID; default: the current one's)")
    rest.add_argument("--gid", type=int, help="group of the restored file (env AITBC_GID)")
    rest.set_defaults(func=_deferred("restore"))

    main = actions.add_parser("maintain", help="WAL checkpoint, VACUUM and integrity check of each chain database")
    _common(main)
    main.add_argument("--termination-log", help="env AITBC_TERMINATION_LOG, default /dev/termination-log")
    main.add_argument("--checkpoint", action=argparse.BooleanOptionalAction, default=True,
                      help="PRAGMA wal_checkpoint(TRUNCATE) (default on)")
    main.add_argument("--vacuum", action=argparse.BooleanOptionalAction, default=False,
                      help="VACUUM; refused while another process has the database open (default off)")
    main.add_argument("--integrity-check", choices=("quick", "full", "off"),
                      help="after the work (env AITBC_INTEGRITY_CHECK, default full)")
    main.set_defaults(func=_deferred("maintain"))

    srv = actions.add_parser("serve", help="the read-only chain-health sidecar: GET /chains (JSON), /metrics")
    _common(srv)
    srv.add_argument("--port", type=int, default=DEFAULT_PORT, help="listen port (default %(default)s)")
    srv.add_argument("--integrity-interval", type=float, default=3600.0,
                     help="seconds between quick_checks of each database (0: never; default %(default)s)")
    srv.set_defaults(func=_deferred("serve"))

    chk = actions.add_parser("check", help="integrity, COUNT(*) and MAX(height) of block per chain")
    _common(chk)
    chk.add_argument("--integrity-check", choices=("quick", "full", "off"),
                     help="env AITBC_INTEGRITY_CHECK, default full")
    chk.set_defaults(func=_deferred("check"))
