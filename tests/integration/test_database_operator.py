"""AitbcDatabase end to end: the real operator (kopf, as a subprocess) against the local control plane and a real
PostgreSQL server whose admin is NOT a superuser. Out-of-band changes are made as the server's bootstrap superuser,
like a human with psql; everything is observed from the outside (CR status, Secrets, Events, the server itself).

The operator's drift interval is 2 s (tests/operator_fixtures.py), so every repair is a poll with a deadline.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from psycopg import sql

from tests.cluster.fixtures import wait_until
from tests.factories import make_database
from tests.operator_fixtures import OperatorProcess, release_finalizers
from tests.pg.fixtures import ADMIN, PgTestServer
from tests.pg.inspect import databases, login_error, roles, su, verifier_salt
from tests.pg.server import LoginInfo, PostgresServer, find_debian_bin_dir

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "crds" / "samples").glob("aitbcdatabase-*.yaml"))
GROUP, VERSION, PLURAL = "aitbc.io", "v1alpha1", "aitbcdatabases"
ADMIN_SECRET = "postgres-admin"
#: Generous deadlines: the drift interval is 2 s, a first reconcile takes well under a second.
READY_TIMEOUT = 30.0
DRIFT_TIMEOUT = 20.0

Obj = dict[str, Any]


# --- the test environment --------------------------------------------------------------------------------------------


@dataclass
class DbEnv:
    """One test's namespace, its operator and its PostgreSQL server, with small accessors."""

    api: client.ApiClient
    namespace: str
    server: PostgresServer
    admin: LoginInfo
    operator: OperatorProcess

    @property
    def crs(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    # custom resources

    def create(self, obj: Obj) -> Obj:
        return cast(Obj, self.crs.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, obj))

    def get(self, name: str) -> Obj | None:
        try:
            obj = cast(Obj, self.crs.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def must_get(self, name: str) -> Obj:
        obj = self.get(name)
        assert obj is not None, f"AitbcDatabase {name} is gone"
        return obj

    def patch(self, name: str, patch: Obj) -> Obj:
        return cast(Obj, self.crs.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, patch))

    def delete(self, name: str) -> None:
        self.crs.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def condition(self, name: str, type_: str) -> tuple[str, str] | None:
        """(status, reason) of a condition, None when the resource or the condition is missing."""
        obj = self.get(name)
        for cond in ((obj or {}).get("status") or {}).get("conditions", []):
            if cond["type"] == type_:
                return str(cond["status"]), str(cond["reason"])
        return None

    def message(self, name: str, type_: str) -> str:
        """The message of a condition ("" when missing)."""
        obj = self.get(name)
        for cond in ((obj or {}).get("status") or {}).get("conditions", []):
            if cond["type"] == type_:
                return str(cond.get("message", ""))
        return ""

    def wait_condition(self, name: str, type_: str, status: str, reason: str | None = None,
                       timeout: float = DRIFT_TIMEOUT) -> None:
        def reached() -> bool:
            found = self.condition(name, type_)
            return found is not None and found[0] == status and (reason is None or found[1] == reason)

        wait_until(reached, timeout, f"{name}: {type_}={status}" + (f" ({reason})" if reason else ""))

    def wait_ready(self, *names: str, timeout: float = READY_TIMEOUT) -> None:
        for name in names:
            self.wait_condition(name, "Ready", "True", "Reconciled", timeout=timeout)

    # Secrets and Events

    def secret_object(self, name: str) -> client.V1Secret | None:
        try:
            secret: client.V1Secret = self.core.read_namespaced_secret(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return secret

    def secret(self, name: str) -> dict[str, str]:
        secret = self.secret_object(name)
        assert secret is not None, f"Secret {name} is missing"
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def events(self, name: str) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the Events on an AitbcDatabase."""
        found = self.core.list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={name}")
        return [(e.type or "", e.reason or "", e.message or "") for e in found.items
                if e.involved_object.kind == "AitbcDatabase"]

    def wait_event(self, name: str, reason: str, type_: str = "Normal", timeout: float = DRIFT_TIMEOUT) -> str:
        """Wait for an Event; returns its message."""
        messages: list[str] = []

        def seen() -> bool:
            messages[:] = [m for t, r, m in self.events(name) if t == type_ and r == reason]
            return bool(messages)

        wait_until(seen, timeout, f"a {type_} Event {reason} on {name}")
        return messages[0]

    def password_works(self, role: str, password: str, database: str) -> bool:
        return login_error(self.server, role, password, database) is None


def put_admin_secret(api: client.ApiClient, namespace: str, admin: LoginInfo) -> None:
    """The `postgres-admin` Secret the samples reference: the test server's non-superuser admin."""
    client.CoreV1Api(api).create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name=ADMIN_SECRET),
        string_data={"host": admin.host, "port": str(admin.port), "username": admin.user, "password": admin.password},
    ))


