"""The Argo CD health checks (deploy/argocd/health/*.lua), run for real in Lua 5.1 (Argo CD's gopher-lua dialect).

Argo CD converts the live object to a Lua table, runs the script with it as the global `obj` and reads
`{status = ..., message = ...}` from the returned table. The same happens here, through lupa, for every outcome
of both kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from aitbc_operator import manifests

ROOT = Path(__file__).resolve().parents[2]
HEALTH = ROOT / "deploy" / "argocd" / "health"
KINDS = ("AitbcDatabase", "AitbcNode")

Obj = dict[str, Any]
Check = Callable[[Obj], tuple[str, str]]


def to_lua(runtime: Any, value: Any) -> Any:
    """A JSON value as Argo CD hands it to Lua: objects and arrays become tables (arrays 1-based)."""
    if isinstance(value, dict):
        return runtime.table_from({k: to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, v) for v in value])
    return value


def health_check(kind: str) -> Check:
    """Run deploy/argocd/health/aitbc.io_<kind>.lua on an object, in a fresh Lua 5.1 state per call."""
    source = (HEALTH / f"aitbc.io_{kind}.lua").read_text()

    def run(obj: Obj) -> tuple[str, str]:
        runtime = lua51.LuaRuntime(unpack_returned_tuples=False)
        runtime.globals().obj = to_lua(runtime, obj)
        result = runtime.execute(source)
        assert result is not None, "the script returned nothing"
        assert set(result.keys()) <= {"status", "message"}, dict(result)
        return str(result["status"]), str(result["message"])

    return run


def cond(type_: str, status: str, reason: str = "Reason", message: str = "") -> Obj:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def resource(kind: str, *, generation: int = 3, status: Obj | None = None) -> Obj:
    obj: Obj = {
        "apiVersion": "aitbc.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "aitbc", "generation": generation},
        "spec": {},
    }
    if status is not None:
        obj["status"] = status
    return obj


READY = [cond("Ready", "True", "Reconciled", "database aitbc_mempool ready"),
         cond("Progressing", "False", "Reconciled"), cond("Degraded", "False", "Reconciled")]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("status", "expected", "in_message"),
    [
        (None, "Progressing", "Waiting for the operator"),
        ({}, "Progressing", "observe generation 3"),
        ({"observedGeneration": 2, "conditions": READY}, "Progressing", "observe generation 3"),
        ({"observedGeneration": 3, "conditions": READY}, "Healthy", "ready"),
        ({"observedGeneration": 4, "conditions": READY}, "Healthy", "ready"),
        (
            {"observedGeneration": 3,
             "conditions": [cond("Ready", "False", "ServerUnreachable"),
                            cond("Degraded", "True", "ServerUnreachable", "connection refused")]},
            "Degraded", "connection refused",
        ),
        (
            {"observedGeneration": 3, "conditions": [cond("Degraded", "True", "AdminLacksCreateRole")]},
            "Degraded", "AdminLacksCreateRole",
        ),
        (
            {"observedGeneration": 3, "conditions": [cond("Ready", "False", "Creating", "creating role"),
                                                     cond("Degraded", "False", "Creating")]},
            "Progressing", "creating role",
        ),
        ({"observedGeneration": 3, "conditions": [cond("Ready", "Unknown", "Pending")]}, "Progressing", "Pending"),
        ({"observedGeneration": 3}, "Progressing", "Waiting for Ready"),
    ],
    ids=["no-status", "empty-status", "generation-behind", "ready", "generation-ahead", "degraded", "degraded-reason",
         "ready-false", "ready-unknown", "no-conditions"],
)
def test_common_outcomes(kind: str, status: Obj | None, expected: str, in_message: str) -> None:
    got, message = health_check(kind)(resource(kind, status=status))
    assert got == expected, message
    assert in_message in message


def test_a_degraded_condition_from_an_old_generation_is_not_reported_as_degraded() -> None:
    """The user changed the spec (maybe to fix the problem): wait for the operator before judging."""
    status = {"observedGeneration": 2, "conditions": [cond("Degraded", "True", "ServerUnreachable")]}
    got, message = health_check("AitbcDatabase")(resource("AitbcDatabase", status=status))
    assert (got, message) == ("Progressing", "Waiting for the operator to observe generation 3")


@pytest.mark.parametrize(
    ("rollout", "expected", "in_message"),
    [
        ({"phase": "RollingNode", "targetHash": "abc1"}, "Progressing", "Rolling out the node to configuration abc1"),
        ({"phase": "RollingRpc", "message": "1 of 1 RPC pods old"}, "Progressing", "rolling out the RPC: 1 of 1"),
        ({"phase": "Stalled", "message": "node not Ready after 10m"}, "Degraded", "node not Ready after 10m"),
        ({"phase": "Stalled"}, "Degraded", "Rollout stalled"),
        ({"phase": "Idle"}, "Healthy", "ready"),
    ],
    ids=["rolling-node", "rolling-rpc", "stalled", "stalled-no-message", "idle"],
)
def test_node_rollout(rollout: Obj, expected: str, in_message: str) -> None:
    """A rollout under way is Progressing even while Ready is still True (the old pods serve); Stalled is Degraded."""
    status = {"observedGeneration": 3, "conditions": READY, "rollout": rollout}
    got, message = health_check("AitbcNode")(resource("AitbcNode", status=status))
    assert got == expected, message
    assert in_message in message


def test_node_degraded_condition_wins_over_a_rollout() -> None:
    status = {
        "observedGeneration": 3,
        "conditions": [cond("Ready", "False", "VolumePrepFailed"), cond("Degraded", "True", "VolumePrepFailed", "ro")],
        "rollout": {"phase": "RollingNode"},
    }
    assert health_check("AitbcNode")(resource("AitbcNode", status=status)) == ("Degraded", "ro")


def test_database_ignores_a_rollout_field() -> None:
    """Only AitbcNode has rollouts; the database script does not look for one."""
    status = {"observedGeneration": 3, "conditions": READY, "rollout": {"phase": "Stalled"}}
    assert health_check("AitbcDatabase")(resource("AitbcDatabase", status=status))[0] == "Healthy"


@pytest.mark.parametrize("kind", KINDS)
def test_scripts_use_only_what_argo_cd_provides(kind: str) -> None:
    """No io/os/require (Argo CD's sandbox has none) and no globals other than `obj` are written."""
    source = (HEALTH / f"aitbc.io_{kind}.lua").read_text()
    for forbidden in ("io.", "os.", "require", "dofile", "loadstring"):
        assert forbidden not in source, forbidden
    runtime = lua51.LuaRuntime(unpack_returned_tuples=False)
    before = set(runtime.globals().keys())
    runtime.globals().obj = to_lua(runtime, resource(kind))
    runtime.execute(source)
    assert set(runtime.globals().keys()) - before == {"obj"}


def test_argocd_cm_embeds_the_scripts_verbatim() -> None:
    """deploy/argocd/argocd-cm-health.yaml carries exactly the .lua files, under Argo CD's key names."""
    cm = yaml.safe_load((ROOT / manifests.ARGOCD_CM).read_text())
    assert cm["kind"] == "ConfigMap"
    assert cm["metadata"]["name"] == "argocd-cm"
    expected = {f"resource.customizations.health.aitbc.io_{k}": (HEALTH / f"aitbc.io_{k}.lua").read_text()
                for k in KINDS}
    assert cm["data"] == expected
