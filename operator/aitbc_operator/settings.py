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


def _env_list(name: str) -> tuple[str, ...]:
    return tuple(p for p in (s.strip() for s in os.environ.get(name, "").split(",")) if p)


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
    worker_idle_timeout: float = 0.5
    #: Port of the liveness/readiness endpoint (0 disables it).
    health_port: int = 8080
    #: Port of the Prometheus metrics endpoint (0 disables it).
    metrics_port: int = 9090
    #: Hold a Lease before reconciling, so that of several replicas only one acts.
    leader_election: bool = True
    #: Namespace and name of that Lease (the operator's own namespace, from the downward API).
    leader_election_namespace: str = "aitbc-system"
    leader_election_name: str = "aitbc-operator-leader"
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
        identity=os.environ.get("POD_NAME") or default.identity,
        node_policy=NodePolicy.from_env(os.environ),
    )
