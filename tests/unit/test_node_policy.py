"""The operator's node policy (node_policy.py): its settings and its decisions, and the reconciler's InvalidSpec.

The same cases run against the real apiserver's admission in tests/integration/test_node_policy.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from aitbc_operator import errors, settings
from aitbc_operator.k8s.client import Kube
from aitbc_operator.k8s.resources import Kind
from aitbc_operator.models.node import AitbcNodeSpec
from aitbc_operator.node_policy import (
    ENV_ALLOW_PRIVILEGED,
    ENV_HOSTPATH_PREFIXES,
    ENV_VOLUME_PREP_IMAGES,
    PRIVILEGED_MESSAGE,
    NodePolicy,
    host_path_message,
    image_message,
    violations,
)
from aitbc_operator.reconcilers.node import reconcile_node
from tests.factories import DELETE, make_node, node_spec

PREP_IMAGE = "registry.example.org/aitbc/aitbc-operator:0.1.0"


def host_path(path: str) -> dict[str, Any]:
    return {"storage": {"pvc": DELETE, "hostPath": {"path": path, "nodeName": "worker-1"}}}


#: (id, policy, spec overrides, [(field, message)]): shared with the admission test.
CASES: list[tuple[str, NodePolicy, dict[str, Any], list[tuple[str, str]]]] = [
    ("pvc-needs-nothing", NodePolicy(host_path_prefixes=()), {}, []),
    ("default-prefix", NodePolicy(), host_path("/var/lib/aitbc"), []),
    ("under-the-prefix", NodePolicy(), host_path("/var/lib/aitbc/chain-a"), []),
    ("sibling-of-the-prefix", NodePolicy(), host_path("/var/lib/aitbc-other"),
     [("spec.storage.hostPath.path", host_path_message("/var/lib/aitbc-other", ("/var/lib/aitbc",)))]),
    ("outside-the-prefix", NodePolicy(), host_path("/srv/chain"),
     [("spec.storage.hostPath.path", host_path_message("/srv/chain", ("/var/lib/aitbc",)))]),
    ("second-prefix", NodePolicy(host_path_prefixes=("/var/lib/aitbc", "/srv")), host_path("/srv/chain"), []),
    ("root-prefix-allows-anything-not-forbidden", NodePolicy(host_path_prefixes=("/",)), host_path("/home/a"), []),
    ("hostPath-disabled", NodePolicy(host_path_prefixes=()), host_path("/var/lib/aitbc"),
     [("spec.storage.hostPath.path", host_path_message("/var/lib/aitbc", ()))]),
    ("privileged-allowed-by-default", NodePolicy(), {"volumePrep": {"privileged": True}}, []),
    ("privileged-refused", NodePolicy(allow_privileged=False), {"volumePrep": {"privileged": True}},
     [("spec.volumePrep.privileged", PRIVILEGED_MESSAGE)]),
    ("least-privilege-always-allowed", NodePolicy(allow_privileged=False), {"volumePrep": {"privileged": False}}, []),
    ("image-not-listed", NodePolicy(), {"volumePrep": {"image": "ghcr.io/someone/prep:1"}},
     [("spec.volumePrep.image", image_message("ghcr.io/someone/prep:1"))]),
    ("image-listed", NodePolicy(volume_prep_images=(PREP_IMAGE,)), {"volumePrep": {"image": PREP_IMAGE}}, []),
    ("all-at-once", NodePolicy(allow_privileged=False),
     {**host_path("/opt/x"), "volumePrep": {"privileged": True, "image": "ghcr.io/someone/prep:1"}},
     [("spec.storage.hostPath.path", host_path_message("/opt/x", ("/var/lib/aitbc",))),
      ("spec.volumePrep.privileged", PRIVILEGED_MESSAGE),
      ("spec.volumePrep.image", image_message("ghcr.io/someone/prep:1"))]),
]


@pytest.mark.parametrize(("policy", "overrides", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_violations(policy: NodePolicy, overrides: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    spec = AitbcNodeSpec.model_validate(node_spec(**overrides))
    assert [(v.field, v.message) for v in violations(spec, policy)] == expected


def test_defaults_allow_the_design_and_nothing_more() -> None:
    policy = NodePolicy()
    assert policy.host_path_prefixes == ("/var/lib/aitbc",)
    assert policy.allow_privileged is True  # DESIGN.md: privileged stays allowed by the default settings
    assert policy.volume_prep_images == ()


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_HOSTPATH_PREFIXES, " /srv/chains , /data/aitbc ,")
    monkeypatch.setenv(ENV_ALLOW_PRIVILEGED, "False")
    monkeypatch.setenv(ENV_VOLUME_PREP_IMAGES, PREP_IMAGE)
    assert settings.load().node_policy == NodePolicy(("/srv/chains", "/data/aitbc"), False, (PREP_IMAGE,))
    monkeypatch.setenv(ENV_HOSTPATH_PREFIXES, "")
    assert settings.load().node_policy.host_path_prefixes == ()  # empty: no hostPath at all (not the default)


def test_as_env_round_trips() -> None:
    policy = NodePolicy(("/srv/a", "/srv/b"), False, (PREP_IMAGE,))
    assert NodePolicy.from_env(policy.as_env()) == policy


@pytest.mark.parametrize(("name", "raw", "complaint"), [
    (ENV_ALLOW_PRIVILEGED, "maybe", "is not a boolean"),
    (ENV_HOSTPATH_PREFIXES, "var/lib/aitbc", "normalised path"),
    (ENV_HOSTPATH_PREFIXES, "/var/lib/../etc", "normalised path"),
    (ENV_VOLUME_PREP_IMAGES, "Not An Image", "image reference"),
])
def test_a_bad_setting_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, name: str, raw: str,
                                          complaint: str) -> None:
    monkeypatch.setenv(name, raw)
    with pytest.raises(ValueError, match=f"{name}.*{complaint}"):
        settings.load()


class StatusOnlyKube:
    """Records status patches; any other call fails the test (a refused spec reads and writes nothing else)."""

    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []

    async def patch_status(self, kind: Kind, obj: Mapping[str, Any], status: dict[str, Any]) -> bool:
        self.statuses.append(status)
        return True

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected Kube.{name} for a spec the policy refuses")


def test_the_reconciler_refuses_before_any_read_and_names_field_and_rule() -> None:
    body = make_node("aitbc1", "chain", **host_path("/srv/chain"), volumePrep={"privileged": True})
    body["metadata"].update(uid="u-1", generation=2)
    kube = StatusOnlyKube()
    with pytest.raises(errors.InvalidSpec) as info:
        asyncio.run(reconcile_node(cast(Kube, kube), body, operator_image="img", now=datetime(2026, 1, 1, tzinfo=UTC),
                                   policy=NodePolicy(allow_privileged=False)))
    expected = (f"refused by the operator's node policy: {host_path_message('/srv/chain', ('/var/lib/aitbc',))};"
                f" {PRIVILEGED_MESSAGE}")
    assert info.value.message == expected
    (status,) = kube.statuses
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"], degraded["message"]) == ("True", "InvalidSpec", expected)
