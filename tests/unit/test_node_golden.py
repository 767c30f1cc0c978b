"""Golden files: every AitbcNode builder's output for each case in tests/golden/node/ equals the committed YAML.

After an intended change run `python -m tests.golden.regen` (or `make generate`) and review the diff.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from tests.golden.regen import INPUT_FILE, node_cases, render_node_case, stale_files

CASES = node_cases()
EXPECTED_CASES = {"hostpath", "pvc", "pvc-mempool", "least-privilege", "day2"}


def test_every_case_is_present() -> None:
    assert {c.name for c in CASES} >= EXPECTED_CASES


@pytest.mark.parametrize("case_dir", CASES, ids=[c.name for c in CASES])
def test_golden_files_are_up_to_date(case_dir: Path) -> None:
    stale = stale_files(case_dir)
    assert not stale, f"{case_dir.name}: stale golden files {stale}; run `python -m tests.golden.regen` and review"


@pytest.mark.parametrize("case_dir", CASES, ids=[c.name for c in CASES])
def test_golden_case_has_every_child(case_dir: Path) -> None:
    spec = yaml.safe_load((case_dir / INPUT_FILE).read_text().split("\n---")[0])["spec"]
    names = set(render_node_case(case_dir))
    base = {"configmap-node.yaml", "configmap-rpc.yaml", "statefulset-node.yaml", "service-node.yaml",
            "deployment-rpc.yaml", "service-rpc.yaml"}
    if "pvc" in spec["storage"]:
        base |= {"pvc-data.yaml"}
    if "backup" in spec:
        base |= {"pvc-backups.yaml", "job-backup.yaml"}
    if "restore" in spec:
        base |= {"job-restore-check.yaml", "job-restore.yaml"}
    if "maintenance" in spec:
        base |= {"job-maintain.yaml"}
    assert names == base


@pytest.mark.parametrize("case_dir", CASES, ids=[c.name for c in CASES])
def test_no_secret_value_in_any_generated_file(case_dir: Path) -> None:
    docs = [d for d in yaml.safe_load_all((case_dir / INPUT_FILE).read_text()) if d and d["kind"] == "Secret"]
    generated = "\n".join(render_node_case(case_dir).values())
    for doc in docs:
        for value in doc["data"].values():
            assert value not in generated
            assert base64.b64decode(value).decode() not in generated


def test_stale_file_is_detected(tmp_path: Path) -> None:
    """The comparison can fail: a copied case with one edited file is reported stale."""
    source = next(c for c in CASES if c.name == "pvc")
    for path in source.glob("*.yaml"):
        (tmp_path / path.name).write_text(path.read_text())
    assert stale_files(tmp_path) == []
    target = tmp_path / "deployment-rpc.yaml"
    target.write_text(target.read_text().replace("Recreate", "RollingUpdate"))
    (tmp_path / "extra.yaml").write_text("{}\n")
    assert stale_files(tmp_path) == ["deployment-rpc.yaml", "extra.yaml"]