def drop_everything(server: PostgresServer, *prefixes: str) -> None:
    """Remove the test's databases and roles from the shared server (superuser), so other tests start clean."""
    for prefix in prefixes:
        for database in databases(server, prefix):
            su(server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        for role in roles(server, prefix):
            su(server, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def make_env(api: client.ApiClient, namespace: str, server: PostgresServer, admin: LoginInfo,
             operator: OperatorProcess, *prefixes: str) -> Iterator[DbEnv]:
    put_admin_secret(api, namespace, admin)
    try:
        yield DbEnv(api, namespace, server, admin, operator)
    finally:
        operator.stop()
        release_finalizers(api, namespace)
        drop_everything(server, *prefixes)


@pytest.fixture
def env(kube: client.ApiClient, namespace: str, pg15: PgTestServer, operator: OperatorProcess,
        names: str) -> Iterator[DbEnv]:
    """The operator watching a fresh namespace with a `postgres-admin` Secret for pg15; the test's databases and
    roles (named with the `names` prefix) are dropped afterwards."""
    yield from make_env(kube, namespace, pg15.server, pg15.admin_login, operator, names)


def database(name: str, prefix: str, **spec: Any) -> Obj:
    """An AitbcDatabase with names unique on the shared server: database `<prefix>_<name>`, role `..._app`."""
    return make_database(name, databaseName=f"{prefix}_{name}", roleName=f"{prefix}_{name}_app", **spec)


def table_can_be_created(url: str, table: str = "probe") -> bool:
    """What the application does with its Secret: SQLAlchemy connects and creates a table in `public`."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"CREATE TABLE public.{table} (id int)"))  # test-owned constant name
            conn.execute(sqlalchemy.text(f"DROP TABLE public.{table}"))
        return True
    except sqlalchemy.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def reconciles_ok(operator: OperatorProcess) -> float:
    """The operator's count of successful AitbcDatabase reconciles (each drift pass adds one per resource)."""
    match = re.search(r'^aitbc_reconcile_total\{kind="AitbcDatabase",result="ok"\} (\S+)$', operator.metrics(),
                      re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def wait_drift_passes(env: DbEnv, resources: int, passes: int) -> None:
    """Poll until the operator has run `passes` more drift passes over `resources` resources."""
    target = reconciles_ok(env.operator) + resources * passes
    wait_until(lambda: reconciles_ok(env.operator) >= target, 2.5 * passes + 10, f"{passes} drift passes")


# --- the samples -----------------------------------------------------------------------------------------------------


SAMPLE_NAMES = ("aitbc_coordinator", "aitbc_exchange", "aitbc_marketplace", "aitbc_mempool", "aitbc_wallet")


@pytest.fixture
def sample_env(kube: client.ApiClient, namespace: str, pg15: PgTestServer,
               operator: OperatorProcess) -> Iterator[DbEnv]:
    """Like `env`, for the samples: their default names (aitbc_<service>) are dropped before and after."""
    drop_everything(pg15.server, *SAMPLE_NAMES)
    yield from make_env(kube, namespace, pg15.server, pg15.admin_login, operator, *SAMPLE_NAMES)


def test_samples_become_ready_with_working_secrets_then_stay_idle(sample_env: DbEnv) -> None:
    env = sample_env
    samples = [yaml.safe_load(path.read_text()) for path in SAMPLES]
    assert len(samples) == 5
    for sample in samples:
        env.create(sample)
    names = [s["metadata"]["name"] for s in samples]
    env.wait_ready(*names)

    for sample in samples:
        name, service = sample["metadata"]["name"], sample["spec"]["service"]
        obj = env.must_get(name)
        status = obj["status"]
        assert status["databaseName"] == status["roleName"] == f"aitbc_{service}"
        assert status["observedGeneration"] == obj["metadata"]["generation"]
        # kopf's diff-base is that observed generation and it writes no marker (persistence.py): its only write to
        # the object was the finalizer, so it left no annotation.
        assert not [k for k in obj["metadata"].get("annotations") or {} if k.startswith("aitbc.io/")]
        assert status["secretName"] == f"{name}-db"
        data = env.secret(f"{name}-db")
        url = data["DATABASE_URL"]
        assert url.startswith(f"postgresql+psycopg://aitbc_{service}:")
        assert table_can_be_created(url), f"{name}: the Secret's DATABASE_URL cannot create a table in public"
        own_variable = {"coordinator": "DATABASE_URL", "exchange": "EXCHANGE_DATABASE_URL",
                        "marketplace": "MARKETPLACE_DATABASE_URL", "mempool": "MEMPOOL_DB_URL",
                        "wallet": "WALLET_DATABASE_URL"}[service]
        assert data[own_variable] == url
        assert data["password"] not in str(status), "the password leaked into status"
        assert ("DATABASE_ADAPTER" in data) == (service == "coordinator")
    assert env.secret("coordinator-db")["DATABASE_ADAPTER"] == "postgresql"
    live_roles, live_databases = roles(env.server, "aitbc_"), databases(env.server, "aitbc_")
    limits = {n: live_roles[n].connection_limit for n in SAMPLE_NAMES if n in live_roles}
    assert limits == dict.fromkeys(SAMPLE_NAMES, 20)
    assert {n: live_databases.get(n) for n in SAMPLE_NAMES} == {n: n for n in SAMPLE_NAMES}, "owner = role"

    # Idle: once settled (one full drift pass after Ready), several drift passes write nothing and issue no DDL.
    wait_drift_passes(env, len(names), 1)
    versions = {n: env.must_get(n)["metadata"]["resourceVersion"] for n in names}
    secret_versions = {n: env.secret_object(f"{n}-db").metadata.resource_version for n in names}  # type: ignore[union-attr]
    events = sum(len(env.events(n)) for n in names)
    log_offset = env.server.log_size()

    wait_drift_passes(env, len(names), 3)

    assert {n: env.must_get(n)["metadata"]["resourceVersion"] for n in names} == versions
    assert {n: env.secret_object(f"{n}-db").metadata.resource_version for n in names} == secret_versions  # type: ignore[union-attr]
    assert sum(len(env.events(n)) for n in names) == events
    assert env.server.ddl_statements(ADMIN, since=log_offset) == []


# --- drift, repaired through the operator ----------------------------------------------------------------------------


def owner_of(env: DbEnv, database_name: str) -> str | None:
    return databases(env.server, database_name).get(database_name)


def test_drift_of_the_role_is_repaired(env: DbEnv, names: str) -> None:
    env.create(database("drift", names, connectionLimit=5))
    env.wait_ready("drift")
    db, role = f"{names}_drift", f"{names}_drift_app"
    password = env.secret("drift-db")["password"]
    assert env.password_works(role, password, db)
    # The salt of the verifier set is recorded (the drift checks' logins derive the role's SCRAM keys from it).
    first_salt = verifier_salt(env.server, role)
    assert first_salt is not None
    assert env.must_get("drift")["status"]["scramSalts"] == {role: first_salt}

    # Dropped by hand (a human must first give the database away: a role that owns one cannot be dropped).
    su(env.server, sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(db), sql.Identifier(ADMIN)))
    su(env.server, sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    wait_until(lambda: role in roles(env.server, role) and owner_of(env, db) == role, DRIFT_TIMEOUT,
               "the role recreated and owning the database again")
    wait_until(lambda: env.password_works(role, env.secret("drift-db")["password"], db), DRIFT_TIMEOUT,
               "the Secret's password to log in again")
    assert env.wait_event("drift", "DriftRepaired", "Warning")

    # Owner and connection limit changed by hand: restored.
    su(env.server, sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(db), sql.Identifier(ADMIN)))
    su(env.server, sql.SQL("ALTER ROLE {} CONNECTION LIMIT 1").format(sql.Identifier(role)))
    wait_until(lambda: owner_of(env, db) == role and roles(env.server, role)[role].connection_limit == 5,
               DRIFT_TIMEOUT, "owner and connection limit restored")

    # Password changed out of band: the role is reset to the Secret's password (the Secret stays as it is).
    password = env.secret("drift-db")["password"]
    su(env.server, sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal("changed-by-hand")))
    assert not env.password_works(role, password, db)
    wait_until(lambda: env.password_works(role, password, db), DRIFT_TIMEOUT, "the Secret's password reset on the role")
    assert not env.password_works(role, "changed-by-hand", db)
    assert env.secret("drift-db")["password"] == password
    env.wait_condition("drift", "Ready", "True", "Reconciled")
    # Each reset recorded the salt of its new verifier (the keys of the old one were refused, the password too).
    wait_until(lambda: env.must_get("drift")["status"]["scramSalts"] == {role: verifier_salt(env.server, role)},
               DRIFT_TIMEOUT, "the salt of the last reset recorded")
    assert verifier_salt(env.server, role) != first_salt


def test_dropped_database_is_recreated_with_a_warning(env: DbEnv, names: str) -> None:
    env.create(database("gone", names))
    env.wait_ready("gone")
    db, role = f"{names}_gone", f"{names}_gone_app"
    su(env.server, sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db)))

    message = env.wait_event("gone", "DatabaseRecreated", "Warning")
    assert "recreated EMPTY" in message
    assert owner_of(env, db) == role
    assert table_can_be_created(env.secret("gone-db")["DATABASE_URL"])


