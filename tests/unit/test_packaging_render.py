"""kustomize and Helm render the deploy/ tree and the chart; the results are checked object by object.

Needs kubectl (kustomize built in) and helm, both from `make cluster-bins` (localcluster/build-binaries.sh); no
apiserver. Under `make`, which exports AITBC_K8S_BIN, a missing binary is a failure; elsewhere the tests skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from localcluster.cluster import default_bin_dir, k8s_version

from aitbc_operator import admission, rbac
from aitbc_operator.node_policy import NodePolicy

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "aitbc-operator"
OVERLAYS = ("base", "overlays/kind", "overlays/production", "argocd/app")

Obj = dict[str, Any]


def binary(name: str) -> str:
    pinned = default_bin_dir() / name
    if pinned.exists():
        return str(pinned)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} not found in {default_bin_dir()} or on PATH: run `make cluster-bins`"
    if os.environ.get("AITBC_K8S_BIN"):
        pytest.fail(message)
    pytest.skip(message)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, cwd=ROOT)


def kustomize(path: str) -> list[Obj]:
    result = run(binary("kubectl"), "kustomize", str(ROOT / "deploy" / path))
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def helm_template_of(chart: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # No --kube-version: the cached helm is built for the pinned Kubernetes (build-binaries.sh), as users run it.
    return run(binary("helm"), "template", "aitbc-operator", str(chart), "--namespace", "aitbc-system", *args)


def helm_template(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = helm_template_of(CHART, *args)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def helm(*args: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(helm_template(*args).stdout) if d]


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def env_of(container: Obj) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def rbac_bindings(objects: list[Obj]) -> list[Obj]:
    """The RoleBindings and ClusterRoleBindings."""
    return [o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]


def roles(objects: list[Obj]) -> dict[str, list[Obj]]:
    """Role name suffix -> rules, for every (Cluster)Role."""
    return {
        o["metadata"]["name"].removeprefix("aitbc-operator-"): o["rules"]
        for o in objects if o["kind"] in ("Role", "ClusterRole")
    }


Render = Callable[[], list[Obj]]
RENDERS: dict[str, Render] = {
    **{f"kustomize:{p}": (lambda p=p: kustomize(p)) for p in OVERLAYS},  # type: ignore[misc]
    "helm:default": lambda: helm(),
    "helm:ha": lambda: helm("--set", "replicaCount=2", "--set", "podDisruptionBudget.enabled=true"),
}


# --- every rendering --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("render", RENDERS.values(), ids=RENDERS.keys())
def test_operator_deployment_is_hardened_and_probed(render: Render) -> None:
    """Probes on kopf's /healthz, non-root, read-only root, no capabilities, resources, the init image = own image."""
    deployments = [o for o in render() if o["kind"] == "Deployment"]
    assert len(deployments) == 1
    pod = deployments[0]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["serviceAccountName"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    env = env_of(container)
    assert env["AITBC_OPERATOR_IMAGE"] == container["image"], "the init containers run the operator's own image"
    assert env["AITBC_HEALTH_PORT"] == "8080"
    assert env["AITBC_METRICS_PORT"] == "9090"
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}, "the leader Lease's namespace"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}, "the leader Lease's holder identity"
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}
    assert container["args"][0] == "run"


@pytest.mark.parametrize("render", RENDERS.values(), ids=RENDERS.keys())
def test_rbac_is_exactly_rbac_py(render: Render) -> None:
    """kustomize and Helm both grant exactly the rules of operator/aitbc_operator/rbac.py, and bind every role."""
    objects = render()
    expected = {role.suffix: [r.to_manifest() for r in role.rules] for role in rbac.ROLES}
    assert roles(objects) == expected
    bound = {o["roleRef"]["name"].removeprefix("aitbc-operator-") for o in rbac_bindings(objects)}
    assert bound == set(expected)
    sa = one(objects, "ServiceAccount")
    for binding in rbac_bindings(objects):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "aitbc-system"}
        ]


@pytest.mark.parametrize("render", RENDERS.values(), ids=RENDERS.keys())
def test_namespaced_objects_are_in_the_operator_namespace(render: Render) -> None:
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                      "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    for obj in render():
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"].get("namespace") == "aitbc-system", (obj["kind"], obj["metadata"]["name"])


