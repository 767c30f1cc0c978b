"""Prometheus metrics of the operator (served on settings.metrics_port, path /metrics).

Series:
  aitbc_reconcile_total{kind, result}            reconciles by outcome (ok, temporary_error, permanent_error, error)
  aitbc_reconcile_errors_total{kind, reason}     failed reconciles by condition reason (e.g. AdminSecretNotFound)
  aitbc_reconcile_duration_seconds{kind}         reconcile duration histogram
  aitbc_drift_repairs_total{kind, what}          drift repaired on the PostgreSQL server, by action (CreateRole,
                                                 EnableLogin, SetConnectionLimit, SetPassword, CreateDatabase,
                                                 SetDatabaseOwner, ...: postgres.Action), or Secret (a connection
                                                 Secret edited by someone else or deleted, put back)
  aitbc_password_rotations_total{trigger}        passwords generated, by trigger (initial, token, schedule, lost: the
                                                 Secret or its password was gone)
  aitbc_rollout_phase{namespace, name, phase}    1 for the current rollout phase of each AitbcNode, 0 for the others
                                                 (Idle, RollingNode, RollingRpc, Stalled); removed with the AitbcNode
  aitbc_backup_last_success_timestamp_seconds{namespace, name, chain}   when the newest copy of a chain was taken
  aitbc_backup_last_size_bytes{namespace, name, chain}                  its size
  aitbc_chain_file_height{namespace, name, chain}   MAX(height) in the chain database (the health sidecar's figure)
  aitbc_chain_rpc_height{namespace, name, chain}    the RPC's head height
  aitbc_chain_wal_bytes{namespace, name, chain}     size of the chain's -wal
  aitbc_rpc_stale_restarts{namespace, name}         restarts of the RPC for staleness (the count on its template)
                                                 (all removed with the AitbcNode)
  aitbc_volume_expansions_total                  chain volume claims whose request the operator raised
                                                 (storage.pvc.autoExpand)
  aitbc_kube_writes_total{verb, resource}        write requests of the operator's own API client (k8s/client.Kube:
                                                 server-side applies, status patches, the leader Lease), by HTTP verb
                                                 and resource, e.g. {verb="PATCH", resource="aitbcnodes/status"};
                                                 kopf's own writes (finalizers, annotations, Events) are not counted
  aitbc_kube_reads_total{verb, resource}         the same client's reads: verb GET (one object) or LIST
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from .models.node import AitbcNodeStatus

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter("aitbc_reconcile", "Reconciles by outcome.", ["kind", "result"], registry=REGISTRY)
ERRORS = Counter("aitbc_reconcile_errors", "Failed reconciles by reason.", ["kind", "reason"], registry=REGISTRY)
DURATION = Histogram(
    "aitbc_reconcile_duration_seconds", "Reconcile duration.", ["kind"], registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DRIFT_REPAIRS = Counter("aitbc_drift_repairs", "Drift repairs.", ["kind", "what"], registry=REGISTRY)
ROTATIONS = Counter("aitbc_password_rotations", "Password rotations.", ["trigger"], registry=REGISTRY)
ROLLOUT_PHASE = Gauge(
    "aitbc_rollout_phase", "Current rollout phase of each AitbcNode (1 = current).",
    ["namespace", "name", "phase"], registry=REGISTRY,
)
KUBE_WRITES = Counter(
    "aitbc_kube_writes", "Kubernetes write requests of the operator's client.", ["verb", "resource"], registry=REGISTRY
)
KUBE_READS = Counter(
    "aitbc_kube_reads", "Kubernetes read requests of the operator's client.", ["verb", "resource"], registry=REGISTRY
)

VOLUME_EXPANSIONS = Counter("aitbc_volume_expansions", "Chain volume claims expanded (storage.pvc.autoExpand).",
                            registry=REGISTRY)
_CHAIN_LABELS = ["namespace", "name", "chain"]
BACKUP_LAST_SUCCESS = Gauge("aitbc_backup_last_success_timestamp_seconds", "When the newest copy of a chain was taken.",
                            _CHAIN_LABELS, registry=REGISTRY)
BACKUP_LAST_SIZE = Gauge("aitbc_backup_last_size_bytes", "Size of the newest copy of a chain.", _CHAIN_LABELS,
                         registry=REGISTRY)
CHAIN_FILE_HEIGHT = Gauge("aitbc_chain_file_height", "MAX(height) in the chain database.", _CHAIN_LABELS,
                          registry=REGISTRY)
CHAIN_RPC_HEIGHT = Gauge("aitbc_chain_rpc_height", "The RPC's head height.", _CHAIN_LABELS, registry=REGISTRY)
CHAIN_WAL_BYTES = Gauge("aitbc_chain_wal_bytes", "Size of the chain's -wal.", _CHAIN_LABELS, registry=REGISTRY)
RPC_STALE_RESTARTS = Gauge("aitbc_rpc_stale_restarts", "Restarts of the RPC for staleness.", ["namespace", "name"],
                           registry=REGISTRY)
_PER_CHAIN = (BACKUP_LAST_SUCCESS, BACKUP_LAST_SIZE, CHAIN_FILE_HEIGHT, CHAIN_RPC_HEIGHT, CHAIN_WAL_BYTES)

ROLLOUT_PHASES = ("Idle", "RollingNode", "RollingRpc", "Stalled", "Held")


@contextmanager
def observe_reconcile(kind: str) -> Iterator[None]:
    """Time a reconcile and count its outcome (the exception, if any, propagates)."""
    from . import errors

    started = time.perf_counter()
    try:
        yield
    except errors.TemporaryError as exc:
        RECONCILES.labels(kind, "temporary_error").inc()
        ERRORS.labels(kind, exc.reason).inc()
        raise
    except errors.PermanentError as exc:
        RECONCILES.labels(kind, "permanent_error").inc()
        ERRORS.labels(kind, exc.reason).inc()
        raise
    except Exception:
        RECONCILES.labels(kind, "error").inc()
        ERRORS.labels(kind, "Unexpected").inc()
        raise
    else:
        RECONCILES.labels(kind, "ok").inc()
    finally:
        DURATION.labels(kind).observe(time.perf_counter() - started)


def set_rollout_phase(namespace: str, name: str, phase: str | None) -> None:
    """Record the current phase; None removes the node's series (it was deleted)."""
    for candidate in ROLLOUT_PHASES:
        if phase is not None:
            ROLLOUT_PHASE.labels(namespace, name, candidate).set(1 if candidate == phase else 0)
            continue
        with suppress(KeyError):
            ROLLOUT_PHASE.remove(namespace, name, candidate)