# --- the output Secret -----------------------------------------------------------------------------------------------


def test_the_secret_is_repaired_and_keys_added_by_others_are_kept(env: DbEnv, names: str) -> None:
    env.create(database("keys", names))
    env.wait_ready("keys")
    host = env.secret("keys-db")["host"]

    def encoded(value: str) -> str:
        return base64.b64encode(value.encode()).decode()

    # Someone adds a key (kubectl patch) and edits one of ours.
    env.core.patch_namespaced_secret("keys-db", env.namespace, {"data": {"added-by-someone": encoded("keep me"),
                                                                          "host": encoded("elsewhere.example")}})
    wait_until(lambda: env.secret("keys-db")["host"] == host, DRIFT_TIMEOUT, "our key put back")
    assert env.secret("keys-db")["added-by-someone"] == "keep me"

    # A rotation rewrites the Secret: the foreign key survives that too, and several drift passes.
    old = env.secret("keys-db")["password"]
    env.patch("keys", {"spec": {"password": {"rotationToken": "1"}}})
    wait_until(lambda: env.secret("keys-db")["password"] != old, DRIFT_TIMEOUT, "the rotated password in the Secret")
    wait_drift_passes(env, 1, 2)
    data = env.secret("keys-db")
    assert data["added-by-someone"] == "keep me"
    assert table_can_be_created(data["DATABASE_URL"])


