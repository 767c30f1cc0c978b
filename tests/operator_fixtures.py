"""Run the real operator (`aitbc-operator run`) as a subprocess against the local control plane.

- `release_finalizers`: after the operator stopped, let a namespace's AitbcDatabases go without dropping anything.
- `OperatorProcess`: start/stop, wait for the health endpoint, the log for assertions and failure reports.
- `operator` (function fixture): an operator watching only the test's namespace, with short intervals
  (drift check and node poll every 2 s) so drift and timeouts show up quickly; stopped after the test, its log
  printed when the test failed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from localcluster.cluster import free_ports

SCRIPT = Path(sys.executable).parent / "aitbc-operator"


def release_finalizers(api: client.ApiClient, namespace: str, plural: str = "aitbcdatabases") -> None:
    """After the operator stopped: let the namespace go (its finalizers would keep it Terminating forever).

    Nothing is dropped on the server: releasing the finalizer is not the operator's deletion.
    """
    crs = client.CustomObjectsApi(api)
    found = crs.list_namespaced_custom_object("aitbc.io", "v1alpha1", namespace, plural)
    for obj in cast(dict[str, Any], found)["items"]:
        if obj["metadata"].get("finalizers"):
            try:
                crs.patch_namespaced_custom_object("aitbc.io", "v1alpha1", namespace, plural, obj["metadata"]["name"],
                                                   {"metadata": {"finalizers": None}})
            except ApiException as exc:
                if exc.status != 404:
                    raise


class OperatorProcess:
    """One `aitbc-operator run --standalone` process with its own log file (`command`: another launcher of the same
    command line, e.g. tests/skewed_operator.py)."""

    def __init__(self, kubeconfig: Path, log: Path, *, namespaces: tuple[str, ...] = (),
                 env: Mapping[str, str] | None = None, standalone: bool = True,
                 command: Sequence[str] = (str(SCRIPT),)) -> None:
        self.kubeconfig, self.log, self.namespaces, self.standalone = kubeconfig, log, namespaces, standalone
        self.command = tuple(command)
        self.health_port, self.metrics_port = free_ports(2)
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "AITBC_HEALTH_PORT": str(self.health_port),
            "AITBC_METRICS_PORT": str(self.metrics_port),
            "AITBC_LEADER_ELECTION": "false",
            "AITBC_DRIFT_INTERVAL": "2",
            "AITBC_NODE_POLL_INTERVAL": "2",
            "AITBC_OPERATOR_IMAGE": "ghcr.io/aitbc/aitbc-operator:test",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        """Start and wait until the liveness endpoint answers (kopf is watching)."""
        args = [*self.command, "run", *(["--standalone"] if self.standalone else [])]
        for ns in self.namespaces:
            args += ["--namespace", ns]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"operator not healthy after {timeout:.0f} s:\n{self.tail()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (graceful kopf shutdown), SIGKILL after `timeout`; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)

    def text(self) -> str:
        """The whole log so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 60) -> str:
        """The last lines of the log."""
        return "\n".join(self.text().splitlines()[-lines:])

    def metrics(self) -> str:
        """The Prometheus exposition text."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            body: bytes = resp.read()
        return body.decode()


@pytest.fixture
def operator(
    request: pytest.FixtureRequest, kubeconfig: Path, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator, watching the test's namespace; its log tail is printed if the test fails."""
    proc = OperatorProcess(kubeconfig, tmp_path / "operator.log", namespaces=(namespace,)).start()
    try:
        yield proc
    finally:
        proc.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"\n--- operator log tail ({proc.log}) ---\n{proc.tail(80)}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Expose each phase's report on the item (rep_setup, rep_call), for fixtures that report on failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
