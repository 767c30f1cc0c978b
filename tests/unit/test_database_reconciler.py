"""reconcile_database's defensive paths, with fakes: a spec the CRD should have refused (or a renamed database) is
reported as InvalidSpec in status before any Kubernetes read or SQL; a connection Secret that is not this resource's
is refused before any SQL; a reconcile that hangs is cut by its timeout. The happy paths run end to end in
tests/integration/test_database_operator.py."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from aitbc_operator import errors, postgres
from aitbc_operator.k8s.client import Kube
from aitbc_operator.k8s.resources import Kind
from aitbc_operator.reconcilers import database as database_reconciler
from aitbc_operator.reconcilers.database import reconcile_database
from tests.factories import make_database

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class FakeKube:
    """Records status patches; any other call fails the test (nothing else may happen on this path)."""

    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []

    async def patch_status(self, kind: Kind, obj: Mapping[str, Any], status: dict[str, Any]) -> bool:
        self.statuses.append(status)
        return True

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected Kube.{name} on the InvalidSpec path")


def run_reconcile(body: dict[str, Any]) -> tuple[pytest.ExceptionInfo[errors.InvalidSpec], FakeKube]:
    kube = FakeKube()
    pool = postgres.ServerPool()  # never connects: the error comes first
    with pytest.raises(errors.InvalidSpec) as info:
        asyncio.run(reconcile_database(cast(Kube, kube), pool, body, now=NOW))
    assert pool.stats.connects == pool.stats.statements == 0
    return info, kube


def with_metadata(obj: dict[str, Any], **status: Any) -> dict[str, Any]:
    obj["metadata"].update(namespace="apps", uid="u-1", generation=3)
    if status:
        obj["status"] = status
    return obj


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


@pytest.mark.parametrize(("spec", "field"), [
    ({"databaseName": 'x"; DROP DATABASE postgres; --'}, "databaseName"),
    ({"roleName": "postgres"}, "roleName"),
    ({"service": "not-a-service"}, "service"),
    ({"connectionLimit": -5}, "connectionLimit"),
])
def test_invalid_spec_is_degraded_and_permanent(spec: dict[str, Any], field: str) -> None:
    info, kube = run_reconcile(with_metadata(make_database("bad", **spec)))

    assert field in info.value.message
    assert info.value.reason == "InvalidSpec"
    (status,) = kube.statuses
    assert conditions(status) == {"Ready": ("False", "InvalidSpec"), "Progressing": ("False", "InvalidSpec"),
                                  "Degraded": ("True", "InvalidSpec")}
    assert status["observedGeneration"] == 3


def test_renamed_database_is_refused_as_immutable() -> None:
    body = with_metadata(make_database("app", databaseName="aitbc_new"), databaseName="aitbc_old",
                         roleName="aitbc_mempool", secretName="app-db")

    info, kube = run_reconcile(body)

    assert "databaseName is immutable" in info.value.message
    assert "aitbc_old" in info.value.message
    (status,) = kube.statuses
    assert status["databaseName"] == "aitbc_old"  # what exists on the server stays recorded
    assert conditions(status)["Degraded"] == ("True", "InvalidSpec")


class ForeignSecretKube(FakeKube):
    """An admin Secret, no other AitbcDatabase, and a connection Secret name that is taken by a Secret made by hand
    (holding a password: the admin's)."""

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        return {"host": "db.example", "username": "admin", "password": "admin-password"}

    async def list(self, kind: Kind, namespace: str | None = None, **_: Any) -> list[dict[str, Any]]:
        return []

    async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        data = base64.b64encode(b"admin-password").decode()
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
                "data": {"password": data}}


def test_a_foreign_connection_secret_is_refused_before_any_sql() -> None:
    kube, pool = ForeignSecretKube(), postgres.ServerPool()
    body = with_metadata(make_database("thief", secret={"name": "postgres-admin"}))

    with pytest.raises(errors.NameConflict) as info:
        asyncio.run(reconcile_database(cast(Kube, kube), pool, body, now=NOW))

    assert info.value.message.startswith("connection Secret postgres-admin already exists and is controlled by no")
    assert pool.stats.connects == pool.stats.connect_failures == pool.stats.statements == 0
    (status,) = kube.statuses
    assert conditions(status)["Degraded"] == ("True", "NameConflict")


class SilentKube(FakeKube):
    """An apiserver that never answers the admin Secret read."""

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


def test_a_reconcile_that_hangs_is_cut_by_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database_reconciler, "RECONCILE_TIMEOUT", 0.2)
    kube = SilentKube()

    with pytest.raises(errors.ReconcileTimeout, match=r"no answer within 0\.2 s"):
        asyncio.run(reconcile_database(cast(Kube, kube), postgres.ServerPool(), with_metadata(make_database("x")),
                                       now=NOW))

    (status,) = kube.statuses
    assert conditions(status) == {"Ready": ("False", "Timeout"), "Progressing": ("True", "Timeout"),
                                  "Degraded": ("True", "Timeout")}