@pytest.mark.parametrize("render", RENDERS.values(), ids=RENDERS.keys())
def test_node_policy_admission_and_operator_get_the_same_settings(render: Render) -> None:
    """The generated policy with the default settings, bound everywhere; the operator reads the same settings."""
    objects = render()
    policy = one(objects, "ValidatingAdmissionPolicy")
    binding = one(objects, "ValidatingAdmissionPolicyBinding")
    settings = one(objects, "ConfigMap", policy["metadata"]["name"])
    # kustomize's built-in schema predates admissionregistration.k8s.io/v1 and namespaces the two cluster-scoped
    # objects too; the apiserver drops it (test_deploy_apiserver.py applies them). Helm leaves it out.
    assert policy["metadata"].get("namespace") in (None, "aitbc-system")
    assert policy["spec"] == admission.policy_spec()
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    assert settings["data"] == NodePolicy().as_env()
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": settings["metadata"]["name"]}}]


CHANGED = NodePolicy(host_path_prefixes=("/srv/chains", "/data/aitbc"), allow_privileged=False,
                     volume_prep_images=("registry.example.org/aitbc/aitbc-operator:0.1.0",))


def test_kustomize_overlay_changing_the_settings_changes_operator_and_policy_alike(tmp_path: Path) -> None:
    """What the base's comment tells an overlay to do: patch the ConfigMap, repeat the node-policy replacements."""
    base = yaml.safe_load((ROOT / "deploy" / "base" / "kustomization.yaml").read_text())
    repeated = [r for r in base["replacements"] if r["source"]["name"] == "aitbc-operator-node-policy"]
    assert len(repeated) == 3
    overlay = {
        "resources": [os.path.relpath(ROOT / "deploy" / "base", tmp_path)],
        "patches": [{"target": {"kind": "ConfigMap", "name": "aitbc-operator-node-policy"},
                     "patch": yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                                              "metadata": {"name": "aitbc-operator-node-policy"},
                                              "data": CHANGED.as_env()})}],
        "replacements": repeated,
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    result = run(binary("kubectl"), "kustomize", str(tmp_path))
    assert result.returncode == 0, result.stderr
    objects = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert one(objects, "ValidatingAdmissionPolicy")["spec"] == admission.policy_spec(CHANGED)
    assert NodePolicy.from_env(one(objects, "ConfigMap", "aitbc-operator-node-policy")["data"]) == CHANGED


# --- kustomize overlays -----------------------------------------------------------------------------------------------


def test_kustomize_base_includes_the_crds() -> None:
    crds = {o["metadata"]["name"] for o in kustomize("base") if o["kind"] == "CustomResourceDefinition"}
    assert crds == {"aitbcdatabases.aitbc.io", "aitbcnodes.aitbc.io"}


