"""The AitbcDatabase side of the trust boundary, end to end: the real operator (a subprocess) against the local control
plane and a real PostgreSQL 15 whose admin is not a superuser. What a resource's author may not take (someone else's
Secret, role or database), what the admin may not do (refused before any DDL), every repair of the connection Secret
being a Warning, and deletions that cannot drop (a missing admin Secret, a namespace being deleted).

Everything is observed from the outside: conditions, Events, Secrets as the apiserver returns them, the server's
roles, databases and DDL log.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from psycopg import sql

from tests.cluster.fixtures import wait_until
from tests.integration.test_database_operator import (
    ADMIN_SECRET,
    DRIFT_TIMEOUT,
    DbEnv,
    database,
    drop_everything,
    make_env,
    put_admin_secret,
    table_can_be_created,
    wait_drift_passes,
)
from tests.operator_fixtures import OperatorProcess, release_finalizers
from tests.pg.fixtures import ADMIN, PgTestServer
from tests.pg.inspect import databases, login_error, roles, su

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

RELEASE = "aitbc.io/release-without-drop"


@pytest.fixture
def env(kube: client.ApiClient, namespace: str, pg15: PgTestServer, operator: OperatorProcess,
        names: str) -> Iterator[DbEnv]:
    """The operator watching a fresh namespace with a `postgres-admin` Secret for pg15 (the test's databases and
    roles, named with the `names` prefix, are dropped afterwards)."""
    yield from make_env(kube, namespace, pg15.server, pg15.admin_login, operator, names)


def secret_as_stored(env: DbEnv, name: str) -> dict[str, Any]:
    """The whole Secret as the apiserver returns it (metadata included: resourceVersion, ownerReferences, ...)."""
    found: dict[str, Any] = env.api.sanitize_for_serialization(env.core.read_namespaced_secret(name, env.namespace))
    return found


def create_secret(env: DbEnv, name: str, data: dict[str, str]) -> None:
    env.core.create_namespaced_secret(env.namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=name),
                                                                     string_data=data))


def warnings(env: DbEnv, name: str, reason: str) -> list[str]:
    return [message for type_, r, message in env.events(name) if type_ == "Warning" and r == reason]


def reconcile_errors(operator: OperatorProcess, reason: str) -> float:
    """The operator's count of failed AitbcDatabase reconciles (or finalizer attempts) with this reason."""
    prefix = f'aitbc_reconcile_errors_total{{kind="AitbcDatabase",reason="{reason}"}} '
    for line in operator.metrics().splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0


# --- the connection Secret ---------------------------------------------------------------------------------------


def test_naming_the_admin_secret_is_a_name_conflict_and_leaves_it_alone(env: DbEnv, names: str) -> None:
    env.create(database("honest", names))
    env.wait_ready("honest")
    before = secret_as_stored(env, ADMIN_SECRET)
    log_offset = env.server.log_size()

    env.create(database("thief", names, secret={"name": ADMIN_SECRET}))
    env.wait_condition("thief", "Degraded", "True", "NameConflict")
    message = env.message("thief", "Degraded")
    assert f"Secret {ADMIN_SECRET} already exists and is controlled by no controller" in message
    assert "refusing to take it over" in message
    wait_drift_passes(env, 1, 2)  # the thief is refused again on each drift pass; the honest one stays in sync

    assert secret_as_stored(env, ADMIN_SECRET) == before, "the admin Secret changed"
    assert not before["metadata"].get("ownerReferences")
    assert f"{names}_thief" not in databases(env.server, names)
    assert f"{names}_thief_app" not in roles(env.server, names)
    assert env.server.ddl_statements(ADMIN, since=log_offset) == [], "no DDL at all"
    assert env.condition("honest", "Ready") == ("True", "Reconciled")
    assert table_can_be_created(env.secret("honest-db")["DATABASE_URL"])


def test_two_resources_naming_one_secret_the_second_is_refused(env: DbEnv, names: str) -> None:
    env.create(database("first", names, secret={"name": "shared-db"}))
    env.wait_ready("first")
    first_uid = env.must_get("first")["metadata"]["uid"]
    password = env.secret("shared-db")["password"]

    env.create(database("second", names, secret={"name": "shared-db"}))
    env.wait_condition("second", "Degraded", "True", "NameConflict")
    assert f"controlled by AitbcDatabase first (uid {first_uid})" in env.message("second", "Degraded")
    wait_drift_passes(env, 1, 2)

    stored = secret_as_stored(env, "shared-db")
    assert [ref["uid"] for ref in stored["metadata"]["ownerReferences"]] == [first_uid]
    assert env.secret("shared-db")["password"] == password
    assert env.password_works(f"{names}_first_app", password, f"{names}_first")
    assert f"{names}_second_app" not in roles(env.server, names), "the second one created nothing"
    assert env.condition("first", "Ready") == ("True", "Reconciled")