# --- rotation --------------------------------------------------------------------------------------------------------


@pytest.fixture
def slow_drift_env(kube: client.ApiClient, namespace: str, pg15: PgTestServer, kubeconfig: Path, tmp_path: Path,
                   names: str) -> Iterator[DbEnv]:
    """Like `env`, but the operator's drift pass is far away (10 min): what happens comes from the watch handlers."""
    proc = OperatorProcess(kubeconfig, tmp_path / "operator.log", namespaces=(namespace,),
                           env={"AITBC_DRIFT_INTERVAL": "600"}).start()
    try:
        yield from make_env(kube, namespace, pg15.server, pg15.admin_login, proc, names)
    finally:
        proc.stop()


def rotation_time(env: DbEnv, name: str) -> str:
    return str(env.must_get(name)["status"]["lastRotationTime"])


def test_rotation_by_token_and_by_annotation(slow_drift_env: DbEnv, names: str) -> None:
    env = slow_drift_env
    env.create(database("rot", names))
    env.wait_ready("rot")
    db, role = f"{names}_rot", f"{names}_rot_app"

    def rotate(trigger: Obj, what: str) -> None:
        old_password, old_time = env.secret("rot-db")["password"], rotation_time(env, "rot")
        # lastRotationTime has second precision: let the clock pass the previous one so that it must move.
        next_second = datetime.fromisoformat(old_time.replace("Z", "+00:00")) + timedelta(seconds=1)
        wait_until(lambda: datetime.now(UTC) >= next_second, 3, "the next second")
        rotated_events = len([e for e in env.events("rot") if e[1] == "PasswordRotated"])
        env.patch("rot", trigger)
        wait_until(lambda: env.secret("rot-db")["password"] != old_password, DRIFT_TIMEOUT,
                   f"a new password in the Secret ({what})")
        new_password = env.secret("rot-db")["password"]
        # The Secret gets the new password first, the role a moment later.
        wait_until(lambda: env.password_works(role, new_password, db), DRIFT_TIMEOUT, f"the new password ({what})")
        assert not env.password_works(role, old_password, db)
        assert table_can_be_created(env.secret("rot-db")["DATABASE_URL"])
        wait_until(lambda: rotation_time(env, "rot") > old_time, DRIFT_TIMEOUT, "status.lastRotationTime to move")
        wait_until(lambda: len([e for e in env.events("rot") if e[1] == "PasswordRotated"]) > rotated_events,
                   DRIFT_TIMEOUT, f"a PasswordRotated Event ({what})")

    rotate({"spec": {"password": {"rotationToken": "2026-01"}}}, "spec.password.rotationToken")
    rotate({"metadata": {"annotations": {"aitbc.io/rotate-password": "now"}}}, "annotation")
    # No further rotation without a new request.
    password = env.secret("rot-db")["password"]
    env.patch("rot", {"metadata": {"labels": {"touched": "yes"}}})
    wait_until(lambda: env.must_get("rot")["status"]["observedRotationToken"] == "2026-01|now", 5,
               "the rotation token recorded")
    assert env.secret("rot-db")["password"] == password