def test_kind_overlay_uses_the_locally_loaded_image() -> None:
    objects = kustomize("overlays/kind")
    deployment = one(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "aitbc-operator:dev"
    assert container["imagePullPolicy"] == "Never"
    assert env_of(container)["AITBC_OPERATOR_IMAGE"] == "aitbc-operator:dev"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not [o for o in objects if o["kind"] == "PodDisruptionBudget"]


def test_production_overlay_is_highly_available() -> None:
    objects = kustomize("overlays/production")
    deployment = one(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    pod_labels = spec["template"]["metadata"]["labels"]
    (term,) = spec["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (container,) = spec["template"]["spec"]["containers"]
    assert container["image"].startswith("ghcr.io/aitbc/aitbc-operator:")
    assert env_of(container)["AITBC_OPERATOR_IMAGE"] == container["image"]


def test_metrics_service_selects_the_operator_pods() -> None:
    objects = kustomize("overlays/production")
    service = one(objects, "Service", "aitbc-operator-metrics")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]


def test_argocd_app_orders_namespace_and_crds_first() -> None:
    waves = {
        (o["kind"], o["metadata"]["name"]): int(o["metadata"].get("annotations", {}).get(
            "argocd.argoproj.io/sync-wave", "0"))
        for o in kustomize("argocd/app")
    }
    assert waves[("Namespace", "aitbc-system")] < waves[("CustomResourceDefinition", "aitbcnodes.aitbc.io")]
    later = [w for (kind, _), w in waves.items() if kind not in ("Namespace", "CustomResourceDefinition")]
    assert later
    assert min(later) > waves[("CustomResourceDefinition", "aitbcdatabases.aitbc.io")]


def test_argocd_applications() -> None:
    apps = {o["metadata"]["name"]: o for o in kustomize("argocd")}
    operator, resources = apps["aitbc-operator"], apps["aitbc-resources"]
    assert (ROOT / operator["spec"]["source"]["path"] / "kustomization.yaml").exists()
    assert (ROOT / resources["spec"]["source"]["path"] / "kustomization.yaml").exists()
    wave = "argocd.argoproj.io/sync-wave"
    assert int(operator["metadata"]["annotations"][wave]) < int(resources["metadata"]["annotations"][wave])
    assert "SkipDryRunOnMissingResource=true" in resources["spec"]["syncPolicy"]["syncOptions"]


def test_samples_render_into_their_namespace() -> None:
    objects = kustomize("samples")
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == ["AitbcDatabase"] * 5 + ["AitbcNode", "Namespace"]
    assert all(o["metadata"].get("namespace") == "aitbc" for o in objects if o["kind"] != "Namespace")


# --- Helm -------------------------------------------------------------------------------------------------------------


def test_helm_renders_for_the_pinned_kubernetes_without_flags(tmp_path: Path) -> None:
    """`helm template` works offline with no --kube-version and reports the pinned Kubernetes (not v1.20)."""
    result = run(binary("helm"), "template", str(CHART), "--show-only", "templates/serviceaccount.yaml")
    assert result.returncode == 0, result.stderr
    probe = tmp_path / "probe"
    (probe / "templates").mkdir(parents=True)
    (probe / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (probe / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\n"
        "data: {kube: '{{ .Capabilities.KubeVersion.Major }}.{{ .Capabilities.KubeVersion.Minor }}'}\n"
    )
    rendered = run(binary("helm"), "template", str(probe))
    assert rendered.returncode == 0, rendered.stderr
    major, minor = k8s_version().lstrip("v").split(".")[:2]
    assert yaml.safe_load(rendered.stdout)["data"]["kube"] == f"{major}.{minor}"


def test_helm_lint() -> None:
    result = run(binary("helm"), "lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


def test_helm_defaults_match_the_kustomize_base() -> None:
    """Same kinds of objects, same names, same container settings (apart from labels and the image tag source)."""
    chart, base = helm(), [o for o in kustomize("base") if o["kind"] not in ("Namespace", "CustomResourceDefinition")]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in chart) == sorted(
        (o["kind"], o["metadata"]["name"]) for o in base
    )
    (helm_c,) = one(chart, "Deployment")["spec"]["template"]["spec"]["containers"]
    (kust_c,) = one(base, "Deployment")["spec"]["template"]["spec"]["containers"]
    for key in ("ports", "livenessProbe", "readinessProbe", "securityContext", "resources", "image", "volumeMounts"):
        assert helm_c[key] == kust_c[key], key
    assert env_of(kust_c).items() <= env_of(helm_c).items()


def test_helm_watch_namespaces_limit_the_application_role() -> None:
    objects = helm("--set", "watchNamespaces={team-a,team-b}")
    app_bindings = [o for o in rbac_bindings(objects) if o["roleRef"]["name"] == "aitbc-operator-application"]
    assert sorted((o["kind"], o["metadata"]["namespace"]) for o in app_bindings) == [
        ("RoleBinding", "team-a"), ("RoleBinding", "team-b")
    ]
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert env_of(container)["AITBC_WATCH_NAMESPACES"] == "team-a,team-b"


def test_helm_values_reach_the_deployment() -> None:
    digest = "sha256:" + "ab" * 32
    objects = helm(
        "--set", f"image.digest={digest}", "--set", "driftInterval=60", "--set", "healthPort=8181",
        "--set", "metrics.port=9191", "--set", "replicaCount=3", "--set", "leaderElection.enabled=false",
        "--set", "verbose=true",
    )
    deployment = one(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    assert container["image"] == env["AITBC_OPERATOR_IMAGE"] == f"ghcr.io/aitbc/aitbc-operator@{digest}"
    assert (env["AITBC_DRIFT_INTERVAL"], env["AITBC_HEALTH_PORT"], env["AITBC_METRICS_PORT"]) == ("60", "8181", "9191")
    assert env["AITBC_LEADER_ELECTION"] == "false"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"health": 8181, "metrics": 9191}
    assert deployment["spec"]["replicas"] == 3
    assert container["args"] == ["run", "--verbose"]
    assert one(objects, "Service")["spec"]["ports"][0]["port"] == 9191


def test_helm_metrics_toggles() -> None:
    assert not [o for o in helm("--set", "metrics.service.enabled=false") if o["kind"] == "Service"]
    monitor = one(helm("--set", "metrics.serviceMonitor.enabled=true"), "ServiceMonitor")
    service = one(helm(), "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    refused = helm_template("--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false",
                            check=False)
    assert refused.returncode != 0
    assert "needs metrics.service.enabled" in refused.stderr


def test_helm_pdb_selects_the_pods() -> None:
    objects = helm("--set", "replicaCount=2", "--set", "podDisruptionBudget.enabled=true")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_helm_node_policy_values_reach_the_operator_and_the_policy() -> None:
    args = ("--set", "nodePolicy.hostPathPrefixes={/srv/chains,/data/aitbc}",
            "--set", "nodePolicy.allowPrivileged=false",
            "--set", "nodePolicy.volumePrepImages={registry.example.org/aitbc/aitbc-operator:0.1.0}")
    objects = helm(*args)
    assert NodePolicy.from_env(one(objects, "ConfigMap", "aitbc-operator-node-policy")["data"]) == CHANGED
    assert one(objects, "ValidatingAdmissionPolicy")["spec"] == admission.policy_spec(CHANGED)
    annotation = "checksum/node-policy"
    restarted = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"][annotation]
    assert restarted != one(helm(), "Deployment")["spec"]["template"]["metadata"]["annotations"][annotation]
    without = helm("--set", "nodePolicy.admissionPolicy.enabled=false")
    assert not [o for o in without if o["kind"].startswith("ValidatingAdmissionPolicy")]
    assert one(without, "ConfigMap", "aitbc-operator-node-policy")  # the operator still reads it


@pytest.mark.parametrize(
    ("flag", "complaint"),
    [
        ("image.tagg=1", "additional properties 'tagg' not allowed"),
        ("replicaCount=0", "/replicaCount"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("watchNamespaces={Bad_Name}", "/watchNamespaces/0"),
        ("image.digest=sha256:short", "/image/digest"),
        ("healthPort=70000", "/healthPort"),
        ("nodePolicy.hostPathPrefixes={relative/dir}", "/nodePolicy/hostPathPrefixes/0"),
        ("nodePolicy.hostPathPrefixes={/it's}", "/nodePolicy/hostPathPrefixes/0"),
        ("nodePolicy.volumePrepImages={a b}", "/nodePolicy/volumePrepImages/0"),
    ],
)
def test_helm_schema_rejects_bad_values(flag: str, complaint: str) -> None:
    result = helm_template("--set", flag, check=False)
    assert result.returncode != 0
    assert complaint in result.stderr


NOTES_PROBE = """apiVersion: v1
kind: ConfigMap
metadata:
  name: notes
data:
  notes: {{ tpl (.Files.Get "notes.src") . | toJson }}
"""


def test_helm_notes_render(tmp_path: Path) -> None:
    """NOTES.txt renders and tells what was installed. `helm template` skips NOTES.txt and `helm install --dry-run`
    needs a cluster, so in a copy of the chart the notes are rendered (tpl) into a ConfigMap."""
    chart = tmp_path / "aitbc-operator"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "NOTES.txt").rename(chart / "notes.src")
    (chart / "templates" / "notes-probe.yaml").write_text(NOTES_PROBE)
    result = helm_template_of(chart, "--show-only", "templates/notes-probe.yaml", "--set", "watchNamespaces={team-a}")
    assert result.returncode == 0, result.stderr
    notes = yaml.safe_load(result.stdout)["data"]["notes"]
    assert "watching team-a" in notes
    assert "service aitbc-operator-metrics, port 9090" in notes
    assert "{{" not in notes
