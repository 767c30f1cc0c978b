"""The AITBC_* environment reaches kopf's settings (operator.configure)."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import logging
import platform
import ssl
from typing import Any

import kopf
import pytest

from aitbc_operator import settings as settings_mod
from aitbc_operator.builders.common import LABEL_MANAGED_BY, MANAGED_BY
from aitbc_operator.operator import TLS_READ_BUFFER, configure, tune_malloc, tune_tls_buffers


def test_defaults_free_worker_slots_quickly_and_post_only_kopf_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AITBC_MAX_WORKERS", "AITBC_WORKER_IDLE_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    settings = kopf.OperatorSettings()
    configure(settings, settings_mod.load())
    assert settings.queueing.worker_limit == 20
    assert settings.queueing.idle_timeout == 0.05  # kopf's 5 s would cap 20 workers at ~4 objects/s
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


def _builtin_handlers() -> list[Any]:
    """Every handler (of any kind) registered by the operator's modules on a kind outside aitbc.io."""
    from aitbc_operator import handlers  # noqa: F401  (registers the handlers)

    registry = kopf.get_default_registry()
    found = []
    for sub in (registry._watching, registry._changing, registry._spawning, registry._indexing):
        found.extend(h for h in sub.get_all_handlers() if h.selector is not None and h.selector.group != "aitbc.io")
    return found


def test_every_watched_builtin_kind_gets_a_server_side_selector_that_its_handlers_imply() -> None:
    """kopf lists and watches each kind a handler names; unfiltered, that is every Secret and Pod of the cluster."""
    settings = kopf.OperatorSettings()
    configure(settings, settings_mod.load())
    handlers = _builtin_handlers()
    assert {(h.selector.group, h.selector.any_name) for h in handlers} == {
        ("", "secrets"), ("", "pods"), ("apps", "statefulsets"), ("apps", "deployments"), ("batch", "jobs")}
    for handler in handlers:
        sel = handler.selector
        resource = kopf.Resource(sel.group, sel.version or "v1", sel.any_name)
        selectors = settings.watching.label_selectors.collect(resource)
        assert len(selectors) == 1, f"{resource}: {selectors}"
        # The server returns only objects with these labels: each handler must want only such objects.
        wanted = dict(pair.split("=", 1) for pair in selectors[0].split(","))
        assert wanted[LABEL_MANAGED_BY] == MANAGED_BY
        labels = handler.labels or {}
        assert all(labels.get(key) == value for key, value in wanted.items()), (handler.id, labels, wanted)


def test_runtime_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AITBC_KUBE_CONNECTIONS", "AITBC_LEASE_DURATION", "AITBC_LEASE_RENEW_DEADLINE",
                 "AITBC_LEASE_RETRY_PERIOD", "AITBC_LEASE_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    cfg = settings_mod.load()
    assert cfg.kube_connections == 8
    assert cfg.lease == settings_mod.LeaseTimings(15, 10, 2, 5)  # client-go's, with a request timeout well under
    monkeypatch.setenv("AITBC_KUBE_CONNECTIONS", "16")
    monkeypatch.setenv("AITBC_LEASE_DURATION", "30")
    monkeypatch.setenv("AITBC_LEASE_RENEW_DEADLINE", "20")
    cfg = settings_mod.load()
    assert cfg.kube_connections == 16
    assert (cfg.lease.lease_duration, cfg.lease.renew_deadline) == (30, 20)


@pytest.mark.parametrize(("name", "raw", "complaint"), [
    ("AITBC_KUBE_CONNECTIONS", "0", "whole number of at least 1"),
    ("AITBC_KUBE_CONNECTIONS", "2.5", "whole number of at least 1"),
    ("AITBC_LEASE_RENEW_DEADLINE", "20", "AITBC_LEASE_DURATION \\(15\\) > AITBC_LEASE_RENEW_DEADLINE \\(20\\)"),
    ("AITBC_LEASE_REQUEST_TIMEOUT", "10", "AITBC_LEASE_REQUEST_TIMEOUT \\(10\\) must be above 0 and below"),
])
def test_bad_runtime_settings_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str, complaint: str
) -> None:
    monkeypatch.setenv(name, raw)
    with pytest.raises(ValueError, match=complaint):
        settings_mod.load()


def test_losing_leadership_stops_sql_and_api_calls_at_once() -> None:
    """stop_acting (called from the election's thread) reaches what the startup handler put in kopf's memo."""

    from aitbc_operator import errors
    from aitbc_operator.k8s.client import Kube
    from aitbc_operator.operator import stop_acting
    from aitbc_operator.postgres import ServerPool
    from aitbc_operator.postgres.conninfo import AdminConnInfo

    memo = kopf.Memo(pg=ServerPool(), kube=Kube(lambda: kopf.ConnectionInfo(server="https://127.0.0.1:1")))
    stop_acting(memo, "not renewed within 10 s")
    with pytest.raises(errors.Stopped, match=r"not sent, leadership lost \(not renewed within 10 s\)"):
        asyncio.run(memo["kube"].request("GET", "/api/v1/namespaces"))
    info = AdminConnInfo(host="127.0.0.1", port=1, user="admin", password="x", dbname="postgres")
    with pytest.raises(errors.Stopped, match="not started"):
        asyncio.run(memo["pg"].run(info, lambda session: None))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc tuning applies to glibc only")
def test_malloc_is_tuned_on_glibc() -> None:
    assert tune_malloc() is True


def test_tls_connections_read_into_a_small_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio.sslproto.SSLProtocol, "max_size", asyncio.sslproto.SSLProtocol.max_size)  # restored
    assert tune_tls_buffers() is True
    loop = asyncio.new_event_loop()
    try:
        protocol = asyncio.sslproto.SSLProtocol(loop, asyncio.Protocol(), ssl.create_default_context(), None)
        assert len(protocol._ssl_buffer) == TLS_READ_BUFFER < 256 * 1024  # what a connection allocates
    finally:
        loop.close()
