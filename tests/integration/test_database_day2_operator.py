"""AitbcDatabase day-2 through the real operator (subprocess) against the local control plane (kwok nodes) and a real
PostgreSQL 15 with a NON-superuser admin: consumers rolled once per Secret change (none on an operator restart),
AlternatingRoles, the read-only Secret, Secret templates, extensions refused before anything is made, the backup
CronJob and the on-demand Job. What runs inside the Jobs is tested on the real node (tests/e2e)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aitbc_operator.builders.database_backup import cron_job_name, on_demand_job_name
from aitbc_operator.reconcilers.database_consumers import annotation_key
from tests.cluster.fixtures import wait_until
from tests.integration.test_database_operator import DbEnv, database, make_env, reconciles_ok
from tests.operator_fixtures import OperatorProcess
from tests.pg.fixtures import PgTestServer
from tests.pg.inspect import login_error, roles

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]
TIMEOUT = 30.0
Obj = dict[str, Any]


@pytest.fixture
def env(kube: client.ApiClient, namespace: str, pg15: PgTestServer, operator: OperatorProcess,
        names: str) -> Iterator[DbEnv]:
    yield from make_env(kube, namespace, pg15.server, pg15.admin_login, operator, names)


def deployment(name: str, labels: dict[str, str] | None = None, replicas: int = 1) -> Obj:
    """A consumer: a Deployment reading the Secret through envFrom (kwok runs its pods, Ready at once)."""
    match = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": {**match, **(labels or {})}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": match},
                     "template": {"metadata": {"labels": match}, "spec": {
                         "containers": [{"name": "app", "image": "ghcr.io/aitbc/exchange:1.0",
                                         "envFrom": [{"secretRef": {"name": "ex-db"}}]}]}}}}


def apps(env: DbEnv) -> client.AppsV1Api:
    return client.AppsV1Api(env.api)


def template_hash(env: DbEnv, name: str, resource: str) -> tuple[str | None, int]:
    """The stamped hash on a Deployment's pod template and its generation."""
    dep = apps(env).read_namespaced_deployment(name, env.namespace)
    annotations = dep.spec.template.metadata.annotations or {}
    return annotations.get(annotation_key(resource)), int(dep.metadata.generation)


def all_consumers_current(env: DbEnv, name: str, count: int) -> bool:
    """``count`` consumers found, every one current."""
    consumers = [c for c in (env.must_get(name).get("status") or {}).get("consumers") or [] if c.get("found", True)]
    return len(consumers) == count and all(c.get("current") for c in consumers)


def test_consumers_roll_once_per_secret_change_and_never_on_an_operator_restart(env: DbEnv, names: str) -> None:
    apps(env).create_namespaced_deployment(env.namespace, deployment("api"))
    apps(env).create_namespaced_deployment(env.namespace, deployment("worker", {"tier": "exchange"}))
    apps(env).create_namespaced_deployment(env.namespace, deployment("unrelated"))
    env.create(database("ex", names, service="exchange", secret={"name": "ex-db"}, consumers=[
        {"kind": "Deployment", "name": "api"},
        {"kind": "Deployment", "selector": {"matchLabels": {"tier": "exchange"}}},
        {"kind": "Deployment", "name": "missing"},
    ]))
    env.wait_ready("ex")
    wait_until(lambda: all_consumers_current(env, "ex", 2), TIMEOUT, "both consumers current")
    first = {n: template_hash(env, n, "ex") for n in ("api", "worker")}
    digest = env.must_get("ex")["status"]["secretHash"]
    assert {h for h, _ in first.values()} == {digest}
    assert template_hash(env, "unrelated", "ex")[0] is None, "only the listed consumers are stamped"
    assert digest not in str(env.secret("ex-db")), "the hash is not the Secret's content"
    statuses = {c["name"]: c for c in env.must_get("ex")["status"]["consumers"]}
    assert statuses["missing"]["found"] is False

    env.patch("ex", {"metadata": {"annotations": {"aitbc.io/rotate-password": "one"}}})
    wait_until(lambda: env.must_get("ex")["status"]["secretHash"] != digest, TIMEOUT, "the Secret rotated")
    rotated = env.must_get("ex")["status"]["secretHash"]
    wait_until(lambda: all_consumers_current(env, "ex", 2), TIMEOUT, "the consumers rolled to the new Secret")
    second = {n: template_hash(env, n, "ex") for n in ("api", "worker")}
    for n in second:
        assert second[n] == (rotated, first[n][1] + 1), f"{n}: exactly one template write for the change"
    env.wait_event("ex", "ConsumersRolled")

    # Several drift passes and an operator restart: no template write at all (Reloader's restart storm).
    target = reconciles_ok(env.operator) + 3
    wait_until(lambda: reconciles_ok(env.operator) >= target, 20, "three drift passes")
    env.operator.stop()
    env.operator.start()
    wait_until(lambda: reconciles_ok(env.operator) >= 3, 30, "drift passes after the restart")
    assert {n: template_hash(env, n, "ex") for n in ("api", "worker")} == second


