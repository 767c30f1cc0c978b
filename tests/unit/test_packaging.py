"""Packaging checked statically: the Dockerfile, the generated files (RBAC, chart CRDs, Argo CD health), RBAC data,
and the chart's values.schema.json against values.yaml. Rendering with kustomize and Helm: test_packaging_render.py.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from aitbc_operator import crdgen, manifests, rbac
from aitbc_operator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "aitbc-operator"

# --- Dockerfile -------------------------------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, line continuations joined."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, args = line.strip().partition(" ")
            out.append((instruction.upper(), args.strip()))
    return out


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (a stage starts at FROM)."""
    out: list[list[tuple[str, str]]] = []
    for ins in instructions:
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions((ROOT / "Dockerfile").read_text())


def test_dockerfile_base_is_pinned(dockerfile: list[tuple[str, str]]) -> None:
    """Every FROM resolves to an exact tag (major.minor.patch and a distribution) or a digest, never `latest`."""
    args = dict(a.split("=", 1) for i, a in dockerfile if i == "ARG" and "=" in a)
    froms = [a.split()[0] for i, a in dockerfile if i == "FROM"]
    assert froms
    for ref in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ref)
        assert "@sha256:" in image or re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+-[\w.-]+", image), image
        assert not image.endswith(":latest")


def test_dockerfile_is_multi_stage_and_the_final_stage_has_no_build_tools(dockerfile: list[tuple[str, str]]) -> None:
    parts = stages(dockerfile)
    assert len(parts) >= 2, "multi-stage: build the virtualenv in one stage, copy it into a clean one"
    final = parts[-1]
    assert any(i == "COPY" and "--from=" in a for i, a in final), "the final stage copies the built virtualenv"
    final_runs = " ".join(a for i, a in final if i == "RUN")
    for tool in ("apt-get", "apt ", "gcc", "build-essential", "make ", "pip install", "e2fsprogs"):
        assert tool not in final_runs, f"{tool!r} in the final stage"


def test_dockerfile_runs_as_a_numeric_non_root_user(dockerfile: list[tuple[str, str]]) -> None:
    users = [a for i, a in stages(dockerfile)[-1] if i == "USER"]
    assert users, "the final stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), "a numeric uid, so Kubernetes can check runAsNonRoot"
    assert int(uid) != 0
    assert not gid or int(gid) != 0


def test_dockerfile_entrypoint_is_the_console_script(dockerfile: list[tuple[str, str]]) -> None:
    """`aitbc-operator run` by default; the init container's `command: [aitbc-operator, volume, prepare]` works too."""
    final = stages(dockerfile)[-1]
    entrypoint = [json.loads(a) for i, a in final if i == "ENTRYPOINT"]
    cmd = [json.loads(a) for i, a in final if i == "CMD"]
    assert entrypoint, "exec-form ENTRYPOINT"
    assert cmd, "exec-form CMD"
    assert entrypoint[-1] + cmd[-1] == ["aitbc-operator", "run"]
    path = next(a for i, a in final if i == "ENV" and "PATH=" in a)
    assert "/opt/venv/bin" in path, "the console script is on PATH (the init container calls it by name)"


def _dockerignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(rel, pat) or rel.startswith(pat + "/"):
            ignored = not negate
    return ignored


def test_dockerfile_copies_exist_and_are_in_the_build_context(dockerfile: list[tuple[str, str]]) -> None:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    copies = [shlex.split(a) for i, a in dockerfile if i == "COPY" and "--from=" not in a]
    assert copies
    for args in copies:
        for src in args[:-1]:
            path = ROOT / src
            assert path.exists(), f"COPY {src}: no such file"
            assert not _dockerignored(src.rstrip("/"), patterns), f"COPY {src}: excluded by .dockerignore"
    # What the package build needs is in the context; what it must not see is not.
    assert not _dockerignored("operator/aitbc_operator/cli.py", patterns)
    for private in (".venv/bin/python", ".git/config", "tests/conftest.py", ".demo/kubeconfig"):
        assert _dockerignored(private, patterns), private


