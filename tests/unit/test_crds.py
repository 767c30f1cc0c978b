"""The generated CRDs: up to date with the models, structural, described, with the CEL rules we promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from aitbc_operator import crdgen

ROOT = Path(__file__).resolve().parents[2]


def test_committed_crds_match_the_models(tmp_path: Path) -> None:
    """Regenerate into a temp dir and compare byte for byte with crds/."""
    result = subprocess.run(
        [sys.executable, "-m", "aitbc_operator.cli", "crds", "-o", str(tmp_path)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    assert "wrote" in result.stdout
    for info in crdgen.ALL:
        assert (tmp_path / info.filename).read_text() == (ROOT / "crds" / info.filename).read_text(), (
            f"crds/{info.filename} is stale: run `make generate`"
        )


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    for name, text in crdgen.render_all().items():
        (tmp_path / name).write_text(text)
    victim = tmp_path / crdgen.NODE.filename
    victim.write_text(victim.read_text().replace("Chain ids served", "Chain ids NOT served"))
    result = subprocess.run(
        [sys.executable, "-m", "aitbc_operator.cli", "crds", "--check", "-o", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 1
    assert "-                description: Chain ids NOT served" in result.stdout or "NOT served" in result.stdout
    assert "stale" in result.stderr


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        out += _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        out += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += _walk(schema["additionalProperties"], f"{path}{{}}")
    return out


@pytest.mark.parametrize("info", crdgen.ALL, ids=lambda i: i.kind)
def test_schema_is_structural_and_described(info: crdgen.CrdInfo) -> None:
    """The rules of a structural schema (apiextensions.k8s.io/v1), checked here before the apiserver checks them."""
    crd = crdgen.render_crd(info)
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(root):
        where = f"{info.kind}{path}"
        for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "nullable", "title", "$defs", "definitions"):
            assert forbidden not in node, f"{where}: {forbidden} in a structural schema"
        has_type = "type" in node or node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        assert has_type, f"{where}: no type"
        assert not ("properties" in node and "additionalProperties" in node), f"{where}: both properties and map"
        if path.startswith((".spec.", ".status.")) and not path.endswith(("{}", "[]")):
            assert node.get("description"), f"{where}: no description (kubectl explain would be empty)"


@pytest.mark.parametrize(
    ("info", "path", "needle"),
    [
        (crdgen.DATABASE, ".spec", "databaseName is immutable"),
        (crdgen.DATABASE, ".spec", "roleName is immutable"),
        (crdgen.DATABASE, ".spec.databaseName", "reserved by PostgreSQL"),
        (crdgen.DATABASE, ".spec.databaseName", "'pg_'"),
        (crdgen.DATABASE, ".spec.roleName", "reserved by PostgreSQL"),
        (crdgen.NODE, ".spec", "chainId must be one of chains"),
        (crdgen.NODE, ".spec.chains", "unique"),
        (crdgen.NODE, ".spec.storage", "exactly one"),
        (crdgen.NODE, ".spec.storage", "immutable"),
        (crdgen.NODE, ".spec.storage", "never shrink"),
        (crdgen.NODE, ".spec.storage.pvc", "maxSize must be at least storage.pvc.size"),
        (crdgen.NODE, ".spec.storage.pvc.autoExpand.increase", "a quantity above 0"),
    ],
)
def test_cel_rules_present(info: crdgen.CrdInfo, path: str, needle: str) -> None:
    root = crdgen.render_crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    node = dict(_walk(root))[path]
    messages = [v["message"] for v in node.get("x-kubernetes-validations", [])]
    assert any(needle in m for m in messages), messages


def test_crd_metadata() -> None:
    for info in crdgen.ALL:
        crd = yaml.safe_load((ROOT / "crds" / info.filename).read_text())
        names = crd["spec"]["names"]
        assert crd["spec"]["group"] == "aitbc.io"
        assert crd["spec"]["scope"] == "Namespaced"
        assert names["categories"] == ["aitbc"]
        assert names["shortNames"]
        version = crd["spec"]["versions"][0]
        assert version["name"] == "v1alpha1"
        assert version["subresources"] == {"status": {}}
        assert {c["name"] for c in version["additionalPrinterColumns"]} >= {"Ready", "Reason", "Age"}


def test_identifier_length_limit_in_schema() -> None:
    root = crdgen.render_crd(crdgen.DATABASE)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for field in ("databaseName", "roleName"):
        prop = root["properties"]["spec"]["properties"][field]
        assert prop["maxLength"] == 63
        assert prop["pattern"] == "^[a-z_][a-z0-9_]*$"


def test_samples_validate_against_the_models() -> None:
    from aitbc_operator.models import AitbcDatabaseSpec, AitbcNodeSpec

    models = {"AitbcDatabase": AitbcDatabaseSpec, "AitbcNode": AitbcNodeSpec}
    samples = sorted((ROOT / "crds" / "samples").glob("aitbc*.yaml"))
    kinds = []
    for path in samples:
        obj = yaml.safe_load(path.read_text())
        models[obj["kind"]].model_validate(obj["spec"])
        kinds.append(obj["kind"])
    assert kinds.count("AitbcDatabase") == 5
    assert kinds.count("AitbcNode") == 1
