"""The implementations of `aitbc-operator volume` (the parser, with every flag and its variable, is volume/cli.py)."""


from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .. import chainpaths
from ..models.base import Status, parse_duration
from ..models.volume_report import VolumeReport
from . import db as sq
from .backup import BackupOptions, backup
from .defaults import DEFAULT_KEEP
from .maintain import MaintainOptions, maintain
from .prepare import PrepareOptions, prepare
from .report import DEFAULT_TERMINATION_LOG, TERMINATION_MESSAGE_LIMIT, dumps, render, write_termination_message
from .restore import RestoreOptions, restore
from .serve import HealthState, serve

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class UsageError(Exception):
    """A flag or environment variable has an invalid value."""


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A boolean environment variable (true/false, yes/no, on/off, 1/0)."""
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(f"{name}={raw!r}: expected true or false")


def env_int(env: Mapping[str, str], name: str) -> int | None:
    """A non-negative integer environment variable, or None when unset or empty."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise UsageError(f"{name}={raw!r}: expected a non-negative integer")
    return int(raw)


def _pick(flag: Any, env: Mapping[str, str], name: str, default: Any) -> Any:
    return flag if flag is not None else env.get(name) or default


def _choice(value: str, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UsageError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


def _data_dir(args: argparse.Namespace, env: Mapping[str, str]) -> Path:
    path = Path(_pick(args.data_dir, env, "AITBC_DATA_DIR", chainpaths.DEFAULT_DATA_DIR))
    if not path.is_absolute():
        raise UsageError(f"data dir {str(path)!r} must be an absolute path")
    return path


def _chains(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str, ...]:
    raw = _pick(args.chains, env, "AITBC_CHAINS", "")
    chains = tuple(dict.fromkeys(c.strip() for c in raw.split(",") if c.strip()))
    if not chains:
        raise UsageError("no chains: pass --chains ait-mainnet,ait-testnet or set AITBC_CHAINS")
    try:
        for chain in chains:
            chainpaths.validate_chain_id(chain)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return chains


def prepare_options(args: argparse.Namespace, env: Mapping[str, str]) -> PrepareOptions:
    """PrepareOptions from flags, falling back to the environment."""
    uid = args.uid if args.uid is not None else env_int(env, "AITBC_UID")
    gid = args.gid if args.gid is not None else env_int(env, "AITBC_GID")
    nocow = args.nocow if args.nocow is not None else env_bool(env, "AITBC_DISABLE_COW", True)
    require = args.require_nocow if args.require_nocow is not None else env_bool(env, "AITBC_REQUIRE_NOCOW", False)
    journal = _choice(_pick(args.journal_mode, env, "AITBC_JOURNAL_MODE", "wal"), "journal mode", ("wal", "keep"))
    level = _choice(
        _pick(args.integrity_check, env, "AITBC_INTEGRITY_CHECK", "quick"), "integrity check", ("quick", "full", "off")
    )
    return PrepareOptions(
        data_dir=_data_dir(args, env), chains=_chains(args, env), uid=uid, gid=gid, nocow=nocow,
        require_nocow=require, journal_mode=journal,  # type: ignore[arg-type]  # checked by _choice
        integrity_check=level,  # type: ignore[arg-type]
        busy_timeout=args.busy_timeout,
    )


def _summary(report: VolumeReport, warnings: list[str]) -> str:
    lines = [f"warning: {w}" for w in warnings]
    if not report.ok:
        lines.append(f"error: {report.error}")
    elif report.changed:
        lines.append(f"volume prepared ({report.fs}, NOCOW {report.nocow}): {', '.join(report.actions)}")
    else:
        lines.append(f"volume already prepared ({report.fs}, NOCOW {report.nocow}): nothing changed")
    return "\n".join(lines)


def cmd_prepare(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run `volume prepare`; print the report and write the termination message."""
    opts = prepare_options(args, env)
    report, warnings = prepare(opts)
    text = render(report)
    print(text)
    print(_summary(report, warnings), file=sys.stderr)
    log = args.termination_log or env.get("AITBC_TERMINATION_LOG") or str(DEFAULT_TERMINATION_LOG)
    write_termination_message(text, Path(log))
    return 0 if report.ok else 1


def _report(args: argparse.Namespace, env: Mapping[str, str], report: Status) -> None:
    """Print a report and write it as the termination message (a Job's result), within the kubelet's limit."""
    text = dumps(report.to_wire())
    print(text)
    if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
        text = text.encode()[:TERMINATION_MESSAGE_LIMIT].decode(errors="ignore")  # the operator then reads no result
    log = args.termination_log or env.get("AITBC_TERMINATION_LOG") or str(DEFAULT_TERMINATION_LOG)
    write_termination_message(text, Path(log))


def _backup_dir(args: argparse.Namespace, env: Mapping[str, str]) -> Path | None:
    raw = _pick(args.backup_dir, env, "AITBC_BACKUP_DIR", None)
    if raw is None:
        return None
    if not Path(raw).is_absolute():
        raise UsageError(f"backup dir {raw!r} must be an absolute path")
    return Path(raw)


def _stamp(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        stamp = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(f"--time {raw!r}: expected an ISO 8601 time such as 2026-12-01T02:00:00Z") from exc
    if stamp.tzinfo is None:
        raise UsageError(f"--time {raw!r}: give a time zone (Z for UTC)")
    return stamp


def cmd_backup(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run `volume backup`."""
    keep = args.keep if args.keep is not None else env_int(env, "AITBC_BACKUP_KEEP") or DEFAULT_KEEP
    if keep < 1:
        raise UsageError("--keep must be at least 1")
    try:
        max_age = None if args.max_age is None else timedelta(seconds=parse_duration(args.max_age))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    result = backup(BackupOptions(data_dir=_data_dir(args, env), chains=_chains(args, env), keep=keep,
                                  max_age=max_age, backup_dir=_backup_dir(args, env), verify=args.verify,
                                  stamp=_stamp(args.time), busy_timeout=args.busy_timeout))
    _report(args, env, result)
    return 0 if result.ok else 1


def cmd_restore(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run `volume restore` (one chain)."""
    chains = _chains(args, env)
    if len(chains) != 1:
        raise UsageError("restore one chain at a time (--chains ait-mainnet)")
    uid = args.uid if args.uid is not None else env_int(env, "AITBC_UID")
    gid = args.gid if args.gid is not None else env_int(env, "AITBC_GID")
    result = restore(RestoreOptions(data_dir=_data_dir(args, env), chain=chains[0], backup=args.backup,
                                    backup_dir=_backup_dir(args, env), check_only=args.check_only, uid=uid, gid=gid,
                                    busy_timeout=args.busy_timeout))
    _report(args, env, result)
    return 0 if result.ok else 1


def cmd_maintain(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run `volume maintain`."""
    level = _choice(
        _pick(args.integrity_check, env, "AITBC_INTEGRITY_CHECK", "full"), "integrity check", ("quick", "full", "off")
    )
    result = maintain(MaintainOptions(data_dir=_data_dir(args, env), chains=_chains(args, env),
                                      checkpoint=args.checkpoint, vacuum=args.vacuum,
                                      integrity_check=level,  # type: ignore[arg-type]  # checked by _choice
                                      busy_timeout=max(args.busy_timeout, 30.0)))
    _report(args, env, result)
    return 0 if result.ok else 1


def cmd_serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run `volume serve` until SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    state = HealthState(data_dir=_data_dir(args, env), chains=_chains(args, env))
    serve(state, args.port, args.integrity_interval, stop)
    return 0


def cmd_check(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run `volume check`."""
    # Imported here: it brings SQLAlchemy (11 MiB resident), which no other command - `run` above all - needs.
    from .check import CheckOptions, check

    level = _choice(
        _pick(args.integrity_check, env, "AITBC_INTEGRITY_CHECK", "full"), "integrity check", ("quick", "full", "off")
    )
    result = check(CheckOptions(data_dir=_data_dir(args, env), chains=_chains(args, env),
                                integrity_check=level,  # type: ignore[arg-type]  # checked by _choice
                                busy_timeout=args.busy_timeout))
    print(json.dumps(result, separators=(",", ":")))
    return 0 if result["ok"] else 1


def _run(command: Callable[[argparse.Namespace, Mapping[str, str]], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args, os.environ)
        except UsageError as exc:
            print(f"aitbc-operator volume: {exc}", file=sys.stderr)
            return 2
        except sq.VolumeError as exc:
            print(f"aitbc-operator volume: {exc}", file=sys.stderr)
            return 1

    return run


COMMANDS: dict[str, Callable[[argparse.Namespace, Mapping[str, str]], int]] = {
    "prepare": cmd_prepare, "backup": cmd_backup, "restore": cmd_restore, "maintain": cmd_maintain,
    "serve": cmd_serve, "check": cmd_check,
}


def run(action: str, args: argparse.Namespace) -> int:
    """Run ``action`` with the parsed ``args`` and the environment: its exit status (2 for bad input)."""
    return _run(COMMANDS[action])(args)
