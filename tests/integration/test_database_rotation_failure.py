"""Rotation when one of its two writes fails once: the reconciler in-process (no operator subprocess, so that a
failure can be injected) against the real apiserver and a real PostgreSQL 15.

The order the README promises: the new password goes to the Secret first, then to the role. So a failed Secret write
changes nothing on the server (the old password keeps working), and a failed role update leaves the rotation pending
(status keeps the old token) with the role still on the password applications have; either way the next reconcile
converges, and at no point does the role hold a password the Secret never had.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from kubernetes import client

from aitbc_operator import errors
from aitbc_operator.k8s.client import Kube
from aitbc_operator.postgres import AdminConnInfo, ServerPool, Session
from aitbc_operator.reconcilers.database import reconcile_database
from tests.integration.test_database_operator import GROUP, PLURAL, VERSION, database, drop_everything, put_admin_secret
from tests.operator_fixtures import release_finalizers
from tests.pg.fixtures import PgTestServer
from tests.pg.inspect import login_error

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

T = TypeVar("T")
Obj = dict[str, Any]


class FlakyKube(Kube):
    """The operator's Kube, whose next ``secret_failures`` Secret writes fail as if the apiserver were unavailable."""

    secret_failures = 0

    async def apply(self, obj: Obj, *, force: bool = True) -> Obj:
        if obj["kind"] == "Secret" and self.secret_failures:
            self.secret_failures -= 1
            raise errors.ApiUnavailable("PATCH secrets: injected failure")
        return await super().apply(obj, force=force)


class FlakyPool(ServerPool):
    """A ServerPool whose job number ``fail_job`` (counted from the next one, 1-based) fails as if the server went."""

    fail_job = 0

    async def run(self, info: AdminConnInfo, work: Callable[[Session], T]) -> T:
        if self.fail_job:
            self.fail_job -= 1
            if not self.fail_job:
                raise errors.ServerUnreachable(f"{info.describe()}: injected failure")
        return await super().run(info, work)


class Rig:
    """One AitbcDatabase, reconciled by hand with the flaky Kube and pool."""

    def __init__(self, api: client.ApiClient, kubeconfig: Path, namespace: str, pg: PgTestServer, names: str) -> None:
        self.api, self.namespace, self.pg = api, namespace, pg
        self.crs, self.core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        self.kube, self.pool = FlakyKube.connect(str(kubeconfig)), FlakyPool()
        self.loop = asyncio.new_event_loop()  # one loop for the rig's life: the Kube's session belongs to it
        self.role, self.db = f"{names}_rot_app", f"{names}_rot"
        put_admin_secret(api, namespace, pg.admin_login)
        self.crs.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, database("rot", names))

    def body(self) -> Obj:
        return cast(Obj, self.crs.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, "rot"))

    def reconcile(self) -> None:
        self.loop.run_until_complete(
            reconcile_database(self.kube, self.pool, self.body(), now=datetime.now(UTC).replace(microsecond=0)))

    def failing_reconcile(self, error: type[errors.OperatorError]) -> None:
        with pytest.raises(error):
            self.reconcile()

    def request_rotation(self, token: str) -> None:
        self.crs.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, "rot",
                                                {"spec": {"password": {"rotationToken": token}}})

    def secret_password(self) -> str:
        secret = self.core.read_namespaced_secret("rot-db", self.namespace)
        return base64.b64decode((secret.data or {})["password"]).decode()

    def works(self, password: str) -> bool:
        return login_error(self.pg.server, self.role, password, self.db) is None

    def condition(self, type_: str) -> tuple[str, str]:
        found = {c["type"]: (c["status"], c["reason"]) for c in self.body()["status"]["conditions"]}
        return found[type_]

    def close(self) -> None:
        self.loop.run_until_complete(self.pool.aclose())
        self.loop.run_until_complete(self.kube.aclose())
        self.loop.close()


@pytest.fixture
def rig(kube: client.ApiClient, kubeconfig: Path, namespace: str, pg15: PgTestServer, names: str) -> Iterator[Rig]:
    made = Rig(kube, kubeconfig, namespace, pg15, names)
    try:
        made.reconcile()
        assert made.condition("Ready") == ("True", "Reconciled")
        yield made
    finally:
        made.close()
        release_finalizers(kube, namespace)
        drop_everything(pg15.server, names)


def test_a_failed_secret_write_changes_nothing_and_the_next_reconcile_rotates(rig: Rig) -> None:
    old = rig.secret_password()
    token = rig.body()["status"]["observedRotationToken"]
    rig.request_rotation("2026-06")
    rig.kube.secret_failures = 1

    rig.failing_reconcile(errors.ApiUnavailable)

    assert rig.secret_password() == old
    assert rig.works(old), "the role still has the password the Secret holds"
    assert rig.body()["status"]["observedRotationToken"] == token, "the rotation is still pending"
    assert rig.condition("Degraded") == ("True", "ApiUnavailable")

    rig.reconcile()

    new = rig.secret_password()
    assert new != old
    assert rig.works(new)
    assert not rig.works(old)
    assert rig.condition("Ready") == ("True", "Reconciled")
    assert rig.body()["status"]["observedRotationToken"] == "2026-06|"


def test_a_failed_role_update_leaves_the_rotation_pending_and_the_next_reconcile_converges(rig: Rig) -> None:
    old = rig.secret_password()
    rig.request_rotation("2026-07")
    rig.pool.fail_job = 2  # job 1 observes and plans; job 2 (after the Secret write) sets the password

    rig.failing_reconcile(errors.ServerUnreachable)

    pending = rig.secret_password()
    assert pending != old, "the Secret was written first"
    assert rig.works(old), "the role did not get it: applications already running keep working"
    assert not rig.works(pending)

    rig.reconcile()  # still pending (status kept the old token): rotated again, Secret first, then the role

    new = rig.secret_password()
    assert rig.works(new)
    assert not rig.works(old)
    assert not rig.works(pending)
    assert rig.condition("Ready") == ("True", "Reconciled")
