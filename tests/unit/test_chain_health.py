"""Chain health with a frozen clock: staleness over the grace period, one restart per grace period, never while the
rollout runs, a restart count read from the RPC's template, WAL and disk warnings, stale figures Unknown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aitbc_operator.chain_health import CHAIN_HEALTH_WARNING, RPC_STALE, HealthInput, decide_health
from aitbc_operator.models.chain_reports import ChainHealth, ChainHealthReport
from aitbc_operator.models.chainops import HealthSpec, HealthStatus
from aitbc_operator.models.node import ChainStatus

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
SPEC = HealthSpec.model_validate({"staleRpc": {"threshold": 10, "gracePeriod": "60s"}, "walLimit": "1Mi",
                                  "volumeFillPercent": 90})


def report(file_height: int, *, wal: int = 0, free: int = 50, now: datetime = T0) -> ChainHealthReport:
    return ChainHealthReport(observed_at=now, fs="btrfs", volume_bytes=100, free_bytes=free,
                             chains=[ChainHealth(chain="ait-mainnet", size=4096, wal_size=wal, journal="wal",
                                                 height=file_height, integrity="ok")])


def run(rpc: int, file_height: int, *, now: datetime = T0, chains: list[ChainStatus] | None = None,
        status: HealthStatus | None = None, may_restart: bool = True, live: int = 0, **kw: int) -> tuple:
    chain = (chains or [ChainStatus(chain_id="ait-mainnet")])[0].model_copy(update={"height": rpc})
    d = decide_health(HealthInput(spec=SPEC, chains=[chain], report=report(file_height, now=now, **kw),
                                  status=status or HealthStatus(), live_restarts=live, may_restart=may_restart,
                                  now=now, max_age=120))
    conds = {t: (s, r) for t, s, r, _ in d.conditions}
    return d, conds


def test_a_lag_within_the_threshold_is_current() -> None:
    d, conds = run(rpc=95, file_height=100)
    assert conds[RPC_STALE] == ("False", "RpcCurrent")
    assert d.chains[0].stale_since is None
    assert d.chains[0].file_height == 100


def test_a_lag_is_stale_only_after_the_grace_period_then_restarted_once_per_grace_period() -> None:
    d, conds = run(rpc=50, file_height=100)
    assert conds[RPC_STALE] == ("False", "RpcCurrent")  # lagging, but not for long enough
    assert d.chains[0].stale_since == T0
    d2, conds = run(rpc=55, file_height=110, now=T0 + timedelta(seconds=61), chains=d.chains, status=d.status)
    assert conds[RPC_STALE] == ("True", RPC_STALE)
    assert d2.rpc_restarts == 1
    assert d2.status.last_rpc_restart == T0 + timedelta(seconds=61)
    assert d2.events[0][0] == RPC_STALE
    # Still lagging right after the restart: still RpcStale, but no second restart within the grace period.
    d3, conds = run(rpc=55, file_height=115, now=T0 + timedelta(seconds=70), chains=d2.chains, status=d2.status, live=1)
    assert conds[RPC_STALE] == ("True", RPC_STALE)
    assert d3.rpc_restarts == 1
    # A grace period after the first restart, still lagging: the second one.
    d4, _ = run(rpc=55, file_height=120, now=T0 + timedelta(seconds=122), chains=d3.chains, status=d3.status, live=1)
    assert d4.rpc_restarts == 2
    # Caught up: current again.
    d5, conds = run(rpc=120, file_height=120, now=T0 + timedelta(seconds=130), chains=d4.chains, status=d4.status,
                    live=2)
    assert conds[RPC_STALE] == ("False", "RpcCurrent")
    assert d5.chains[0].stale_since is None


def test_never_restarted_while_the_rollout_runs_or_a_hold_is_on() -> None:
    d, _ = run(rpc=50, file_height=100)
    d2, conds = run(rpc=50, file_height=110, now=T0 + timedelta(seconds=61), chains=d.chains, status=d.status,
                    may_restart=False)
    assert conds[RPC_STALE][0] == "True"
    assert d2.rpc_restarts == 0


def test_the_count_on_the_template_wins_over_a_lost_status_write() -> None:
    d, _ = run(rpc=100, file_height=100, status=HealthStatus(rpc_restarts=1), live=2)
    assert d.rpc_restarts == 2
    assert d.status.rpc_restarts == 2


@pytest.mark.parametrize(("wal", "free", "warning"), [(0, 50, "False"), (2 * 2**20, 50, "True"), (0, 5, "True")])
def test_wal_and_disk_warnings(wal: int, free: int, warning: str) -> None:
    _, conds = run(rpc=100, file_height=100, wal=wal, free=free)
    assert conds[CHAIN_HEALTH_WARNING][0] == warning


def test_without_recent_figures_both_conditions_are_unknown() -> None:
    d = decide_health(HealthInput(spec=SPEC, chains=[ChainStatus(chain_id="ait-mainnet", height=1)], report=None,
                                  status=HealthStatus(observed_at=T0 - timedelta(minutes=5)), live_restarts=0,
                                  may_restart=True, now=T0, max_age=120))
    assert {t: s for t, s, _, _ in d.conditions} == {RPC_STALE: "Unknown", CHAIN_HEALTH_WARNING: "Unknown"}
