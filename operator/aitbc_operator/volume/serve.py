"""`aitbc-operator volume serve`: the node pod's chain-health sidecar (read-only), JSON and Prometheus metrics.

``GET /chains`` answers a :class:`~aitbc_operator.models.chain_reports.ChainHealthReport` read at request time:
per chain the file and WAL sizes, the journal mode and MAX(height) in the file (a fresh read-only connection each time:
no cached engine that could go stale), the last quick_check (run in the background every ``integrity_interval``
seconds), and the volume's size and free space. ``GET /metrics`` gives the same figures in Prometheus' text format,
``GET /healthz`` answers 200. Connections are ``mode=ro`` and ``query_only``; nothing is ever written.
"""

from __future__ import annotations

import http.server
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from .. import chainpaths
from ..models.chain_reports import ChainHealth, ChainHealthReport, IntegrityResult
from . import db as sq
from .backup import max_height
from .fs import filesystem_type
from .prepare import utcnow


@dataclass
class HealthState:
    """What the sidecar knows between requests: the last integrity check per chain."""

    data_dir: Path
    chains: tuple[str, ...]
    integrity: dict[str, tuple[IntegrityResult, datetime]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check_integrity(self) -> None:
        """quick_check every chain database (only reads) and remember the results."""
        for chain in self.chains:
            db = Path(chainpaths.chain_db_path(self.data_dir, chain))
            if not db.is_file():
                outcome: IntegrityResult = "missing"
            else:
                try:
                    result = sq.integrity_check(db, "quick", timeout=5.0, read_only=True)
                    outcome = "ok" if result is not None and result.ok else "corrupt"
                except sq.VolumeError:
                    continue  # busy: try again next time
            with self.lock:
                self.integrity[chain] = (outcome, utcnow().replace(microsecond=0))

    def chain(self, chain: str) -> ChainHealth:
        """One chain, read now."""
        db = Path(chainpaths.chain_db_path(self.data_dir, chain))
        with self.lock:
            integrity, at = self.integrity.get(chain, ("skipped", None))
        entry = ChainHealth(chain=chain, integrity=integrity, integrity_at=at)
        if not db.is_file():
            entry.integrity = "missing"
            return entry
        wal = db.with_name(db.name + "-wal")
        entry.size = db.stat().st_size
        entry.wal_size = wal.stat().st_size if wal.exists() else 0
        try:
            with sq.connect(db, timeout=2.0, read_only=True) as conn:
                conn.execute("PRAGMA query_only=ON")
                entry.journal = sq.journal_mode(conn)
                entry.height = max_height(conn)
        except (sq.VolumeError, sqlite3.Error) as exc:
            entry.error = str(exc).splitlines()[0][:200]
        return entry

    def report(self) -> ChainHealthReport:
        """Every chain and the volume, read now."""
        vfs = os.statvfs(self.data_dir)
        return ChainHealthReport(
            observed_at=utcnow().replace(microsecond=0), fs=filesystem_type(self.data_dir),
            volume_bytes=vfs.f_blocks * vfs.f_frsize, free_bytes=vfs.f_bavail * vfs.f_frsize,
            chains=[self.chain(c) for c in self.chains],
        )


def metrics_text(report: ChainHealthReport) -> bytes:
    """The report in Prometheus' text format."""
    registry = CollectorRegistry()
    labels = ["chain"]
    height = Gauge("aitbc_chain_file_height", "MAX(height) in the chain database.", labels, registry=registry)
    size = Gauge("aitbc_chain_db_bytes", "chain.db size.", labels, registry=registry)
    wal = Gauge("aitbc_chain_wal_bytes", "chain.db-wal size.", labels, registry=registry)
    ok = Gauge("aitbc_chain_integrity_ok", "1 when the last quick_check passed.", labels, registry=registry)
    for chain in report.chains:
        if chain.height is not None:
            height.labels(chain.chain).set(chain.height)
        if chain.size is not None:
            size.labels(chain.chain).set(chain.size)
        wal.labels(chain.chain).set(chain.wal_size)
        ok.labels(chain.chain).set(1 if chain.integrity == "ok" else 0)
    Gauge("aitbc_chain_volume_bytes", "Size of the chain volume.", registry=registry).set(report.volume_bytes)
    Gauge("aitbc_chain_volume_free_bytes", "Free bytes on the chain volume.", registry=registry).set(report.free_bytes)
    return generate_latest(registry)


def _handler(state: HealthState) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/chains":
                body, kind = state.report().model_dump_json(by_alias=True, exclude_none=True).encode(), "json"
            elif path == "/metrics":
                body, kind = metrics_text(state.report()), "prometheus"
            elif path == "/healthz":
                body, kind = b'{"ok":true}', "json"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4" if kind == "prometheus"
                             else "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Polls every few seconds are not worth a log line."""

    return Handler


def serve(state: HealthState, port: int, integrity_interval: float, stop: threading.Event | None = None) -> None:
    """Serve until ``stop`` is set (forever without one); quick_check every ``integrity_interval`` s (0: never)."""
    stop = stop or threading.Event()
    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), _handler(state))  # noqa: S104 (the pod's port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        if integrity_interval > 0:
            state.check_integrity()
            while not stop.wait(integrity_interval):
                state.check_integrity()
        else:
            stop.wait()
    finally:
        server.shutdown()
        server.server_close()