def test_scheduled_rotation(env: DbEnv, names: str) -> None:
    """rotationPeriod: once the period has passed, the next drift pass (every 2 s here) rotates; not before."""
    env.create(database("sched", names, password={"rotationPeriod": "4s"}))
    env.wait_ready("sched")
    db, role = f"{names}_sched", f"{names}_sched_app"
    first_password, first_time = env.secret("sched-db")["password"], rotation_time(env, "sched")
    wait_until(lambda: env.secret("sched-db")["password"] != first_password, 20, "a scheduled rotation")
    # The Secret is written first, then the role, then status: wait for the status too.
    wait_until(lambda: rotation_time(env, "sched") != first_time, DRIFT_TIMEOUT, "status.lastRotationTime to move")
    rotated_at = datetime.fromisoformat(rotation_time(env, "sched").replace("Z", "+00:00"))
    created_at = datetime.fromisoformat(first_time.replace("Z", "+00:00"))
    assert rotated_at - created_at >= timedelta(seconds=4), "rotated before the period had passed"
    new_password = env.secret("sched-db")["password"]
    assert env.password_works(role, new_password, db)
    assert not env.password_works(role, first_password, db)
    assert "schedule" in env.wait_event("sched", "PasswordRotated")


# --- deletion --------------------------------------------------------------------------------------------------------


def test_deletion_retain_keeps_and_drop_drops(env: DbEnv, names: str) -> None:
    env.create(database("kept", names))  # deletionPolicy Retain is the default
    env.create(database("dropped", names, deletionPolicy="Drop"))
    env.wait_ready("kept", "dropped")
    kept_url = env.secret("kept-db")["DATABASE_URL"]
    dropped = env.secret("dropped-db")
    # An application connected to the database that is about to be dropped.
    session = sqlalchemy.create_engine(dropped["DATABASE_URL"], poolclass=sqlalchemy.pool.NullPool).connect()
    session.execute(sqlalchemy.text("SELECT 1"))

    env.delete("kept")
    env.delete("dropped")
    wait_until(lambda: env.get("kept") is None and env.get("dropped") is None, DRIFT_TIMEOUT, "both resources gone")
    assert f"{names}_kept" in databases(env.server, names)
    assert f"{names}_kept_app" in roles(env.server, names)
    assert table_can_be_created(kept_url), "Retain: the database and the role keep working"
    assert f"{names}_dropped" not in databases(env.server, names)
    assert f"{names}_dropped_app" not in roles(env.server, names)
    with pytest.raises(sqlalchemy.exc.OperationalError):
        session.execute(sqlalchemy.text("SELECT 1"))  # terminated by the drop
    session.invalidate()
    # The Secrets go with their owners (garbage collector).
    wait_until(lambda: env.secret_object("kept-db") is None and env.secret_object("dropped-db") is None,
               DRIFT_TIMEOUT, "the Secrets garbage-collected")


def test_drop_is_refused_while_another_resource_uses_the_names(env: DbEnv, names: str) -> None:
    env.create(database("first", names, deletionPolicy="Drop"))
    env.wait_ready("first")
    # A second resource for the same database (another role): refused, it claims what the first one owns.
    env.create(make_database("second", databaseName=f"{names}_first", roleName=f"{names}_second_app",
                             deletionPolicy="Drop"))
    env.wait_condition("second", "Degraded", "True", "NameConflict")
    assert env.condition("second", "Ready") == ("False", "NameConflict")

    env.delete("first")
    env.wait_condition("first", "Degraded", "True", "DropRefused")
    message = env.wait_event("first", "DeletionBlocked", "Warning")
    assert f"{env.namespace}/second" in message
    assert "aitbc.io/finalizer" in env.must_get("first")["metadata"]["finalizers"]
    assert f"{names}_first" in databases(env.server, names)
    assert table_can_be_created(env.secret("first-db")["DATABASE_URL"]), "nothing was dropped"

    env.delete("second")  # it never created anything: released at once, nothing dropped
    wait_until(lambda: env.get("second") is None, DRIFT_TIMEOUT, "the second resource gone")
    # The refused drop is retried (at the drift interval here) and now goes through.
    wait_until(lambda: env.get("first") is None, DRIFT_TIMEOUT, "the first resource dropped and gone")
    assert f"{names}_first" not in databases(env.server, names)
    assert roles(env.server, names) == {}