def app_url(env: DbEnv, secret: str = "alt-db") -> str:
    return env.secret(secret)["DATABASE_URL"]


def connects(url: str) -> bool:
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return True
    except sqlalchemy.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def test_alternating_roles_switch_the_secret_and_retire_the_old_login_once_consumers_rolled(
        env: DbEnv, names: str) -> None:
    apps(env).create_namespaced_deployment(env.namespace, deployment("api"))
    env.create(database("alt", names, service="exchange", secret={"name": "alt-db"},
                        password={"rotationStrategy": "AlternatingRoles", "gracePeriod": "1h"},
                        consumers=[{"kind": "Deployment", "name": "api"}]))
    env.wait_ready("alt")
    role = f"{names}_alt_app"
    before = env.secret("alt-db")
    assert before["username"] == f"{role}_a"
    assert not roles(env.server, names)[role].can_login, "the owner role does not log in"
    assert connects(before["DATABASE_URL"])

    # Hold the consumer back: its rollout cannot complete while it is paused, so the old login must keep working.
    apps(env).patch_namespaced_deployment("api", env.namespace, {"spec": {"paused": True}})
    env.patch("alt", {"spec": {"password": {"rotationToken": "r1"}}})
    wait_until(lambda: env.secret("alt-db")["username"] == f"{role}_b", TIMEOUT, "the Secret switched to _b")
    after = env.secret("alt-db")
    assert connects(after["DATABASE_URL"])
    status = env.must_get("alt")["status"]["rotation"]
    assert status["phase"] == "Switched"
    assert status["previousLogin"] == f"{role}_a"
    target = reconciles_ok(env.operator) + 3
    wait_until(lambda: reconciles_ok(env.operator) >= target, 20, "three passes")
    assert connects(before["DATABASE_URL"]), "the old Secret still works while a consumer has not rolled"

    apps(env).patch_namespaced_deployment("api", env.namespace, {"spec": {"paused": False}})
    wait_until(lambda: env.must_get("alt")["status"]["rotation"]["phase"] == "Idle", TIMEOUT, "the switch done")
    assert not connects(before["DATABASE_URL"]), "the retired login's password is gone"
    assert connects(env.secret("alt-db")["DATABASE_URL"])
    env.wait_event("alt", "LoginRetired")


def test_a_rotation_asked_for_mid_switch_waits_for_it(env: DbEnv, names: str) -> None:
    env.create(database("alt", names, service="exchange", secret={"name": "alt-db"},
                        password={"rotationStrategy": "AlternatingRoles", "gracePeriod": "3s"}))
    env.wait_ready("alt")
    env.patch("alt", {"spec": {"password": {"rotationToken": "r1"}}})
    wait_until(lambda: env.secret("alt-db")["username"].endswith("_b"), TIMEOUT, "switched to _b")
    env.patch("alt", {"spec": {"password": {"rotationToken": "r2"}}})
    # The second switch only happens after the first one's grace period retired _a.
    wait_until(lambda: env.secret("alt-db")["username"].endswith("_a"), TIMEOUT, "switched back to _a")
    wait_until(lambda: env.must_get("alt")["status"].get("observedRotationToken", "").startswith("r2"), TIMEOUT,
               "r2 observed")
    assert connects(app_url(env))


def test_read_only_secret_templates_and_the_read_only_role(env: DbEnv, names: str) -> None:
    templates = {
        "ASYNC_URL": "postgresql+asyncpg://{{ .user | urlescape }}:{{ .password | urlescape }}@{{ .host }}:"
                     "{{ .port }}/{{ .database }}",
        "PSYCOPG_URL": "postgresql+psycopg://{{ .user | urlescape }}:{{ .password | urlescape }}@{{ .host }}:"
                       "{{ .port }}/{{ .database }}?sslmode={{ .sslmode }}",
        "PGPASS": "{{ .host | pgpass }}:{{ .port }}:{{ .database | pgpass }}:{{ .user | pgpass }}:"
                  "{{ .password | pgpass }}",
    }
    env.create(database("ro", names, service="wallet", readOnly={"enabled": True}, secret={"templates": templates},
                        schemas=[{"name": "ledger"}]))
    env.wait_ready("ro")
    main, ro = env.secret("ro-db"), env.secret("ro-db-readonly")
    assert ro["username"] == f"{names}_ro_app_ro"
    assert ro["password"] != main["password"]
    assert set(main) - {"WALLET_DATABASE_URL"} <= set(ro) | {"WALLET_DATABASE_URL"}
    for data in (main, ro):  # the templates name exactly what SQLAlchemy's URL names (encodings may differ: '+')
        for key in ("PSYCOPG_URL", "ASYNC_URL"):
            url = sqlalchemy.engine.make_url(data[key])
            assert (url.username, url.password, url.host, url.port, url.database) == (
                data["username"], data["password"], data["host"], int(data["port"]), data["database"])
        assert data["PGPASS"].endswith(data["password"].replace("\\", "\\\\").replace(":", "\\:"))
    engine = sqlalchemy.create_engine(main["DATABASE_URL"])
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE ledger.entries (id int)")
        conn.exec_driver_sql("INSERT INTO ledger.entries VALUES (5)")
    engine.dispose()
    engine = sqlalchemy.create_engine(ro["PSYCOPG_URL"])
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT id FROM ledger.entries").all() == [(5,)]
        with pytest.raises(sqlalchemy.exc.ProgrammingError):
            conn.exec_driver_sql("INSERT INTO ledger.entries VALUES (6)")
    engine.dispose()
    status = env.must_get("ro")["status"]["readOnly"]
    assert status == {"roleName": f"{names}_ro_app_ro", "secretName": "ro-db-readonly", "login": True}
    # Rotated with the main role.
    env.patch("ro", {"spec": {"password": {"rotationToken": "x"}}})
    wait_until(lambda: env.secret("ro-db-readonly")["password"] != ro["password"], TIMEOUT, "read-only rotated")
    new_ro = env.secret("ro-db-readonly")
    wait_until(lambda: login_error(env.server, new_ro["username"], new_ro["password"], new_ro["database"]) is None,
               TIMEOUT, "the new read-only password works")


