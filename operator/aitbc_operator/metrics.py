"""Prometheus metrics of the operator (served on settings.metrics_port, path /metrics).

Series:
  aitbc_reconcile_total{kind, result}            reconciles by outcome (ok, temporary_error, permanent_error, error)
  aitbc_reconcile_errors_total{kind, reason}     failed reconciles by condition reason (e.g. AdminSecretNotFound)
  aitbc_reconcile_duration_seconds{kind}         reconcile duration histogram
  aitbc_drift_repairs_total{kind, what}          drift repaired on the PostgreSQL server, by action (CreateRole,
                                                 EnableLogin, SetConnectionLimit, SetPassword, CreateDatabase,
                                                 SetDatabaseOwner, ...: postgres.Action)
  aitbc_password_rotations_total{trigger}        passwords generated, by trigger (initial, token, schedule)
  aitbc_rollout_phase{namespace, name, phase}    1 for the current rollout phase of each AitbcNode, 0 for the others
                                                 (Idle, RollingNode, RollingRpc, Stalled); removed with the AitbcNode
  aitbc_kube_writes_total{verb, resource}        write requests of the operator's own API client (k8s/client.Kube:
                                                 server-side applies, status patches, the leader Lease), by HTTP verb
                                                 and resource, e.g. {verb="PATCH", resource="aitbcnodes/status"};
                                                 kopf's own writes (finalizers, annotations, Events) are not counted
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

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


def serve(port: int) -> None:
    """Start the /metrics HTTP server in a background thread."""
    start_http_server(port, registry=REGISTRY)
