"""Golden files of the AitbcDatabase builders (tests/golden/database/): the connection Secret with templates, the
backup CronJob, the on-demand Job and the restore Jobs. After an intended change: `python -m tests.golden.regen`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.golden.regen import GOLDEN_PASSWORD, INPUT_FILE, database_cases, render_database_case, stale_files

CASES = database_cases()


def test_the_cases_are_present() -> None:
    assert {c.name for c in CASES} >= {"backup", "alternating-templates"}


@pytest.mark.parametrize("case_dir", CASES, ids=[c.name for c in CASES])
def test_golden_files_are_up_to_date(case_dir: Path) -> None:
    stale = stale_files(case_dir)
    assert not stale, f"{case_dir.name}: stale golden files {stale}; run `python -m tests.golden.regen` and review"


@pytest.mark.parametrize("case_dir", CASES, ids=[c.name for c in CASES])
def test_the_jobs_never_name_the_admin_secret_nor_carry_a_password(case_dir: Path) -> None:
    rendered = render_database_case(case_dir)
    owner = yaml.safe_load((case_dir / INPUT_FILE).read_text())
    admin = owner["spec"]["server"]["adminSecretRef"]["name"]
    for name, text in rendered.items():
        if name.startswith(("job-", "cronjob-")):
            assert admin not in text, f"{name} names the admin Secret"
            assert GOLDEN_PASSWORD not in text, f"{name} carries the password"
            job = yaml.safe_load(text)
            spec = job["spec"]["jobTemplate"]["spec"] if job["kind"] == "CronJob" else job["spec"]
            env = {e["name"]: e for e in spec["template"]["spec"]["containers"][0]["env"]}
            assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": f"{owner['metadata']['name']}-db",
                                                                       "key": "password"}


def test_a_changed_golden_file_is_detected(tmp_path: Path) -> None:
    case = tmp_path / "database" / "backup"
    case.mkdir(parents=True)
    for path in next(c for c in CASES if c.name == "backup").glob("*.yaml"):
        (case / path.name).write_text(path.read_text())
    assert stale_files(case) == []
    cron = case / "cronjob-backup.yaml"
    cron.write_text(cron.read_text().replace("Forbid", "Allow"))
    assert stale_files(case) == ["cronjob-backup.yaml"]
