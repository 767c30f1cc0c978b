"""The AITBC_* environment reaches kopf's settings (operator.configure)."""

from __future__ import annotations

import logging

import kopf
import pytest

from aitbc_operator import settings as settings_mod
from aitbc_operator.operator import configure


def test_defaults_free_worker_slots_quickly_and_post_only_kopf_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AITBC_MAX_WORKERS", "AITBC_WORKER_IDLE_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    settings = kopf.OperatorSettings()
    configure(settings, settings_mod.load())
    assert settings.queueing.worker_limit == 20
    assert settings.queueing.idle_timeout == 0.5  # kopf's 5 s would cap 20 workers at ~4 objects/s
    assert settings.posting.enabled
    assert settings.posting.level == logging.WARNING


def test_worker_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AITBC_MAX_WORKERS", "50")
    monkeypatch.setenv("AITBC_WORKER_IDLE_TIMEOUT", "2.5")
    settings = kopf.OperatorSettings()
    configure(settings, settings_mod.load())
    assert settings.queueing.worker_limit == 50
    assert settings.queueing.idle_timeout == 2.5


@pytest.mark.parametrize(("raw", "complaint"), [("soon", "is not a number"), ("-1", "must not be negative")])
def test_a_bad_number_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, raw: str, complaint: str) -> None:
    monkeypatch.setenv("AITBC_WORKER_IDLE_TIMEOUT", raw)
    with pytest.raises(ValueError, match=f"AITBC_WORKER_IDLE_TIMEOUT.*{complaint}"):
        settings_mod.load()


def test_runs_under_a_uid_without_a_passwd_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The image's uid 65532 has no passwd entry: kopf must get its identity (the pod name), never ask getpass
    (which raised KeyError and crash-looped the operator pod on a real kubelet)."""
    import getpass

    from aitbc_operator import operator as operator_mod

    def no_passwd_entry() -> str:
        raise KeyError("getpwuid(): uid not found: 65532")

    seen: dict[str, object] = {}

    async def fake_operator(**kwargs: object) -> None:
        seen.update(kwargs)

    monkeypatch.setattr(getpass, "getuser", no_passwd_entry)
    monkeypatch.setattr(kopf, "operator", fake_operator)
    monkeypatch.setenv("POD_NAME", "aitbc-operator-7d9f-abcde")
    monkeypatch.setenv("AITBC_METRICS_PORT", "0")
    monkeypatch.setenv("AITBC_HEALTH_PORT", "0")
    assert operator_mod.run(standalone=True) == 0
    assert seen["identity"] == "aitbc-operator-7d9f-abcde"
