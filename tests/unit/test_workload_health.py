"""workload_health.workload_problem: a table of what the API shows and what the AitbcNode must say."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aitbc_operator.workload_health import MAX_DETAIL, WorkloadProblem, workload_problem

STS = {"metadata": {"name": "aitbc1-node"}, "status": {}}


def pod(name: str = "aitbc1-node-0", *, init: list[dict[str, Any]] | None = None,
        containers: list[dict[str, Any]] | None = None, phase: str = "Running", **meta: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "initContainerStatuses": init or [],
                              "containerStatuses": containers or [running("node")]}
    return {"metadata": {"name": name, **meta}, "status": status}


def running(name: str) -> dict[str, Any]:
    return {"name": name, "ready": True, "restartCount": 0, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}


def waiting(name: str, reason: str, message: str = "", **extra: Any) -> dict[str, Any]:
    state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
    return {"name": name, "ready": False, "restartCount": 0, "state": state, **extra}


def terminated(name: str, code: int, message: str = "", reason: str = "Error") -> dict[str, Any]:
    return {"name": name, "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": reason, "message": message}}}


def event(reason: str, at: str, message: str = "", kind: str = "StatefulSet", name: str = "aitbc1-node",
          stamp: str = "lastTimestamp") -> dict[str, Any]:
    return {"involvedObject": {"kind": kind, "name": name}, "reason": reason, "message": message, stamp: at}


def evicted() -> dict[str, Any]:
    failed = pod(phase="Failed", containers=[])
    failed["status"].update(reason="Evicted", message="The node was low on memory.")
    return failed


def deployment(*conditions: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "aitbc1-rpc"}, "status": {"conditions": list(conditions)}}


REPORT_ERROR = json.dumps({"fs": "ext4", "nocow": "unsupported", "chains": [], "actions": [], "changed": False,
                           "ok": False, "error": "corrupt database /var/lib/aitbc/data/ait-mainnet/chain.db"})
PULL = "rpc error: code = NotFound desc = failed to pull and unpack image \"ghcr.io/aitbc/node:nope\""
FORBIDDEN = 'pods "aitbc1-node-0" is forbidden: violates PodSecurity "baseline:latest": hostPath volumes'
QUOTA = 'pods "aitbc1-rpc-5f-x" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=1, limited: pods=1'

CASES: dict[str, tuple[dict[str, Any], WorkloadProblem | None]] = {
    "all-running": ({"node_pod": pod()}, None),
    "nothing-yet": ({"statefulset": None, "node_pod": None}, None),
    "image-pull": ({"node_pod": pod(containers=[waiting("node", "ErrImagePull", PULL)])},
                   WorkloadProblem("ErrImagePull", f"pod aitbc1-node-0: container node ErrImagePull: {PULL}")),
    "back-off": ({"node_pod": pod(containers=[waiting("node", "ImagePullBackOff", "Back-off pulling image")])},
                 WorkloadProblem("ImagePullBackOff",
                                 "pod aitbc1-node-0: container node ImagePullBackOff: Back-off pulling image")),
    "invalid-name": ({"node_pod": pod(containers=[waiting("node", "InvalidImageName")])},
                     WorkloadProblem("InvalidImageName", "pod aitbc1-node-0: container node InvalidImageName")),
    "config-error": ({"node_pod": pod(containers=[waiting("node", "CreateContainerConfigError",
                                                          'secret "node-keys" not found')])},
                     WorkloadProblem("CreateContainerConfigError", "pod aitbc1-node-0: container node"
                                     ' CreateContainerConfigError: secret "node-keys" not found')),
    "crash-loop-with-last-exit": (
        {"node_pod": pod(containers=[waiting("node", "CrashLoopBackOff", "back-off 40s restarting failed container",
                                             lastState={"terminated": {"exitCode": 3, "reason": "Error",
                                                                       "message": "no such table: block"}})])},
        WorkloadProblem("CrashLoopBackOff", "pod aitbc1-node-0: container node CrashLoopBackOff: back-off 40s"
                        " restarting failed container (last run: exit code 3, Error: no such table: block)")),
    "just-starting-is-fine": ({"node_pod": pod(containers=[waiting("node", "ContainerCreating")])}, None),
    "init-failed-with-a-volume-report": (
        {"node_pod": pod(init=[terminated("volume-prep", 1, REPORT_ERROR)], phase="Pending",
                         containers=[waiting("node", "PodInitializing")])},
        WorkloadProblem("InitContainerFailed", "pod aitbc1-node-0: init container volume-prep failed: exit code 1,"
                        " Error: corrupt database /var/lib/aitbc/data/ait-mainnet/chain.db")),
    "init-done-is-fine": ({"node_pod": pod(init=[terminated("volume-prep", 0, "{}", reason="Completed")])}, None),
    "init-crash-loop": (
        {"node_pod": pod(init=[waiting("volume-prep", "CrashLoopBackOff", "back-off 10s",
                                       lastState={"terminated": {"exitCode": 2, "message": "bad input"}})],
                         phase="Pending")},
        WorkloadProblem("CrashLoopBackOff", "pod aitbc1-node-0: init container volume-prep CrashLoopBackOff:"
                        " back-off 10s (last run: exit code 2: bad input)")),
    "init-image-pull-first": (
        {"node_pod": pod(init=[waiting("volume-prep", "ErrImagePull", "denied")],
                         containers=[waiting("node", "ErrImagePull", "denied too")], phase="Pending")},
        WorkloadProblem("ErrImagePull", "pod aitbc1-node-0: init container volume-prep ErrImagePull: denied")),
    "pod-failed": ({"node_pod": evicted()},
                   WorkloadProblem("PodFailed", "pod aitbc1-node-0 failed: Evicted The node was low on memory.")),
    "terminating-pod-is-ignored": ({"node_pod": pod(containers=[waiting("node", "ErrImagePull")],
                                                    deletionTimestamp="2026-01-01T00:00:00Z")}, None),
    "failed-create": ({"node_pod": None, "statefulset_events": [event("FailedCreate", "2026-01-01T00:00:05Z",
                                                                      FORBIDDEN)]},
                      WorkloadProblem("FailedCreate", f"StatefulSet aitbc1-node: {FORBIDDEN}")),
    "failed-create-then-created": ({"node_pod": None, "statefulset_events": [
        event("FailedCreate", "2026-01-01T00:00:05Z", FORBIDDEN), event("SuccessfulCreate", "2026-01-01T00:00:09Z")]},
        None),
    "created-then-failed-again (events.k8s.io time)": ({"node_pod": None, "statefulset_events": [
        event("SuccessfulCreate", "2026-01-01T00:00:09Z"),
        event("FailedCreate", "2026-01-01T00:01:00.123456Z", FORBIDDEN, stamp="eventTime")]},
        WorkloadProblem("FailedCreate", f"StatefulSet aitbc1-node: {FORBIDDEN}")),
    "another-objects-events": ({"node_pod": None, "statefulset_events": [
        event("FailedCreate", "2026-01-01T00:00:05Z", FORBIDDEN, name="other-node")]}, None),
    "events-ignored-while-the-pod-exists": ({"node_pod": pod(), "statefulset_events": [
        event("FailedCreate", "2026-01-01T00:00:05Z", FORBIDDEN)]}, None),
    "rpc-replica-failure": ({"deployment": deployment({"type": "ReplicaFailure", "status": "True",
                                                       "reason": "FailedCreate", "message": QUOTA})},
                            WorkloadProblem("FailedCreate", f"Deployment aitbc1-rpc: {QUOTA}")),
    "rpc-replica-failure-resolved": ({"deployment": deployment({"type": "ReplicaFailure", "status": "False",
                                                                "reason": "FailedCreate"})}, None),
    "rpc-pod-crash-loop": ({"rpc_pods": [pod("aitbc1-rpc-5f-x", containers=[waiting("rpc", "CrashLoopBackOff")])]},
                           WorkloadProblem("CrashLoopBackOff", "pod aitbc1-rpc-5f-x: container rpc CrashLoopBackOff")),
    "node-before-rpc": ({"node_pod": pod(containers=[waiting("node", "ErrImagePull")]),
                         "rpc_pods": [pod("aitbc1-rpc-5f-x", containers=[waiting("rpc", "CrashLoopBackOff")])]},
                        WorkloadProblem("ErrImagePull", "pod aitbc1-node-0: container node ErrImagePull")),
}


@pytest.mark.parametrize(("seen", "expected"), CASES.values(), ids=CASES.keys())
def test_workload_problem(seen: dict[str, Any], expected: WorkloadProblem | None) -> None:
    world: dict[str, Any] = {"statefulset": STS, "node_pod": None, "statefulset_events": [], "deployment": None,
                             "rpc_pods": [], **seen}
    assert workload_problem(**world) == expected


def test_long_messages_are_clipped() -> None:
    seen = pod(containers=[waiting("node", "ErrImagePull", "x" * 5000)])
    problem = workload_problem(statefulset=STS, node_pod=seen, statefulset_events=[], deployment=None, rpc_pods=[])
    assert problem is not None
    assert problem.message.endswith("...")
    assert len(problem.message) < MAX_DETAIL + 100
