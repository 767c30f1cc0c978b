"""`aitbc-operator volume prepare`: what the runbook does by hand with mkdir, chown, chattr +C and sqlite3.

Per run, in this order (each step looks before it acts, so a second run changes nothing):
1. the filesystem type of the data dir; with NOCOW required on a filesystem without it, stop before any change;
2. ``<data_dir>`` and ``data/`` exist, NOCOW on both (new chain directories inherit it);
3. a stray default ``data/chain.db`` (and its -wal/-shm/-journal) is moved aside to a timestamped name;
4. per chain: ``data/<chain>/`` exists with NOCOW; an existing ``chain.db`` is integrity-checked first (a corrupt one
   is reported and left alone), then re-created NOCOW if it (or its -wal/-shm) lacks the flag, then put in WAL mode;
5. ownership of the data dir and everything under ``data/`` (not followed through symlinks).

Nothing under the data dir is followed through a symbolic link: ``data/``, a chain directory, a ``chain.db`` or one
of its sidecars (or the stray default) that is a link stops the run with an error, before anything is done to it.
The node container owns these paths and could otherwise point this root-run tool (chown, NOCOW, SQLite writes)
at whatever the link names.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Literal

from .. import chainpaths
from ..models.volume_report import ChainVolumeReport, Integrity, NoCowState, VolumeReport
from . import db as sq
from .defaults import DEFAULT_BUSY_TIMEOUT
from .fs import filesystem_type, set_nocow, supports_nocow
from .nocow import flag_if_empty, needs_recreate, recreate_nocow

JournalPolicy = Literal["wal", "keep"]
#: Mode of directories this tool creates (the runbook's chmod 755).
DIR_MODE = 0o755
#: Timestamp in names of files moved aside.
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


def utcnow() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class PrepareOptions:
    """Inputs of `volume prepare` (from flags or the environment, see cli.py)."""

    data_dir: Path
    chains: tuple[str, ...]
    uid: int | None = None
    """Owner to set on the data dir and everything under data/; None leaves owners alone."""
    gid: int | None = None
    nocow: bool = True
    """Set NOCOW (the spec's storage.disableCow)."""
    require_nocow: bool = False
    """Fail when the filesystem cannot do NOCOW instead of reporting `unsupported`."""
    journal_mode: JournalPolicy = "wal"
    """``wal``: put every chain database in WAL mode; ``keep``: only report the journal mode."""
    integrity_check: sq.IntegrityLevel = "quick"
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    now: Callable[[], datetime] = utcnow


@dataclass
class _Run:
    """What one run has found and done so far."""

    opts: PrepareOptions
    fs: str
    nocow_possible: bool
    actions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def refuse_symlinks(*paths: Path) -> None:
    """VolumeError when one of ``paths`` (under the data dir) is a symbolic link."""
    for path in paths:
        if path.is_symlink():
            raise sq.VolumeError(f"{path} is a symbolic link: volume prepare never follows one under the data dir"
                                 " (remove it)")


def _db_paths(db: Path) -> list[Path]:
    """A database file and every sidecar name it may have."""
    return [db, *(Path(p) for p in chainpaths.sidecar_paths(PurePosixPath(db)))]


def _ensure_dir(run: _Run, path: Path, label: str) -> None:
    if path.is_dir():
        return
    path.mkdir(mode=DIR_MODE, parents=True)
    path.chmod(DIR_MODE)  # mkdir's mode is filtered by the umask
    run.actions.append(f"mkdir {label}")


def _ensure_dir_nocow(run: _Run, path: Path, label: str) -> NoCowState:
    """NOCOW on a directory; its state for the report."""
    if not run.opts.nocow:
        return "disabled"
    if not run.nocow_possible:
        return "unsupported"
    try:
        if set_nocow(path):
            run.actions.append(f"nocow {label}")
    except OSError as exc:
        run.errors.append(f"cannot set NOCOW on {path}: {exc.strerror or exc}")
        return "failed"
    return "set"


def _move_stray_default(run: _Run) -> None:
    """Move ``data/chain.db`` (and its sidecars, keeping them paired) aside; never delete it."""
    stray = Path(chainpaths.stray_default_db_path(run.opts.data_dir))
    refuse_symlinks(*_db_paths(stray))
    if not stray.exists():
        return
    reason = sq.open_by_others(stray)
    if reason:
        run.errors.append(f"stray default database {stray} not moved: {reason}")
        return
    stamp = run.opts.now().astimezone(UTC).strftime(STAMP_FORMAT)
    target, n = stray.with_name(f"{stray.name}.{stamp}"), 1
    while target.exists():
        n += 1
        target = stray.with_name(f"{stray.name}.{stamp}-{n}")
    for sidecar in sq.sidecars(stray):  # chain.db-wal -> chain.db.<stamp>-wal: SQLite finds it again there
        sidecar.rename(target.with_name(target.name + sidecar.name.removeprefix(stray.name)))
    stray.rename(target)
    sq.fsync_path(stray.parent)
    run.actions.append(f"stray-moved {target.name}")
    run.warnings.append(f"moved the stray default database {stray} aside to {target.name}")


def _check(run: _Run, chain: str, dbfile: Path) -> Integrity:
    result = sq.integrity_check(dbfile, run.opts.integrity_check, timeout=run.opts.busy_timeout)
    if result is None:
        return "skipped"
    if result.ok:
        return "ok"
    run.errors.append(f"corrupt database {dbfile} ({run.opts.integrity_check} check: {result.detail})")
    return "corrupt"


def _db_nocow(run: _Run, chain: str, dbfile: Path) -> NoCowState:
    """Make an existing database NOCOW (flag an empty file, re-create a non-empty one); its state."""
    if not needs_recreate(dbfile):
        return "set"
    if flag_if_empty(dbfile):
        run.actions.append(f"nocow-file {chain}")
        return "set"
    try:
        recreate_nocow(dbfile, timeout=run.opts.busy_timeout)
    except sq.DatabaseBusy as exc:
        message = f"{dbfile} is still copy-on-write, not re-created: {exc}"
        (run.errors if run.opts.require_nocow else run.warnings).append(message)
        run.actions.append(f"nocow-deferred {chain}")
        return "failed"
    except sq.VolumeError as exc:
        run.errors.append(f"{dbfile}: NOCOW re-creation failed, original kept: {exc}")
        return "failed"
    run.actions.append(f"nocow-recreate {chain}")
    return "set"


def _journal(run: _Run, chain: str, dbfile: Path) -> str | None:
    try:
        if run.opts.journal_mode == "wal":
            if sq.ensure_wal(dbfile, timeout=run.opts.busy_timeout):
                run.actions.append(f"wal {chain}")
            return "wal"
        return sq.read_journal_mode(dbfile, timeout=run.opts.busy_timeout)
    except (sq.VolumeError, sqlite3.Error) as exc:
        run.errors.append(f"{dbfile}: cannot set WAL mode: {exc}")
        return None


def _prepare_chain(run: _Run, chain: str) -> ChainVolumeReport:
    directory = Path(chainpaths.chain_dir(run.opts.data_dir, chain))
    dbfile = Path(chainpaths.chain_db_path(run.opts.data_dir, chain))
    refuse_symlinks(directory, *_db_paths(dbfile))
    _ensure_dir(run, directory, chain)
    nocow = _ensure_dir_nocow(run, directory, chain)
    if not dbfile.is_file():
        return ChainVolumeReport(chain=chain, nocow=nocow, journal=None, integrity="missing")
    integrity = _check(run, chain, dbfile)
    if integrity == "corrupt":  # never touch it: no copy, no journal change
        return ChainVolumeReport(chain=chain, nocow=nocow, integrity=integrity, size=dbfile.stat().st_size)
    if nocow == "set":
        nocow = _db_nocow(run, chain, dbfile)
    journal = _journal(run, chain, dbfile)
    return ChainVolumeReport(
        chain=chain, nocow=nocow, journal=journal, integrity=integrity, size=dbfile.stat().st_size
    )


def _chown(run: _Run) -> None:
    """Owner of the data dir and everything under data/, where it differs; one action per top-level entry."""
    uid = -1 if run.opts.uid is None else run.opts.uid
    gid = -1 if run.opts.gid is None else run.opts.gid
    if uid == gid == -1:
        return
    root = run.opts.data_dir
    data = Path(chainpaths.data_root(root))
    groups: list[tuple[str, list[Path]]] = [("data-dir", [root]), ("data", [data])]
    for entry in sorted(data.iterdir()):
        paths = [entry]
        if entry.is_dir() and not entry.is_symlink():
            paths += [Path(d) / f for d, dirs, files in os.walk(entry) for f in [*dirs, *files]]
        groups.append((entry.name, paths))
    for label, paths in groups:
        changed = False
        for path in paths:
            st = path.lstat()
            if (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid):
                os.chown(path, uid, gid, follow_symlinks=False)
                changed = True
        if changed:
            run.actions.append(f"chown {label}")


def _overall_nocow(run: _Run, states: list[NoCowState]) -> NoCowState:
    if not run.opts.nocow:
        return "disabled"
    if not run.nocow_possible:
        return "unsupported"
    return "failed" if "failed" in states else "set"


def _report(run: _Run, root_nocow: list[NoCowState], chains: list[ChainVolumeReport]) -> VolumeReport:
    return VolumeReport(
        fs=run.fs,
        nocow=_overall_nocow(run, [*root_nocow, *(c.nocow for c in chains)]),
        chains=chains,
        actions=run.actions,
        changed=bool(run.actions),
        ok=not run.errors,
        error="; ".join(run.errors) or None,
    )


def prepare(opts: PrepareOptions) -> tuple[VolumeReport, list[str]]:
    """Prepare the chain volume. Returns the report and warnings (for stderr); never raises for what it finds."""
    for chain in opts.chains:
        chainpaths.validate_chain_id(chain)
    fs = filesystem_type(_nearest_existing(opts.data_dir))
    run = _Run(opts=opts, fs=fs, nocow_possible=supports_nocow(fs))
    if opts.nocow and opts.require_nocow and not run.nocow_possible:
        run.errors.append(f"NOCOW is required but {opts.data_dir} is on {fs}, which has no NOCOW; nothing changed")
        return _report(run, [], []), run.warnings
    try:
        data = Path(chainpaths.data_root(opts.data_dir))
        _ensure_dir(run, opts.data_dir, "data-dir")
        root_nocow = [_ensure_dir_nocow(run, opts.data_dir, "data-dir")]
        refuse_symlinks(data)
        _ensure_dir(run, data, "data")
        root_nocow.append(_ensure_dir_nocow(run, data, "data"))
        _move_stray_default(run)
        chains = [_prepare_chain(run, chain) for chain in opts.chains]
        _chown(run)
    except OSError as exc:
        if exc.errno == errno.EROFS:
            run.errors.append(f"{opts.data_dir} is read-only: {exc}")
        else:
            run.errors.append(f"{exc.filename or opts.data_dir}: {exc.strerror or exc}")
        return _report(run, [], []), run.warnings
    except sq.VolumeError as exc:
        run.errors.append(str(exc))
        return _report(run, [], []), run.warnings
    return _report(run, root_nocow, chains), run.warnings
