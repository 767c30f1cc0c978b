"""kind-config.yaml and the kind make targets, checked statically (kind needs Docker, which CI does not have).

Correct by construction: the node image has the local control plane's Kubernetes minor and is pinned by digest, the
chain-data mount matches the Makefile and the AitbcNode default, and the kind overlay runs the image `make kind-load`
loads.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from localcluster.cluster import DEFAULT_K8S_VERSION, default_bin_dir

ROOT = Path(__file__).resolve().parents[2]
KIND = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
MAKEFILE = (ROOT / "Makefile").read_text()
IMAGE = re.compile(r"^kindest/node:v(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)@sha256:[0-9a-f]{64}$")


def make_var(name: str) -> str:
    """The default of `NAME ?= value` (or `NAME := value`) in the Makefile."""
    found = re.search(rf"^{name}\s*[?:]=\s*(\S+)\s*$", MAKEFILE, re.MULTILINE)
    assert found, f"{name} is not set in the Makefile"
    return found.group(1)


def minor(version: str) -> tuple[int, int]:
    """(major, minor) of v1.34.4."""
    major, minor_, *_ = version.lstrip("v").split(".")
    return int(major), int(minor_)


def test_one_control_plane_and_a_worker() -> None:
    assert (KIND["kind"], KIND["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    roles = [n["role"] for n in KIND["nodes"]]
    assert roles.count("control-plane") == 1
    assert roles.count("worker") >= 1


@pytest.mark.parametrize("index", range(len(KIND["nodes"])))
def test_node_image_is_pinned_to_the_local_control_planes_minor(index: int) -> None:
    image = KIND["nodes"][index]["image"]
    match = IMAGE.match(image)
    assert match, f"{image!r} is not kindest/node:vX.Y.Z@sha256:<digest>"
    assert (int(match["major"]), int(match["minor"])) == minor(make_var("K8S_VERSION"))


def test_one_kubernetes_version_everywhere() -> None:
    """Makefile, the build script's default and the cluster helper's default name the same version."""
    script = (ROOT / "localcluster" / "build-binaries.sh").read_text()
    script_default = re.search(r'K8S_VERSION="\$\{AITBC_K8S_VERSION:-(v[\d.]+)\}"', script)
    assert script_default
    assert make_var("K8S_VERSION") == script_default.group(1) == DEFAULT_K8S_VERSION


def _chain_data_mounts() -> list[dict[str, Any]]:
    return [m for n in KIND["nodes"] for m in n.get("extraMounts", []) if m["containerPath"] == "/var/lib/aitbc"]


def test_chain_data_host_directory_is_mounted_on_a_worker() -> None:
    mounts = _chain_data_mounts()
    assert len(mounts) == 1
    assert mounts[0]["hostPath"] == make_var("KIND_DATA_DIR"), "make kind-up creates KIND_DATA_DIR: keep them equal"
    worker = next(n for n in KIND["nodes"] if mounts[0] in n.get("extraMounts", []))
    assert worker["role"] == "worker"


def test_mount_target_is_the_aitbcnode_default_host_path() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "aitbc.io_aitbcnodes.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["storage"]["properties"]["hostPath"]["properties"]["path"]["default"] == _chain_data_mounts()[0][
        "containerPath"
    ]


def test_make_targets_use_this_config_and_cluster_name() -> None:
    assert make_var("KIND_CLUSTER") == KIND["name"]
    for target in ("kind-up", "kind-load", "kind-demo", "kind-down"):
        assert re.search(rf"^{target}:", MAKEFILE, re.MULTILINE), f"make {target} is missing"
    assert "--config kind-config.yaml" in MAKEFILE


def test_kind_overlay_runs_the_image_make_kind_load_loads() -> None:
    kubectl = default_bin_dir() / "kubectl"
    if not kubectl.exists():
        pytest.skip(f"{kubectl} not built (make cluster-bins): cannot render deploy/overlays/kind")
    rendered = subprocess.run(
        [str(kubectl), "kustomize", str(ROOT / "deploy" / "overlays" / "kind")],
        capture_output=True, text=True, check=True,
    ).stdout
    deployments = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]
    containers = [c for d in deployments for c in d["spec"]["template"]["spec"]["containers"]]
    operator = next(c for c in containers if c["name"] == "operator")
    assert operator["image"] == make_var("KIND_IMAGE")
    assert operator["imagePullPolicy"] == "Never"
