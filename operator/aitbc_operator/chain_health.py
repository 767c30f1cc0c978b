"""Chain health as a pure decision: the sidecar's figures and the RPC's heights in, status and a restart out.

- **Stale RPC**: a chain whose RPC head height stays behind the height in its file by more than
  ``health.staleRpc.threshold`` for longer than ``gracePeriod`` makes the AitbcNode ``RpcStale`` (condition and
  Event) for as long as it lags. Unless ``restart`` is off, the RPC is restarted: at most once per grace period, and
  only while nothing rolls or holds the workloads. The restart is a counter on the RPC's pod template
  (``aitbc.io/rpc-restarts``): the count the template carries is the truth, so a lost status write cannot restart it
  twice.
- **WAL and disk**: a ``-wal`` above ``walLimit`` or a volume fuller than ``volumeFillPercent`` raises
  ``ChainHealthWarning``.
- Figures older than three poll intervals (the sidecar stopped answering) make both conditions ``Unknown``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .models.base import parse_duration
from .models.chain_reports import ChainHealthReport
from .models.chainops import HealthSpec, HealthStatus, quantity_bytes
from .models.node import ChainStatus

RPC_STALE = "RpcStale"
CHAIN_HEALTH_WARNING = "ChainHealthWarning"


@dataclass(frozen=True)
class HealthInput:
    """What :func:`decide_health` looks at."""

    spec: HealthSpec
    chains: list[ChainStatus]
    """The per-chain status with this reconcile's RPC heights."""
    report: ChainHealthReport | None
    """The sidecar's answer of this reconcile (None: not asked, or no answer)."""
    status: HealthStatus
    live_restarts: int
    """The restart count on the RPC's template."""
    may_restart: bool
    """Rollout Idle, no holds, RPC available."""
    now: datetime
    max_age: float
    """Seconds after which the sidecar's last answer is too old to judge by."""


@dataclass
class HealthDecision:
    """What to write."""

    chains: list[ChainStatus]
    status: HealthStatus
    rpc_restarts: int
    """The count the RPC's template must carry (one more than before: restart it)."""
    conditions: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(type, status, reason, message)."""
    events: list[tuple[str, str, bool]] = field(default_factory=list)


def _merge(chains: list[ChainStatus], report: ChainHealthReport | None) -> list[ChainStatus]:
    if report is None:
        return [c.model_copy() for c in chains]
    figures = {c.chain: c for c in report.chains}
    out = []
    for chain in chains:
        seen = figures.get(chain.chain_id)
        if seen is None:
            out.append(chain.model_copy())
            continue
        out.append(chain.model_copy(update={"file_height": seen.height, "size": seen.size, "wal_size": seen.wal_size,
                                            "integrity": seen.integrity}))
    return out


def _lagging(chain: ChainStatus, threshold: int) -> bool:
    return chain.file_height is not None and chain.height is not None and chain.file_height - chain.height > threshold


def _warnings(spec: HealthSpec, chains: list[ChainStatus], free_percent: float | None) -> list[str]:
    limit = quantity_bytes(spec.wal_limit)
    out = [f"{c.chain_id}: WAL {c.wal_size} bytes, above walLimit {spec.wal_limit}" for c in chains
           if c.wal_size is not None and c.wal_size > limit]
    out += [f"{c.chain_id}: the last quick_check found the database corrupt" for c in chains
            if c.integrity == "corrupt"]
    if free_percent is not None and 100 - free_percent > spec.volume_fill_percent:
        out.append(f"the chain volume is {100 - free_percent:.1f}% full, above {spec.volume_fill_percent}%")
    return out


def decide_health(inp: HealthInput) -> HealthDecision:
    """Merge the sidecar's figures, judge staleness, WAL and disk; decide whether to restart the RPC."""
    status = inp.status.model_copy()
    if inp.report is not None:
        status.observed_at = inp.report.observed_at
        status.volume_free_percent = inp.report.free_percent
    chains = _merge(inp.chains, inp.report)
    fresh = status.observed_at is not None and (inp.now - status.observed_at).total_seconds() <= inp.max_age
    restarts = max(status.rpc_restarts, inp.live_restarts)
    status.rpc_restarts = restarts
    d = HealthDecision(chains=chains, status=status, rpc_restarts=restarts)
    if not fresh:
        why = "the chain-health sidecar has not answered recently"
        d.conditions += [(RPC_STALE, "Unknown", "NoHealthData", why), (CHAIN_HEALTH_WARNING, "Unknown", "NoHealthData",
                                                                        why)]
        return d
    stale = _judge_staleness(inp, d)
    warnings = _warnings(inp.spec, chains, status.volume_free_percent)
    d.conditions.append((CHAIN_HEALTH_WARNING, "True" if warnings else "False",
                         "Warning" if warnings else "Healthy", "; ".join(warnings) or "WAL and disk within limits"))
    if not stale:
        d.conditions.append((RPC_STALE, "False", "RpcCurrent", "the RPC serves the heights in the files"))
    return d


def _judge_staleness(inp: HealthInput, d: HealthDecision) -> list[str]:
    """Stale chains (past the grace period); sets staleSince, the condition and the restart in ``d``."""
    spec = inp.spec.stale_rpc
    grace = parse_duration(spec.grace_period)
    stale: list[str] = []
    for chain in d.chains:
        if not _lagging(chain, spec.threshold):
            chain.stale_since = None
            continue
        chain.stale_since = chain.stale_since or inp.now
        if (inp.now - chain.stale_since).total_seconds() >= grace:
            stale.append(f"{chain.chain_id}: RPC at {chain.height}, file at {chain.file_height}")
    if not stale:
        return stale
    message = f"the RPC lags the files by more than {spec.threshold} blocks for {spec.grace_period}: " + \
        "; ".join(stale)
    last = d.status.last_rpc_restart
    due = last is None or (inp.now - last).total_seconds() >= grace
    if spec.restart and inp.may_restart and due:
        d.rpc_restarts += 1
        d.status.rpc_restarts = d.rpc_restarts
        d.status.last_rpc_restart = inp.now
        message += "; restarting the RPC"
    elif spec.restart and last is not None:
        message += f"; the RPC was restarted at {last.isoformat()}"
    d.conditions.append((RPC_STALE, "True", RPC_STALE, message))
    d.events.append((RPC_STALE, message, True))
    return stale