def test_a_hand_edited_url_is_put_back_with_a_warning(env: DbEnv, names: str) -> None:
    env.create(database("edited", names))
    env.wait_ready("edited")
    url = env.secret("edited-db")["DATABASE_URL"]
    forged = base64.b64encode(b"postgresql+psycopg://evil:evil@elsewhere:5432/x").decode()

    env.core.patch_namespaced_secret("edited-db", env.namespace, {"data": {"DATABASE_URL": forged}})

    wait_until(lambda: env.secret("edited-db")["DATABASE_URL"] == url, DRIFT_TIMEOUT, "DATABASE_URL put back")
    message = env.wait_event("edited", "DriftRepaired", "Warning")
    assert message == "Secret edited-db: DATABASE_URL changed by someone else, put back"


def test_a_deleted_secret_comes_back_with_a_warning_and_a_reset_role(env: DbEnv, names: str) -> None:
    env.create(database("lost", names))
    env.wait_ready("lost")
    db, role = f"{names}_lost", f"{names}_lost_app"
    old = env.secret("lost-db")["password"]

    env.core.delete_namespaced_secret("lost-db", env.namespace)

    wait_until(lambda: env.secret_object("lost-db") is not None and env.secret("lost-db")["password"] != old,
               DRIFT_TIMEOUT, "the Secret re-created with a new password")
    message = env.wait_event("lost", "DriftRepaired", "Warning")
    assert message == (f"Secret lost-db was deleted: re-created with a new password; password of role {role} reset "
                       "to the new one in its Secret")
    new = env.secret("lost-db")["password"]
    assert env.password_works(role, new, db)
    assert not env.password_works(role, old, db)
    assert not [e for e in env.events("lost") if e[1] == "PasswordRotated"], "a repair, not a rotation"


# --- adoption and privileges ---------------------------------------------------------------------------------------


def test_the_runbook_setup_is_adopted_once_asked_for(env: DbEnv, names: str) -> None:
    db, role = f"{names}_legacy", f"{names}_legacy_app"
    su(env.server, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    su(env.server, sql.SQL("CREATE USER {} WITH PASSWORD 'secure_password'").format(sql.Identifier(role)))
    su(env.server, sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(db), sql.Identifier(role)))

    env.create(database("legacy", names))
    env.wait_condition("legacy", "Degraded", "True", "NameConflict")
    assert "set spec.adopt: true" in env.message("legacy", "Degraded")
    assert env.secret_object("legacy-db") is None, "no Secret before the server agreed"
    assert login_error(env.server, role, "secure_password", db) is None, "nothing touched"

    env.patch("legacy", {"spec": {"adopt": True}})  # adopt is mutable: asking later is the way out

    env.wait_ready("legacy")
    assert table_can_be_created(env.secret("legacy-db")["DATABASE_URL"])
    assert login_error(env.server, role, "secure_password", db) == "28P01"
    assert roles(env.server, role)[role].comment == f"aitbc-operator: {env.namespace}/legacy"


def test_an_admin_without_createdb_creates_nothing(env: DbEnv, names: str) -> None:
    weak, password = f"{names}_weak", secrets.token_urlsafe(12)
    su(env.server, sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(sql.Identifier(weak),
                                                                                 sql.Literal(password)))
    create_secret(env, "weak-admin", {"host": env.admin.host, "port": str(env.admin.port), "username": weak,
                                      "password": password})

    env.create(database("weak", names, server={"adminSecretRef": {"name": "weak-admin"}}))

    env.wait_condition("weak", "Degraded", "True", "InsufficientPrivilege")
    assert env.message("weak", "Degraded") == (
        f"admin {weak} lacks CREATEDB (to create database {names}_weak owned by {names}_weak_app): "
        "nothing was changed")
    assert roles(env.server, names).keys() == {weak}
    assert databases(env.server, names) == {}
    assert env.secret_object("weak-db") is None


# --- deletion ----------------------------------------------------------------------------------------------------


def test_a_drop_without_its_admin_secret_is_blocked_with_one_event(env: DbEnv, names: str) -> None:
    env.create(database("orphan", names, deletionPolicy="Drop"))
    env.wait_ready("orphan")
    env.core.delete_namespaced_secret(ADMIN_SECRET, env.namespace)
    attempts = reconcile_errors(env.operator, "AdminSecretNotFound")

    env.delete("orphan")

    env.wait_condition("orphan", "DeletionBlocked", "True", "AdminSecretNotFound")
    message = env.message("orphan", "DeletionBlocked")
    assert message.startswith(f"deletion blocked: admin Secret {ADMIN_SECRET} not found")
    assert f"annotate {RELEASE}=true" in message
    # The finalizer is retried (every 2 s here): several attempts, one Event.
    wait_until(lambda: reconcile_errors(env.operator, "AdminSecretNotFound") >= attempts + 4, DRIFT_TIMEOUT,
               "four more attempts of the finalizer")
    assert len(warnings(env, "orphan", "DeletionBlocked")) == 1

    env.patch("orphan", {"metadata": {"annotations": {RELEASE: "true"}}})
    wait_until(lambda: env.get("orphan") is None, DRIFT_TIMEOUT, "the resource released")
    assert f"{names}_orphan" in databases(env.server, names), "released, nothing dropped"


