"""The operator's node policy against the real apiserver: the generated ValidatingAdmissionPolicy refuses what the
settings forbid, with the reconciler's messages; without the policy, the operator refuses the same (InvalidSpec).

The policy is the generated one (admission.py, as in deploy/ and the chart, for the settings of each case); only its
binding is narrowed to the test's namespace (the test cluster is shared).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from aitbc_operator import admission
from aitbc_operator.node_policy import PRIVILEGED_MESSAGE, NodePolicy, host_path_message, image_message
from tests.cluster.fixtures import wait_until
from tests.factories import make_node
from tests.operator_fixtures import OperatorProcess
from tests.unit.test_node_policy import CASES, host_path

GROUP, VERSION, PLURAL = "aitbc.io", "v1alpha1", "aitbcnodes"
STEP = 30.0

pytestmark = pytest.mark.timeout(180)


def create(kube: client.ApiClient, namespace: str, body: dict[str, Any], *, dry_run: bool = True) -> dict[str, Any]:
    kwargs = {"dry_run": "All"} if dry_run else {}
    out: dict[str, Any] = client.CustomObjectsApi(kube).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, **kwargs)
    return out


def refusal(call: Callable[[], object]) -> str | None:
    """None when the call is admitted, else the apiserver's message (the policy refuses with 403, reason Forbidden)."""
    try:
        call()
    except ApiException as exc:
        status, body = exc.status, exc.body
    else:
        return None
    assert status == 403, f"expected 403 Forbidden, got {status}: {body}"
    message: str = json.loads(body)["message"]
    return message


def policy_name(namespace: str) -> str:
    """The test's own copy of the (cluster-scoped) policy and binding."""
    return f"aitbc-node-policy-{namespace}"[:63].rstrip("-")


@dataclasses.dataclass
class InstalledPolicy:
    """The generated policy, bound to one namespace; `use()` renders it for other settings, waits until in force."""

    kube: client.ApiClient
    namespace: str
    version: int = 0

    @property
    def name(self) -> str:
        return policy_name(self.namespace)

    def use(self, settings: NodePolicy) -> None:
        # A probe image allowed by this version only: once a request naming it is admitted, and then one naming an
        # image no version allows is refused, this version of the policy is the one in force.
        self.version += 1
        probe = f"probe.invalid/settings:v{self.version}"
        rendered = admission.policy(self.name, dataclasses.replace(
            settings, volume_prep_images=(*settings.volume_prep_images, probe)))
        # A merge patch of the spec (lists are replaced whole): the apiserver writes the policy's status meanwhile.
        client.AdmissionregistrationV1Api(self.kube).patch_validating_admission_policy(
            self.name, {"spec": rendered["spec"]})

        def request(image: str) -> str | None:
            body = make_node(f"probe-v{self.version}", self.namespace, volumePrep={"image": image})
            return refusal(lambda: create(self.kube, self.namespace, body))

        wait_until(lambda: request(probe) is None and request("probe.invalid/never:1") is not None, STEP,
                   f"version {self.version} of the admission policy to be in force")


@pytest.fixture
def installed_policy(kube: client.ApiClient, namespace: str) -> Iterator[InstalledPolicy]:
    installed = InstalledPolicy(kube, namespace)
    api = client.AdmissionregistrationV1Api(kube)
    binding = admission.binding(installed.name)
    binding["spec"]["matchResources"] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
    api.create_validating_admission_policy(admission.policy(installed.name))
    api.create_validating_admission_policy_binding(binding)
    try:
        yield installed
    finally:
        api.delete_validating_admission_policy_binding(installed.name)
        api.delete_validating_admission_policy(installed.name)


def test_the_generated_policy_refuses_what_the_settings_forbid_with_the_reconcilers_messages(
    kube: client.ApiClient, namespace: str, installed_policy: InstalledPolicy
) -> None:
    current: NodePolicy | None = None
    for case_id, policy, overrides, expected in CASES:
        if policy != current:
            installed_policy.use(policy)
            current = policy
        body = make_node(f"n-{case_id.lower()}"[:40].rstrip("-"), namespace, **overrides)
        message = refusal(lambda body=body: create(kube, namespace, body))  # type: ignore[misc]
        if not expected:
            assert message is None, f"{case_id}: refused: {message}"
            continue
        assert message is not None, f"{case_id}: admitted, expected {expected}"
        assert "ValidatingAdmissionPolicy" in message, message
        # The apiserver reports the first refusing validation; it is one of the reconciler's messages, verbatim.
        assert message.endswith(f"denied request: {expected[0][1]}"), f"{case_id}: {message}"


def test_only_spec_changes_are_checked(
    kube: client.ApiClient, namespace: str, installed_policy: InstalledPolicy
) -> None:
    installed_policy.use(NodePolicy())
    create(kube, namespace, make_node("admitted", namespace, volumePrep={"privileged": True}), dry_run=False)
    installed_policy.use(NodePolicy(allow_privileged=False))
    api = client.CustomObjectsApi(kube)

    def patch(body: dict[str, Any]) -> object:
        return api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "admitted", body)

    # The operator's own metadata writes (finalizers, kopf's annotations) go through: the spec did not change ...
    assert refusal(lambda: patch({"metadata": {"annotations": {"aitbc.io/touched": "1"}}})) is None
    # ... a spec change is checked against today's settings.
    name = installed_policy.name
    assert refusal(lambda: patch({"spec": {"rolloutTimeout": "5m"}})) == (
        f"aitbcnodes.aitbc.io \"admitted\" is forbidden: ValidatingAdmissionPolicy '{name}' with binding '{name}'"
        f" denied request: {PRIVILEGED_MESSAGE}")


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


def test_without_the_policy_the_operator_refuses_the_same_and_makes_nothing(
    kube: client.ApiClient, namespace: str, kubeconfig: Path, tmp_path: Path
) -> None:
    env = {"AITBC_NODE_ALLOW_PRIVILEGED": "false"}
    operator = OperatorProcess(kubeconfig, tmp_path / "operator.log", namespaces=(namespace,), env=env).start()
    refused = {
        "outside": ({**host_path("/srv/chain")},
                    host_path_message("/srv/chain", ("/var/lib/aitbc",))),
        "privileged": ({"volumePrep": {"privileged": True}}, PRIVILEGED_MESSAGE),
        "foreign-image": ({"volumePrep": {"image": "ghcr.io/someone/prep:1"}}, image_message("ghcr.io/someone/prep:1")),
    }
    try:
        for name, (overrides, _) in refused.items():
            create(kube, namespace, make_node(name, namespace, **overrides), dry_run=False)
        api = client.CustomObjectsApi(kube)
        for name, (_, message) in refused.items():

            def degraded(name: str = name) -> bool:
                obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
                return condition(obj, "Degraded").get("reason") == "InvalidSpec"

            wait_until(degraded, STEP, f"AitbcNode {name} to be Degraded/InvalidSpec")
            obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            assert condition(obj, "Degraded")["message"] == f"refused by the operator's node policy: {message}"
            assert condition(obj, "Ready")["status"] == "False"
        apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
        assert apps.list_namespaced_stateful_set(namespace).items == []
        assert apps.list_namespaced_deployment(namespace).items == []
        assert [c.metadata.name for c in core.list_namespaced_config_map(namespace).items] == ["kube-root-ca.crt"]
        assert core.list_namespaced_service(namespace).items == []
    finally:
        operator.stop()
