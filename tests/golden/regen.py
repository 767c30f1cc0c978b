"""Render and regenerate the golden files of the AitbcNode and AitbcDatabase builders.

Each ``tests/golden/node/<case>/input.yaml`` holds an AitbcNode and, optionally, the Secret of the AitbcDatabase its
``mempool.databaseRef`` names. The expected children are written next to it, one YAML file per object.
Each ``tests/golden/database/<case>/input.yaml`` holds an AitbcDatabase (with a status naming the server version): the
expected connection Secret (a fixed test password), backup CronJob, on-demand Job and restore Jobs.
``python -m tests.golden.regen`` rewrites them (``make generate`` runs it); review the diff, then commit.
``tests/unit/test_node_golden.py`` fails when a builder's output and the files differ.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from aitbc_operator.builders.database import connection_secret, connection_secret_data
from aitbc_operator.builders.database_backup import backup_cron_job, on_demand_job, restore_job
from aitbc_operator.builders.node import MempoolDatabase, config_hash, node_children, node_environment
from aitbc_operator.builders.node_jobs import JobRequest, day2_job
from aitbc_operator.models.database import AitbcDatabaseSpec, AitbcDatabaseStatus
from aitbc_operator.models.node import AitbcNodeSpec

GOLDEN_DIR = Path(__file__).parent
NODE_CASES_DIR = GOLDEN_DIR / "node"
DATABASE_CASES_DIR = GOLDEN_DIR / "database"
#: The password of the golden connection Secrets: URL-hostile on purpose (percent-encoding shows in the files).
GOLDEN_PASSWORD = "g0lden@:/?#%pass+word"
INPUT_FILE = "input.yaml"
#: The operator image of the golden cases (in the operator it comes from settings.operator_image).
OPERATOR_IMAGE = "ghcr.io/aitbc/aitbc-operator:0.1.0"
#: The node pod incarnation the golden RPC follows (in the operator, the rollout decides it).
NODE_RESTART_MARKER = "6f1c2d3e-0000-4000-8000-000000000001/0"
#: The slot of the golden day-2 Jobs.
SLOT = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def node_cases() -> list[Path]:
    """The case directories, sorted."""
    return sorted(p for p in NODE_CASES_DIR.iterdir() if (p / INPUT_FILE).is_file())


def database_cases() -> list[Path]:
    """The AitbcDatabase case directories, sorted."""
    return sorted(p for p in DATABASE_CASES_DIR.iterdir() if (p / INPUT_FILE).is_file())


def render_database_case(case_dir: Path) -> dict[str, str]:
    """File name -> expected YAML text for one AitbcDatabase case."""
    owner = yaml.safe_load((case_dir / INPUT_FILE).read_text())
    spec = AitbcDatabaseSpec.model_validate(owner["spec"])
    status = AitbcDatabaseStatus.model_validate(owner.get("status") or {})
    version = status.server_version or "15.8"
    login = spec.login_roles[0] if spec.login_roles else None
    data = connection_secret_data(spec, server_host="db.example", server_port=5432, password=GOLDEN_PASSWORD,
                                  username=login)
    secret = connection_secret(owner, spec, data)
    secret.pop("data")  # base64 is unreadable in a review: the data go to their own file, decoded
    files: dict[str, dict[str, Any]] = {"secret-connection.yaml": secret, "secret-data.yaml": data}
    ca = spec.server.ca_secret_ref is not None
    if spec.backup is not None:
        image = spec.backup.image or f"docker.io/library/postgres:{version.split('.')[0]}"
        files["cronjob-backup.yaml"] = backup_cron_job(owner, spec, image=image, server_version=version,
                                                       suspend=False, ca=ca)
        files["job-on-demand.yaml"] = on_demand_job(owner, spec, "golden-token", image=image, server_version=version,
                                                    ca=ca)
        for step in ("verify", "predump", "restore"):
            files[f"job-restore-{step}.yaml"] = restore_job(owner, spec, "golden-request", step, file="golden.dump",
                                                            image=image, server_version=version, ca=ca)
    return {name: _dump(obj) for name, obj in files.items()}


def _render(case_dir: Path) -> dict[str, str]:
    return render_database_case(case_dir) if case_dir.parent.name == "database" else render_node_case(case_dir)


def _dump(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=120)


def render_node_case(case_dir: Path) -> dict[str, str]:
    """File name -> expected YAML text for one case."""
    docs = [d for d in yaml.safe_load_all((case_dir / INPUT_FILE).read_text()) if d]
    owner = next(d for d in docs if d["kind"] == "AitbcNode")
    secrets = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "Secret"}
    spec = AitbcNodeSpec.model_validate(owner["spec"])
    mempool = None
    if spec.mempool.database_ref is not None:
        if len(secrets) != 1:
            raise ValueError(f"{case_dir}: a mempool.databaseRef case needs exactly one Secret document")
        mempool = MempoolDatabase(secret_name=next(iter(secrets)))
    digest = config_hash(spec, node_environment(spec), secrets, mempool=mempool)
    children = node_children(
        owner, spec, node_hash=digest, rpc_hash=digest, node_restart_marker=NODE_RESTART_MARKER,
        operator_image=OPERATOR_IMAGE, mempool=mempool,
    )
    files = {
        "configmap-node.yaml": children.node_configmap,
        "configmap-rpc.yaml": children.rpc_configmap,
        "statefulset-node.yaml": children.statefulset,
        "service-node.yaml": children.node_service,
        "deployment-rpc.yaml": children.deployment,
        "service-rpc.yaml": children.rpc_service,
    }
    if children.pvc is not None:
        files["pvc-data.yaml"] = children.pvc
    if children.backup_pvc is not None:
        files["pvc-backups.yaml"] = children.backup_pvc
    for request in day2_requests(spec):
        files[f"job-{request.kind}.yaml"] = day2_job(owner, spec, request, operator_image=OPERATOR_IMAGE)
    return {name: _dump(obj) for name, obj in files.items()}


def day2_requests(spec: AitbcNodeSpec) -> list[JobRequest]:
    """One Job of each kind the case's spec allows, as the decider (chainops.py) would ask for them."""
    requests = []
    if spec.backup is not None:
        requests.append(JobRequest("testnet-backup-20261201t020000z", "backup", "worker-1", SLOT, 3600,
                                   trigger="Schedule"))
    if spec.restore is not None:
        for kind, suffix in (("restore-check", "check"), ("restore", "run")):
            requests.append(JobRequest(f"testnet-restore-0a1b2c3d-{suffix}", kind, "worker-1", SLOT, 3600,  # type: ignore[arg-type]
                                       chain=spec.restore.chain, backup=spec.restore.backup))
    if spec.maintenance is not None:
        requests.append(JobRequest("testnet-maint-20261201t030000z", "maintain", "worker-1", SLOT, 900))
    return requests


def stale_files(case_dir: Path) -> list[str]:
    """Names of expected files that are missing, differ, or should not be there."""
    expected = _render(case_dir)
    present = {p.name for p in case_dir.glob("*.yaml")} - {INPUT_FILE}
    stale = [n for n, text in expected.items() if not (case_dir / n).is_file() or (case_dir / n).read_text() != text]
    return sorted(stale + sorted(present - set(expected)))


def regenerate() -> int:
    """Rewrite every case's expected files; returns how many files changed."""
    changed = 0
    for case_dir in [*node_cases(), *database_cases()]:
        expected = _render(case_dir)
        for path in case_dir.glob("*.yaml"):
            if path.name != INPUT_FILE and path.name not in expected:
                path.unlink()
                changed += 1
                print(f"removed {path}")
        for name, text in expected.items():
            path = case_dir / name
            if not path.is_file() or path.read_text() != text:
                path.write_text(text)
                changed += 1
                print(f"wrote {path}")
    return changed


if __name__ == "__main__":
    regenerate()
    sys.exit(0)