def test_an_untrusted_extension_is_degraded_and_nothing_is_made(env: DbEnv, names: str) -> None:
    env.create(database("ext", names, extensions=[{"name": "file_fdw"}]))
    env.wait_condition("ext", "Degraded", "True", "InsufficientPrivilege")
    assert "file_fdw is not trusted" in env.message("ext", "Degraded")
    assert roles(env.server, names) == {}
    assert env.secret_object("ext-db") is None, "refused before the Secret is written"


def test_backup_cron_job_and_one_on_demand_job_per_token(env: DbEnv, names: str) -> None:
    env.create(database("bk", names, backup={"schedule": "0 3 * * *", "keep": 3, "claimName": "dumps"}))
    env.wait_ready("bk")
    batch = client.BatchV1Api(env.api)
    cron = batch.read_namespaced_cron_job(cron_job_name("bk"), env.namespace)
    assert cron.spec.concurrency_policy == "Forbid"
    assert cron.spec.time_zone == "Etc/UTC"
    assert cron.spec.starting_deadline_seconds == 600
    assert cron.spec.suspend is False
    pod = cron.spec.job_template.spec.template.spec
    container = pod.containers[0]
    assert container.image == "docker.io/library/postgres:15", "the official image of the server's major"
    refs = {e.name: (e.value_from.secret_key_ref.name, e.value_from.secret_key_ref.key) for e in container.env
            if e.value_from}
    assert refs["PGPASSWORD"] == ("bk-db", "password"), "the database's own role, never the admin"
    assert "postgres-admin" not in str(cron.to_dict())
    assert pod.volumes[0].persistent_volume_claim.claim_name == "dumps"
    assert env.must_get("bk")["status"]["backup"]["nextScheduleTime"].endswith("03:00:00Z")

    env.patch("bk", {"metadata": {"annotations": {"aitbc.io/backup-now": "t1"}}})
    job_name = on_demand_job_name("bk", "t1")
    wait_until(lambda: _job(env, job_name) is not None, TIMEOUT, "the on-demand Job")
    uid = _job(env, job_name)["metadata"]["uid"]  # type: ignore[index]
    # A lost status write (the token not recorded) and an operator restart do not make a second Job.
    obj = env.must_get("bk")
    status = copy.deepcopy(obj["status"])
    status["backup"].pop("observedOnDemandToken")
    env.crs.patch_namespaced_custom_object_status("aitbc.io", "v1alpha1", env.namespace, "aitbcdatabases", "bk",
                                                  {"status": {"backup": {"observedOnDemandToken": None}}})
    env.operator.stop()
    env.operator.start()
    wait_until(lambda: (env.must_get("bk")["status"]["backup"].get("observedOnDemandToken") == "t1"), TIMEOUT,
               "the token observed again")
    jobs = batch.list_namespaced_job(env.namespace, label_selector="aitbc.io/dump-trigger=on-demand").items
    assert [(j.metadata.name, j.metadata.uid) for j in jobs] == [(job_name, uid)]

    env.patch("bk", {"spec": {"backup": None}})
    wait_until(lambda: _cron(env, cron_job_name("bk")) is None, TIMEOUT, "the CronJob removed with spec.backup")


def _job(env: DbEnv, name: str) -> Obj | None:
    try:
        return dict(client.BatchV1Api(env.api).read_namespaced_job(name, env.namespace).to_dict())
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _cron(env: DbEnv, name: str) -> Obj | None:
    try:
        return dict(client.BatchV1Api(env.api).read_namespaced_cron_job(name, env.namespace).to_dict())
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
