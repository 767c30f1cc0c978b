"""The installed console script works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aitbc_operator import __version__

SCRIPT = Path(sys.executable).parent / "aitbc-operator"


@pytest.fixture(scope="module")
def script() -> str:
    path = shutil.which("aitbc-operator") or str(SCRIPT)
    assert Path(path).exists(), "the console script is not installed (pip install -e .)"
    return path


def run(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([script, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_version(script: str) -> None:
    result = run(script, "version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"aitbc-operator {__version__}"


def test_run_help(script: str) -> None:
    result = run(script, "run", "--help")
    assert result.returncode == 0
    assert "--namespace" in result.stdout


def test_crds_check(script: str) -> None:
    result = run(script, "crds", "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout


def test_unknown_command_fails(script: str) -> None:
    assert run(script, "frobnicate").returncode == 2


def test_run_refuses_a_bad_setting_before_starting(script: str) -> None:
    result = run(script, "run", "--standalone", env={"AITBC_WORKER_IDLE_TIMEOUT": "-1"})
    assert result.returncode == 2
    assert result.stderr.strip() == "aitbc-operator: invalid setting: AITBC_WORKER_IDLE_TIMEOUT=-1 must not be negative"


def test_run_imports_neither_sqlalchemy_nor_the_kubernetes_client() -> None:
    """What `aitbc-operator run` loads (its parser, settings, operator and handlers) leaves out the two packages that
    cost the operator process most resident memory for nothing (SQLAlchemy: 11 MiB, the official client: 20 MiB).
    An invalid setting ends cmd_run right after its imports."""
    code = ("import os, sys; from aitbc_operator import cli; assert cli.main(['run']) == 2; "
            "del os.environ['AITBC_KUBE_CONNECTIONS']; import aitbc_operator.handlers; "
            "print(sorted(m for m in ('sqlalchemy', 'kubernetes') if sys.modules.get(m) is not None))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "AITBC_KUBE_CONNECTIONS": "not a number"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_operator_process_builds_the_parser_without_loading_the_volume_tool() -> None:
    """What `aitbc-operator run` imports (its parser included) leaves SQLite and the volume commands out."""
    code = ("import sys; sys.modules.setdefault('kubernetes', None)\n"
            "import aitbc_operator.operator, aitbc_operator.handlers\n"
            "from aitbc_operator.cli import build_parser; build_parser()\n"
            "print(sorted(m for m in ('sqlite3', 'aitbc_operator.volume.commands') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
