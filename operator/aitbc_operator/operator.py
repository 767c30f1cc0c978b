"""Start kopf with the operator's settings and handlers (`aitbc-operator run`)."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from . import settings as settings_mod

FINALIZER = "aitbc.io/finalizer"
PEERING_NAME = "aitbc-operator"
FIELD_MANAGER = "aitbc-operator"


def configure(settings: kopf.OperatorSettings, cfg: settings_mod.Settings) -> None:
    """All kopf settings, in one place."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="aitbc.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="aitbc.io", key="last-handled-configuration"
    )
    settings.watching.server_timeout = int(cfg.watch_server_timeout)
    settings.watching.client_timeout = int(cfg.watch_client_timeout)
    settings.watching.connect_timeout = 30
    settings.batching.worker_limit = cfg.max_workers
    settings.posting.level = logging.INFO
    settings.posting.enabled = True
    settings.peering.name = PEERING_NAME
    settings.peering.mandatory = False
    settings.networking.request_timeout = 60
    settings.execution.max_workers = cfg.max_workers


@kopf.on.startup()
async def _startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    cfg = settings_mod.load()
    configure(settings, cfg)
    memo["settings"] = cfg


def run(*, namespaces: tuple[str, ...] = (), standalone: bool = False, verbose: bool = False) -> int:
    """Run the operator until it is stopped (SIGINT/SIGTERM); returns the exit code."""
    from . import handlers  # noqa: F401  (registers the handlers)

    cfg = settings_mod.load()
    watched = namespaces or cfg.namespaces
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    kopf.configure(verbose=verbose)
    kopf.run(
        standalone=standalone,
        clusterwide=not watched,
        namespaces=watched,
        liveness_endpoint=f"http://0.0.0.0:{cfg.health_port}/healthz" if cfg.health_port else None,
    )
    return 0