@pytest.fixture
def doomed_namespace(kube: client.ApiClient, pg15: PgTestServer, names: str) -> Iterator[str]:
    """A namespace the test deletes itself, with the `postgres-admin` Secret; cleaned up if the test did not."""
    core = client.CoreV1Api(kube)
    name = f"t-doomed-{secrets.token_hex(3)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"aitbc.io/test": "true"})))
    put_admin_secret(kube, name, pg15.admin_login)
    try:
        yield name
    finally:
        try:
            release_finalizers(kube, name)
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
        drop_everything(pg15.server, names)


def namespace_gone(api: client.ApiClient, name: str) -> bool:
    try:
        client.CoreV1Api(api).read_namespace(name)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def namespace_warnings(api: client.ApiClient, name: str) -> list[str]:
    found = client.CoreV1Api(api).list_event_for_all_namespaces(
        field_selector=f"involvedObject.kind=Namespace,involvedObject.name={name}")
    return [e.message or "" for e in found.items if e.type == "Warning" and e.reason == "ReleasedWithoutDrop"]


def start_drop_database(api: client.ApiClient, kubeconfig: Path, namespace: str, pg: PgTestServer, names: str,
                        log: Path) -> OperatorProcess:
    """The operator watching `namespace`, and one Ready `Drop` AitbcDatabase in it."""
    operator = OperatorProcess(kubeconfig, log, namespaces=(namespace,)).start()
    env = DbEnv(api, namespace, pg.server, pg.admin_login, operator)
    env.create(database("app", names, deletionPolicy="Drop"))
    env.wait_ready("app")
    return operator


def test_namespace_deleted_after_its_admin_secret_went_is_released_without_dropping(
        kube: client.ApiClient, kubeconfig: Path, pg15: PgTestServer, names: str, doomed_namespace: str,
        tmp_path: Path) -> None:
    """Deterministic: the admin Secret goes first (as it may when the namespace controller deletes everything), then
    the namespace; a Secret can no longer be created in it, so the operator lets it go, dropping nothing."""
    namespace, core = doomed_namespace, client.CoreV1Api(kube)
    operator = start_drop_database(kube, kubeconfig, namespace, pg15, names, tmp_path / "operator.log")
    try:
        core.delete_namespaced_secret(ADMIN_SECRET, namespace)
        core.delete_namespace(namespace)
        wait_until(lambda: namespace_gone(kube, namespace), 60, f"namespace {namespace} to go")
        assert f"{names}_app" in databases(pg15.server, names), "kept: nothing is dropped without the admin Secret"
        assert f"{names}_app_app" in roles(pg15.server, names)
        wait_until(lambda: namespace_warnings(kube, namespace), DRIFT_TIMEOUT, "the Warning on the Namespace")
        (message,) = namespace_warnings(kube, namespace)
        assert f"AitbcDatabase {namespace}/app: namespace being deleted and admin Secret {ADMIN_SECRET}" in message
        assert f"WITHOUT dropping: database {names}_app and role {names}_app_app stay on" in message
    finally:
        operator.stop()


def test_namespace_deletion_with_the_operator_running_never_hangs(
        kube: client.ApiClient, kubeconfig: Path, pg15: PgTestServer, names: str, doomed_namespace: str,
        tmp_path: Path) -> None:
    """The namespace controller deletes the admin Secret and the AitbcDatabase in no fixed order: either the Drop ran
    (the Secret was still there) or the resource was released with a Warning; the namespace goes either way."""
    namespace = doomed_namespace
    operator = start_drop_database(kube, kubeconfig, namespace, pg15, names, tmp_path / "operator.log")
    try:
        client.CoreV1Api(kube).delete_namespace(namespace)
        wait_until(lambda: namespace_gone(kube, namespace), 60, f"namespace {namespace} to go")
        dropped = f"{names}_app" not in databases(pg15.server, names)
        assert dropped == (f"{names}_app_app" not in roles(pg15.server, names)), "both dropped, or both kept"
        if not dropped:
            wait_until(lambda: namespace_warnings(kube, namespace), DRIFT_TIMEOUT, "kept, so a Warning says so")
        else:
            assert not namespace_warnings(kube, namespace)
    finally:
        operator.stop()