# --- the server goes away and comes back -----------------------------------------------------------------------------


@pytest.fixture
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostgresServer, LoginInfo]]:
    """A PostgreSQL 15 server of this test alone (it is stopped and started; the shared one must not be)."""
    bin_dir = find_debian_bin_dir("15")
    if bin_dir is None:
        pytest.skip("no PostgreSQL 15 server binaries")
    server = PostgresServer(bin_dir, name="pg-down-up")
    try:
        server.start()
        yield server, server.create_admin(ADMIN, "admin-" + base64.b32encode(os.urandom(10)).decode().lower())
    finally:
        server.cleanup(keep_logs_in=tmp_path_factory.getbasetemp() / "postgres-logs")


def test_server_down_then_up(kube: client.ApiClient, namespace: str, operator: OperatorProcess,
                             own_server: tuple[PostgresServer, LoginInfo], names: str) -> None:
    server, admin = own_server
    for env in make_env(kube, namespace, server, admin, operator, names):
        env.create(database("app", names))
        env.wait_ready("app")
        version = env.must_get("app")["metadata"]["resourceVersion"]

        server.stop()
        env.wait_condition("app", "Degraded", "True", "ServerUnreachable")
        assert env.condition("app", "Ready") == ("False", "ServerUnreachable")
        assert env.must_get("app")["metadata"]["resourceVersion"] != version

        server.start()
        env.wait_condition("app", "Ready", "True", "Reconciled")
        assert env.condition("app", "Degraded") == ("False", "Reconciled")
        assert table_can_be_created(env.secret("app-db")["DATABASE_URL"])


# --- restart ---------------------------------------------------------------------------------------------------------


def role_sessions(server: PostgresServer, database_name: str) -> int:
    """Sessions ever established to ``database_name`` (pg_stat_database; flushed when a session ends)."""
    with server.superuser() as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (database_name,)).fetchone()
    return int(row[0]) if row else 0


def test_a_restart_resumes_without_logging_in_as_the_role_and_the_drift_check_does(
    kube: client.ApiClient, namespace: str, pg15: PgTestServer, kubeconfig: Path, tmp_path: Path, names: str
) -> None:
    """A restarted operator converges every AitbcDatabase without a session as its role (no backend per resource);
    the password is checked by the drift check, whose login the same count shows."""
    first = OperatorProcess(kubeconfig, tmp_path / "first.log", namespaces=(namespace,),
                            env={"AITBC_DRIFT_INTERVAL": "600"}).start()
    envs = make_env(kube, namespace, pg15.server, pg15.admin_login, first, names)
    env = next(envs)
    try:
        env.create(database("resume", names))
        env.wait_ready("resume")
        first.stop()
        dbname = f"{names}_resume"
        before = role_sessions(pg15.server, dbname)

        with restarted(kubeconfig, tmp_path / "second.log", namespace, drift="600") as second:
            wait_until(lambda: reconciles_ok(second) >= 1, READY_TIMEOUT, "the resume")
        time.sleep(1.5)  # statistics of ended sessions are flushed within a second
        assert role_sessions(pg15.server, dbname) == before

        with restarted(kubeconfig, tmp_path / "third.log", namespace, drift="2") as third:
            wait_until(lambda: reconciles_ok(third) >= 2, READY_TIMEOUT, "the resume and a drift check")
        wait_until(lambda: role_sessions(pg15.server, dbname) > before, 10, "the drift check's login counted")
    finally:
        envs.close()  # make_env's cleanup: finalizers released, the test's names dropped


@contextmanager
def restarted(kubeconfig: Path, log: Path, namespace: str, *, drift: str) -> Iterator[OperatorProcess]:
    """A fresh operator process with drift interval ``drift``, stopped after the block."""
    proc = OperatorProcess(kubeconfig, log, namespaces=(namespace,), env={"AITBC_DRIFT_INTERVAL": drift}).start()
    try:
        yield proc
    finally:
        proc.stop()
