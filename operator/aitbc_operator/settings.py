"""Operator settings, read once from the environment (one place for every knob)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import __version__
from .node_policy import NodePolicy


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a number") from exc


def _env_nonnegative(name: str, default: float) -> float:
    value = _env_float(name, default)
    if value < 0:
        raise ValueError(f"{name}={value:g} must not be negative")
    return value


def _env_positive_int(name: str, default: int) -> int:
    value = _env_float(name, default)
    if value < 1 or value != int(value):
        raise ValueError(f"{name}={value:g} must be a whole number of at least 1")
    return int(value)


def _env_list(name: str) -> tuple[str, ...]:
    return tuple(p for p in (s.strip() for s in os.environ.get(name, "").split(",")) if p)


@dataclass(frozen=True)
class LeaseTimings:
    """Leader election's durations, in seconds (client-go's names and defaults; k8s/lease.py explains them)."""

    #: How long a candidate waits without seeing the lease record change before it takes over.
    lease_duration: float = 15.0
    #: How long the leader keeps acting without a successful renewal (counted from the start of the last one).
    renew_deadline: float = 10.0
    #: Between two renewals of the leader, and two attempts of a candidate.
    retry_period: float = 2.0
    #: Each request of the election, at most (and never past the renew deadline).
    request_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError(
                f"leader election needs AITBC_LEASE_DURATION ({self.lease_duration:g}) > AITBC_LEASE_RENEW_DEADLINE "
                f"({self.renew_deadline:g}) > AITBC_LEASE_RETRY_PERIOD ({self.retry_period:g}) > 0")
        if not 0 < self.request_timeout < self.renew_deadline:
            raise ValueError(f"AITBC_LEASE_REQUEST_TIMEOUT ({self.request_timeout:g}) must be above 0 and below "
                             f"AITBC_LEASE_RENEW_DEADLINE ({self.renew_deadline:g})")


@dataclass(frozen=True)
class Settings:
    """What the operator needs to know about its environment. Built by :func:`load`."""

    #: Image used for the volume-preparation init container (the operator's own image).
    operator_image: str = f"ghcr.io/aitbc/aitbc-operator:{__version__}"
    #: Namespaces to watch; empty means cluster-wide.
    namespaces: tuple[str, ...] = field(default_factory=tuple)
    #: Seconds between drift checks of an AitbcDatabase against its PostgreSQL server.
    drift_interval: float = 300.0
    #: Seconds between status refreshes (heights, readiness) of an AitbcNode.
    node_poll_interval: float = 30.0
    #: Server-side watch timeout (seconds): streams are re-established at least this often.
    watch_server_timeout: float = 300.0
    #: Client-side watch timeout (seconds), slightly above the server's, so a silent stream is noticed.
    watch_client_timeout: float = 330.0
    #: Maximum concurrent handler workers per resource kind.
    max_workers: int = 20
    #: Seconds an object's worker lingers after its last event before it frees its slot (kopf's idle_timeout).
    worker_idle_timeout: float = 0.05
    #: Port of the liveness/readiness endpoint (0 disables it).
    health_port: int = 8080
    #: Port of the Prometheus metrics endpoint (0 disables it).
    metrics_port: int = 9090
    #: Hold a Lease before reconciling, so that of several replicas only one acts.
    leader_election: bool = True
    #: Namespace and name of that Lease (the operator's own namespace, from the downward API).
    leader_election_namespace: str = "aitbc-system"
    leader_election_name: str = "aitbc-operator-leader"
    #: Durations of the leader election (AITBC_LEASE_DURATION, AITBC_LEASE_RENEW_DEADLINE, AITBC_LEASE_RETRY_PERIOD,
    #: AITBC_LEASE_REQUEST_TIMEOUT).
    lease: LeaseTimings = field(default_factory=LeaseTimings)
    #: Requests of the operator's Kubernetes API client in flight at once (one pooled connection each), all handlers.
    kube_connections: int = 8
    #: This replica's identity in the Lease (the pod name).
    identity: str = field(default_factory=lambda: os.environ.get("HOSTNAME", "aitbc-operator"))
    #: What an AitbcNode may ask of a Kubernetes node (AITBC_NODE_HOSTPATH_PREFIXES, AITBC_NODE_ALLOW_PRIVILEGED,
    #: AITBC_NODE_VOLUME_PREP_IMAGES; see node_policy.py). The admission policy reads the same values.
    node_policy: NodePolicy = field(default_factory=NodePolicy)


def load() -> Settings:
    """Settings from `AITBC_*` environment variables, defaults for the rest."""
    default = Settings()
    return Settings(
        operator_image=os.environ.get("AITBC_OPERATOR_IMAGE", default.operator_image),
        namespaces=_env_list("AITBC_WATCH_NAMESPACES"),
        drift_interval=_env_float("AITBC_DRIFT_INTERVAL", default.drift_interval),
        node_poll_interval=_env_float("AITBC_NODE_POLL_INTERVAL", default.node_poll_interval),
        watch_server_timeout=_env_float("AITBC_WATCH_SERVER_TIMEOUT", default.watch_server_timeout),
        watch_client_timeout=_env_float("AITBC_WATCH_CLIENT_TIMEOUT", default.watch_client_timeout),
        max_workers=int(_env_float("AITBC_MAX_WORKERS", default.max_workers)),
        worker_idle_timeout=_env_nonnegative("AITBC_WORKER_IDLE_TIMEOUT", default.worker_idle_timeout),
        health_port=int(_env_float("AITBC_HEALTH_PORT", default.health_port)),
        metrics_port=int(_env_float("AITBC_METRICS_PORT", default.metrics_port)),
        leader_election=os.environ.get("AITBC_LEADER_ELECTION", "true").lower() not in ("0", "false", "no"),
        leader_election_namespace=os.environ.get("POD_NAMESPACE", default.leader_election_namespace),
        leader_election_name=os.environ.get("AITBC_LEADER_ELECTION_NAME", default.leader_election_name),
        lease=LeaseTimings(
            lease_duration=_env_float("AITBC_LEASE_DURATION", default.lease.lease_duration),
            renew_deadline=_env_float("AITBC_LEASE_RENEW_DEADLINE", default.lease.renew_deadline),
            retry_period=_env_float("AITBC_LEASE_RETRY_PERIOD", default.lease.retry_period),
            request_timeout=_env_float("AITBC_LEASE_REQUEST_TIMEOUT", default.lease.request_timeout),
        ),
        kube_connections=_env_positive_int("AITBC_KUBE_CONNECTIONS", default.kube_connections),
        identity=os.environ.get("POD_NAME") or default.identity,
        node_policy=NodePolicy.from_env(os.environ),
    )