# --- generated files --------------------------------------------------------------------------------------------------


def test_generated_packaging_files_are_up_to_date() -> None:
    """`aitbc-operator manifests --check` (what `make lint` runs): RBAC, chart CRDs, argocd-cm health snippet."""
    result = subprocess.run(
        [sys.executable, "-m", "aitbc_operator.cli", "manifests", "--check", "--root", str(ROOT)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def test_manifests_check_reports_a_stale_file(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "deploy" / "argocd" / "health", tmp_path / manifests.HEALTH_DIR)
    write = subprocess.run(
        [sys.executable, "-m", "aitbc_operator.cli", "manifests", "--root", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert write.returncode == 0, write.stderr
    assert (tmp_path / "deploy/base/rbac.yaml").read_text() == (ROOT / "deploy/base/rbac.yaml").read_text()
    rules = tmp_path / "charts/aitbc-operator/templates/rbac-roles.yaml"
    rules.write_text(rules.read_text().replace("verbs: [get, list, watch]", "verbs: ['*']", 1))
    check = subprocess.run(
        [sys.executable, "-m", "aitbc_operator.cli", "manifests", "--check", "--root", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert check.returncode == 1
    assert "+    verbs: [get, list, watch]" in check.stdout
    assert "1 generated file(s)" in check.stderr


def test_chart_crds_are_the_crds() -> None:
    """charts/aitbc-operator/crds/ holds exactly the CRDs of crds/, byte for byte."""
    chart_crds = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert chart_crds == sorted(info.filename for info in crdgen.ALL)
    for name in chart_crds:
        assert (CHART / "crds" / name).read_text() == (ROOT / "crds" / name).read_text(), name


# --- RBAC -------------------------------------------------------------------------------------------------------------

KNOWN_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


def test_rbac_is_least_privilege() -> None:
    seen: set[tuple[str, str, str]] = set()
    for role in rbac.ROLES:
        in_role: set[tuple[str, str, str, str]] = set()
        for rule in role.rules:
            fields = (*rule.api_groups, *rule.resources, *rule.verbs, *rule.resource_names)
            assert "*" not in "".join(fields), f"wildcard in {rule}"
            assert set(rule.verbs) <= KNOWN_VERBS, rule.verbs
            assert len(rule.why) > 20, f"no reason given for {rule}"
            for group in rule.api_groups:
                for res in rule.resources:
                    for verb in rule.verbs:
                        for name in rule.resource_names or ("",):
                            key = (group, res, verb, name)
                            assert key not in in_role, f"{key} granted twice in {role.suffix}"
                            in_role.add(key)
                            seen.add((group, res, verb))
    granted = {(g, r) for g, r, _ in seen}
    # Never: pods deleted (rollouts patch templates), Secrets deleted (Retain), nodes or RBAC touched.
    assert ("", "pods", "delete") not in seen
    assert ("", "secrets", "delete") not in seen
    assert not any(g == "rbac.authorization.k8s.io" for g, _ in granted)
    assert ("", "nodes") not in granted


def test_cluster_wide_roles_are_read_only_apart_from_events() -> None:
    """What is always granted in every namespace (framework, claims) writes nothing but Events."""
    for role in (rbac.FRAMEWORK, rbac.CLAIMS):
        for rule in role.rules:
            if rule.resources != ("events",):
                assert set(rule.verbs) <= {"get", "list", "watch"}, (role.suffix, rule)


def test_application_role_is_namespaced_only() -> None:
    """The application ClusterRole may be bound per namespace (RoleBinding): it must name no cluster-scoped resource."""
    cluster_scoped = {"namespaces", "nodes", "customresourcedefinitions", "persistentvolumes", "clusterroles"}
    for rule in rbac.APPLICATION.rules:
        assert not cluster_scoped.intersection(rule.resources), rule


def test_leader_lease_matches_the_settings() -> None:
    """The Role limits get/update to the Lease name the operator uses by default."""
    assert Settings().leader_election_name == rbac.LEADER_LEASE
    named = [r for r in rbac.LEADER_ELECTION.rules if r.resource_names]
    assert named
    assert all(r.resource_names == (rbac.LEADER_LEASE,) for r in named)
    assert [r.verbs for r in rbac.LEADER_ELECTION.rules if not r.resource_names] == [("create",)]


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_kustomize_rbac_renders_the_rules_with_their_reasons() -> None:
    text = (ROOT / "deploy" / "base" / "rbac.yaml").read_text()
    objects = docs(ROOT / "deploy" / "base" / "rbac.yaml")
    for role in rbac.ROLES:
        name = f"aitbc-operator-{role.suffix}"
        manifest = next(d for d in objects if d["kind"] == role.kind and d["metadata"]["name"] == name)
        assert manifest["rules"] == [r.to_manifest() for r in role.rules]
        for rule in role.rules:
            assert f"# {' '.join(rule.why.split()[:6])}" in text, "each rule carries its reason as a comment"
    bindings = [d for d in objects if d["kind"].endswith("Binding")]
    assert {b["roleRef"]["name"] for b in bindings} == {f"aitbc-operator-{r.suffix}" for r in rbac.ROLES}
    for binding in bindings:
        subject = {"kind": "ServiceAccount", "name": "aitbc-operator", "namespace": "aitbc-system"}
        assert binding["subjects"] == [subject]


# --- the chart's values and their schema ------------------------------------------------------------------------------


JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict, "array": list}


def check_value(value: Any, node: dict[str, Any], where: str) -> int:
    """Check one value of values.yaml against its schema node, recursing into declared properties; returns the number
    of values checked. A free-form object (e.g. securityContext) or map is checked as a whole."""
    types = node["type"] if isinstance(node["type"], list) else [node["type"]]
    assert any(
        isinstance(value, JSON_TYPES[t]) and not (t in ("integer", "number") and isinstance(value, bool)) for t in types
    ), f"{where}={value!r} is not {types}"
    if "enum" in node:
        assert value in node["enum"], where
    if "pattern" in node and isinstance(value, str):
        assert re.search(node["pattern"], value), f"{where}={value!r} does not match {node['pattern']}"
    checked = 1
    if isinstance(value, dict) and "properties" in node:
        for key, sub in value.items():
            assert key in node["properties"], f"{where}.{key} has no schema"
            checked += check_value(sub, node["properties"][key], f"{where}.{key}")
    elif isinstance(value, dict) and isinstance(node.get("additionalProperties"), dict):
        for key, sub in value.items():
            checked += check_value(sub, node["additionalProperties"], f"{where}.{key}")
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, sub in enumerate(value):
            checked += check_value(sub, node["items"], f"{where}[{i}]")
    return checked


def test_every_value_has_a_matching_schema() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema.get("additionalProperties") is False, "unknown top-level values are rejected"
    assert check_value(values, schema, "values") > 40


def test_the_schema_check_can_fail() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    with pytest.raises(AssertionError, match="has no schema"):
        check_value({"image": {"tagg": "1"}}, schema, "values")
    with pytest.raises(AssertionError, match="is not"):
        check_value({"replicaCount": "2"}, schema, "values")
    with pytest.raises(AssertionError, match="does not match"):
        check_value({"watchNamespaces": ["Not_A_Namespace"]}, schema, "values")


def test_every_schema_property_is_described_and_closed() -> None:
    """Each declared property has a description; every object with declared properties rejects unknown keys."""
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(node: dict[str, Any], where: str) -> None:
        if "properties" in node:
            assert node.get("additionalProperties") is False, f"{where}: unknown keys not rejected"
            for name, sub in node["properties"].items():
                assert sub.get("description"), f"{where}.{name}: no description"
                walk(sub, f"{where}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{where}[]")

    walk(schema, "values")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(schema["properties"]) == set(values), "values.yaml and values.schema.json declare the same top keys"
