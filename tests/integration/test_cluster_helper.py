"""The cluster helper's failure paths: a component that does not come up is named, with its log, and nothing is left
running."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from localcluster.cluster import (
    BINARIES,
    KWOK_STAGES,
    Component,
    ComponentNotReady,
    LocalCluster,
    default_bin_dir,
    process_alive,
)


def processes_under(workdir: Path) -> list[str]:
    """Command lines of live processes that mention `workdir` (the components pass it in their flags)."""
    found = subprocess.run(["pgrep", "-af", str(workdir)], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


@pytest.mark.cluster
def test_a_component_that_exits_is_named_with_its_log_and_the_rest_is_stopped(tmp_path: Path) -> None:
    real = default_bin_dir()
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in (*BINARIES, KWOK_STAGES):
        (fake / name).symlink_to(real / name)
    (fake / "kube-scheduler").unlink()
    (fake / "kube-scheduler").write_text("#!/bin/sh\necho 'scheduler: cannot start, on purpose' >&2\nexit 3\n")
    (fake / "kube-scheduler").chmod(0o755)
    workdir = tmp_path / "k8s"

    with pytest.raises(ComponentNotReady) as info:
        LocalCluster(workdir, bin_dir=fake).start()

    assert info.value.component == "kube-scheduler"
    assert "exited with code 3" in str(info.value)
    assert "cannot start, on purpose" in str(info.value), "the error shows the tail of the component's log"
    deadline = time.monotonic() + 10
    while processes_under(workdir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_under(workdir) == [], "everything that was started is stopped"


def test_a_component_that_never_gets_ready_is_named_after_the_deadline(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, timeout=0.5)
    component = Component("kwok", ["sleep", "30"], tmp_path / "kwok.log")
    component.log.write_text("waiting for nodes\n")
    component.start(detach=False)
    cluster.components["kwok"] = component
    try:
        with pytest.raises(ComponentNotReady) as info:
            cluster._wait("kwok", time.monotonic(), lambda: False)
        assert info.value.component == "kwok"
        assert "did not come up: not ready" in str(info.value)
        assert "waiting for nodes" in str(info.value)
    finally:
        cluster.stop()
    assert component.proc is not None
    assert not process_alive(component.proc.pid)
    assert component.proc.returncode == -signal.SIGTERM