def set_chain_figures(namespace: str, name: str, status: AitbcNodeStatus | None) -> None:
    """Backup, height and WAL series of one AitbcNode from its status; None removes them (it was deleted)."""
    for gauge in _PER_CHAIN:
        for labels in [k for k in _label_sets(gauge) if k[:2] == (namespace, name)]:
            gauge.remove(*labels)
    with suppress(KeyError):
        RPC_STALE_RESTARTS.remove(namespace, name)
    if status is None:
        return
    backups = {c.chain: c for c in (status.backup.chains if status.backup else [])}
    for chain in status.chains:
        labels = (namespace, name, chain.chain_id)
        copy = backups.get(chain.chain_id)
        if copy is not None and copy.last_success is not None:
            BACKUP_LAST_SUCCESS.labels(*labels).set(copy.last_success.time.timestamp())
            BACKUP_LAST_SIZE.labels(*labels).set(copy.last_success.size)
        for gauge, value in ((CHAIN_FILE_HEIGHT, chain.file_height), (CHAIN_RPC_HEIGHT, chain.height),
                             (CHAIN_WAL_BYTES, chain.wal_size)):
            if value is not None:
                gauge.labels(*labels).set(value)
    RPC_STALE_RESTARTS.labels(namespace, name).set(status.health.rpc_restarts if status.health else 0)


def _label_sets(gauge: Gauge) -> list[tuple[str, ...]]:
    """The label values of every series a gauge has (prometheus-client keeps them in its _metrics dict)."""
    return [tuple(key) for key in gauge._metrics]


def serve(port: int) -> None:
    """Start the /metrics HTTP server in a background thread."""
    start_http_server(port, registry=REGISTRY)
