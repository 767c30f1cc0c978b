"""Start kopf with the operator's settings and handlers (`aitbc-operator run`)."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from typing import Any

import kopf

from . import metrics
from . import settings as settings_mod
from .k8s.client import Kube, load_api_client
from .k8s.lease import LeaderLock
from .postgres import ServerPool

log = logging.getLogger(__name__)

FINALIZER = "aitbc.io/finalizer"


def configure(settings: kopf.OperatorSettings, cfg: settings_mod.Settings) -> None:
    """All kopf settings, in one place."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="aitbc.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="aitbc.io", key="last-handled-configuration"
    )
    # Streams are re-established by the server at least this often, and a silent stream is noticed by the client.
    settings.watching.server_timeout = int(cfg.watch_server_timeout)
    settings.watching.client_timeout = int(cfg.watch_client_timeout)
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.batching.worker_limit = cfg.max_workers
    settings.execution.max_workers = cfg.max_workers
    settings.posting.enabled = True
    settings.posting.level = logging.INFO
    # HA is a Lease taken before kopf starts (see run()); kopf's own peering is not used.
    settings.peering.standalone = True


@kopf.on.startup()
async def _startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    cfg = settings_mod.load()
    configure(settings, cfg)
    memo["settings"] = cfg
    memo["kube"] = Kube(load_api_client())
    memo["locks"] = {}
    memo["pg"] = ServerPool()


@kopf.on.cleanup()
async def _cleanup(memo: kopf.Memo, **_: Any) -> None:
    pool = memo.get("pg")
    if pool is not None:
        await pool.aclose()
    kube = memo.get("kube")
    if kube is not None:
        kube.close()


@kopf.on.probe(id="kube")
def _probe_kube(memo: kopf.Memo, **_: Any) -> str:
    kube: Kube | None = memo.get("kube")
    return "ok" if kube is not None else "starting"


def run(*, namespaces: tuple[str, ...] = (), standalone: bool = False, verbose: bool = False) -> int:
    """Run the operator until it is stopped (SIGINT/SIGTERM) or loses leadership; returns the exit code."""
    from . import handlers  # noqa: F401  (registers the handlers)

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    cfg = settings_mod.load()
    watched = namespaces or cfg.namespaces
    if cfg.metrics_port:
        metrics.serve(cfg.metrics_port)
    # A concurrent Future, not a threading.Event: kopf awaits an Event in an executor thread that would then keep the
    # process alive after a SIGTERM; a Future is awaited natively.
    stop: concurrent.futures.Future[None] | None = None
    lost = threading.Event()
    lock: LeaderLock | None = None
    if cfg.leader_election and not standalone:
        lock = LeaderLock(
            Kube(load_api_client()), cfg.leader_election_namespace, cfg.leader_election_name, cfg.identity
        )
        log.info("waiting for the leader lease %s/%s", cfg.leader_election_namespace, cfg.leader_election_name)
        if not lock.acquire():
            return 1
        stop = concurrent.futures.Future()

        def on_lost() -> None:
            lost.set()
            if stop is not None and not stop.done():
                stop.set_result(None)

        lock.keep(on_lost)
    try:
        kopf.run(
            standalone=True,
            clusterwide=not watched,
            namespaces=watched,
            liveness_endpoint=f"http://0.0.0.0:{cfg.health_port}/healthz" if cfg.health_port else None,
            stop_flag=stop,
        )
    finally:
        if lock is not None and not lost.is_set():
            lock.release()
    if lost.is_set():
        log.error("leadership lost: exiting so that this replica restarts as a follower")
        return 2
    return 0
