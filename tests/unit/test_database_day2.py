"""Pure day-2 decisions of AitbcDatabase, table-tested with a frozen clock: the AlternatingRoles transitions, the
consumers' stamps and rollout state, Secret templates (grammar and percent-encoding), the in-database plan, the
models' refusals (InvalidSpec), the Job report parser."""

from __future__ import annotations

import re
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy
from pydantic import ValidationError

from aitbc_operator.builders.database import connection_secret_data, secret_hash
from aitbc_operator.builders.database_backup import bounded_name, default_image, on_demand_job_name, server_major
from aitbc_operator.builders.secret_templates import pgpass_escape, render, urlescape
from aitbc_operator.errors import InsufficientPrivilege, InvalidSpec, NameConflict
from aitbc_operator.models.database import (
    AitbcDatabaseSpec,
    AitbcDatabaseStatus,
    ConsumerKind,
    RotationPhase,
    RotationStatus,
)
from aitbc_operator.models.secret_templates import TEMPLATE_PATTERN, check_template
from aitbc_operator.postgres.contents import (
    EMPTY,
    Availability,
    ContentsState,
    ExtensionVersion,
    ReadOnlyState,
    check_available,
    plan_contents,
)
from aitbc_operator.postgres.plan import Action, AdminState, DesiredDatabase, DesiredExtension, DesiredSchema
from aitbc_operator.reconcilers.database_backup import cron_job_may_exist, parse_report
from aitbc_operator.reconcilers.database_consumers import (
    Consumer,
    all_current,
    annotation_key,
    consumer_status,
    rollout_complete,
    stamp_patch,
)
from aitbc_operator.reconcilers.database_policy import Rotation, choose_login
from tests.factories import database_spec

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LOGINS = ("app_a", "app_b")
GRACE = timedelta(minutes=15)
HOSTILE = "p@ss:w/o?r#d%'\"\\+ x"

# --- AlternatingRoles ---------------------------------------------------------------------------------------------

SWITCHED = RotationStatus(phase=RotationPhase.SWITCHED, active_login="app_b", previous_login="app_a",
                          switched_at=NOW - timedelta(minutes=1))


@pytest.mark.parametrize(("status", "user", "rotation", "current", "now", "expect"), [
    # first creation: the Secret gets _a
    (None, None, Rotation.INITIAL, False, NOW, ("app_a", False, None, RotationPhase.IDLE, False)),
    # steady: whoever the Secret names stays active
    (RotationStatus(active_login="app_b"), "app_b", None, False, NOW, ("app_b", False, None, RotationPhase.IDLE,
                                                                        False)),
    # a rotation switches to the other login
    (RotationStatus(active_login="app_a"), "app_a", Rotation.TOKEN, False, NOW,
     ("app_b", True, None, RotationPhase.SWITCHED, False)),
    (RotationStatus(active_login="app_b"), "app_b", Rotation.SCHEDULE, False, NOW,
     ("app_a", True, None, RotationPhase.SWITCHED, False)),
    # switched, consumers not rolled, grace not over: wait (and a new rotation is postponed)
    (SWITCHED, "app_b", None, False, NOW, ("app_b", False, None, RotationPhase.SWITCHED, False)),
    (SWITCHED, "app_b", Rotation.TOKEN, False, NOW, ("app_b", False, None, RotationPhase.SWITCHED, True)),
    # consumers rolled: retire the previous login
    (SWITCHED, "app_b", None, True, NOW, ("app_b", False, "app_a", RotationPhase.IDLE, False)),
    # the grace period is over: retire even though a consumer did not roll
    (SWITCHED, "app_b", None, False, NOW + GRACE, ("app_b", False, "app_a", RotationPhase.IDLE, False)),
    # retiring and a rotation pending: one transition per reconcile, the rotation waits for the next
    (SWITCHED, "app_b", Rotation.TOKEN, True, NOW, ("app_b", False, "app_a", RotationPhase.IDLE, True)),
    # a Secret naming something else (edited by hand): back to _a
    (None, "someone", None, False, NOW, ("app_a", False, None, RotationPhase.IDLE, False)),
    # the Secret deleted while _b was in use: _b gets the new password (_a has none to keep)
    (RotationStatus(active_login="app_b"), None, Rotation.LOST, False, NOW,
     ("app_b", False, None, RotationPhase.IDLE, False)),
])
def test_choose_login(status: RotationStatus | None, user: str | None, rotation: Rotation | None, current: bool,
                      now: datetime, expect: tuple[str, bool, str | None, RotationPhase, bool]) -> None:
    choice = choose_login(LOGINS, status, user, rotation, consumers_current=current, grace=GRACE, now=now)
    assert (choice.active, choice.switch, choice.retire, choice.status.phase, choice.postponed) == expect
    if choice.switch:
        assert choice.status.previous_login == user
        assert choice.status.switched_at == now


# --- consumers ----------------------------------------------------------------------------------------------------

KEY = annotation_key("exchange")


def workload(kind: ConsumerKind, stamp: str | None, *, generation: int = 2, observed: int = 2, **status: Any) -> dict[
        str, Any]:
    annotations = {KEY: stamp} if stamp else {}
    return {"metadata": {"name": "w", "generation": generation},
            "spec": {"replicas": 2, "template": {"metadata": {"annotations": annotations}}},
            "status": {"observedGeneration": observed, **status}}


DONE = {"replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "readyReplicas": 2,
        "currentRevision": "r2", "updateRevision": "r2"}


@pytest.mark.parametrize(("obj", "complete"), [
    (workload(ConsumerKind.DEPLOYMENT, "h", **DONE), True),
    (workload(ConsumerKind.DEPLOYMENT, "h", observed=1, **DONE), False),  # the controller has not seen it yet
    (workload(ConsumerKind.DEPLOYMENT, "h", **{**DONE, "replicas": 3}), False),  # an old pod is left
    (workload(ConsumerKind.DEPLOYMENT, "h", **{**DONE, "availableReplicas": 1}), False),
])
def test_deployment_rollout_complete(obj: dict[str, Any], complete: bool) -> None:
    assert rollout_complete(ConsumerKind.DEPLOYMENT, obj) is complete


def test_statefulset_rollout_needs_the_current_revision() -> None:
    assert rollout_complete(ConsumerKind.STATEFULSET, workload(ConsumerKind.STATEFULSET, "h", **DONE))
    behind = workload(ConsumerKind.STATEFULSET, "h", **{**DONE, "currentRevision": "r1"})
    assert not rollout_complete(ConsumerKind.STATEFULSET, behind)


def test_a_consumer_is_current_only_on_the_current_hash_and_rolled_out() -> None:
    rolled = Consumer(ConsumerKind.DEPLOYMENT, "w", workload(ConsumerKind.DEPLOYMENT, "new", **DONE))
    stale = Consumer(ConsumerKind.DEPLOYMENT, "w", workload(ConsumerKind.DEPLOYMENT, "old", **DONE))
    missing = Consumer(ConsumerKind.DEPLOYMENT, "gone", None)
    statuses = [consumer_status(c, KEY, "new") for c in (rolled, missing)]
    assert [(s.current, s.found) for s in statuses] == [(True, True), (False, False)]
    assert all_current(statuses), "a missing consumer does not hold a rotation forever"
    assert not all_current([consumer_status(stale, KEY, "new")])
    assert not all_current([consumer_status(missing, KEY, "new")]), "no consumer at all: the grace period decides"


def test_the_stamp_is_the_hash_alone_and_the_key_fits_an_annotation() -> None:
    assert stamp_patch(KEY, "abc") == {"spec": {"template": {"metadata": {"annotations": {KEY: "abc"}}}}}
    long = annotation_key("x" * 253)
    prefix, name = long.split("/")
    assert prefix == "aitbc.io"
    assert len(name) <= 63
    assert re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", name)
    assert annotation_key("x" * 253) != annotation_key("x" * 252)


def test_the_secret_hash_is_canonical_and_changes_with_the_password() -> None:
    spec = AitbcDatabaseSpec.model_validate(database_spec())
    one = connection_secret_data(spec, server_host="h", server_port=5432, password="a" * 20)
    assert secret_hash(one) == secret_hash(dict(reversed(list(one.items()))))
    two = connection_secret_data(spec, server_host="h", server_port=5432, password="b" * 20)
    assert secret_hash(one) != secret_hash(two)
    assert "a" * 20 not in secret_hash(one)


# --- Secret templates ---------------------------------------------------------------------------------------------

VALUES = {"user": "app", "password": HOSTILE, "host": "db.example", "port": "5432", "database": "shop",
          "sslmode": "require"}


def test_urlescape_round_trips_every_hostile_character() -> None:
    escaped = urlescape(HOSTILE)
    assert re.fullmatch(r"[A-Za-z0-9._~%-]+", escaped), escaped
    assert urllib.parse.unquote(escaped) == HOSTILE


def test_rendered_urls_parse_back_to_the_password() -> None:
    url = render("postgresql+asyncpg://{{ .user | urlescape }}:{{.password|urlescape}}@{{ .host }}:{{ .port }}/"
                 "{{ .database }}", VALUES)
    parsed = sqlalchemy.engine.make_url(url)
    assert (parsed.username, parsed.password, parsed.host, parsed.port, parsed.database) == (
        "app", HOSTILE, "db.example", 5432, "shop")
    jdbc = render("jdbc:postgresql://{{ .host }}:{{ .port }}/{{ .database }}?user={{ .user | urlescape }}"
                  "&password={{ .password | urlescape }}&sslmode={{ .sslmode }}", VALUES)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(jdbc.removeprefix("jdbc:")).query)
    assert query == {"user": ["app"], "password": [HOSTILE], "sslmode": ["require"]}


def test_pgpass_escapes_backslash_and_colon_only() -> None:
    line = render("{{ .host | pgpass }}:{{ .port }}:{{ .database | pgpass }}:{{ .user | pgpass }}:"
                  "{{ .password | pgpass }}", VALUES)
    assert line == "db.example:5432:shop:app:" + HOSTILE.replace("\\", "\\\\").replace(":", "\\:")
    fields = re.split(r"(?<!\\):", line)
    assert len(fields) == 5
    assert pgpass_escape("a\\:b") == "a\\\\\\:b"


@pytest.mark.parametrize("template", [
    "{{ .secret }}", "{{ .password | base64 }}", "{{ password }}", "{{ .user }", "{ .user }}", "x { y",
    "{{ .user }}}", "{{{ .user }}", "{{ .user | urlescape | pgpass }}",
])
def test_invalid_templates_are_refused_by_the_same_pattern_as_the_crd(template: str) -> None:
    assert re.fullmatch(TEMPLATE_PATTERN, template) is None
    with pytest.raises(ValueError, match="may only use"):
        check_template("KEY", template)
    with pytest.raises(ValidationError):
        AitbcDatabaseSpec.model_validate(database_spec(secret={"templates": {"KEY": template}}))


def test_template_keys_the_operator_writes_are_refused() -> None:
    with pytest.raises(ValidationError, match="a key the operator writes"):
        AitbcDatabaseSpec.model_validate(database_spec(secret={"templates": {"DATABASE_URL": "{{ .host }}"}}))


def test_templates_follow_the_login_of_the_secret() -> None:
    spec = AitbcDatabaseSpec.model_validate(database_spec(password={"rotationStrategy": "AlternatingRoles"},
                                                          secret={"templates": {"WHO": "{{ .user }}"}}))
    data = connection_secret_data(spec, server_host="h", server_port=1, password="x" * 20, username="aitbc_mempool_b")
    assert data["WHO"] == data["username"] == "aitbc_mempool_b"
    assert data["DATABASE_URL"].startswith("postgresql+psycopg://aitbc_mempool_b:")


# --- the models' own refusals -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "match"), [
    ({"consumers": [{"kind": "Deployment"}]}, "exactly one of name or selector"),
    ({"consumers": [{"kind": "Deployment", "selector": {"matchLabels": {"app": "bad value!"}}}]}, "not a valid label"),
    ({"backup": {"schedule": "61 * * * *", "claimName": "d"}}, "not a cron schedule"),
    ({"readOnly": {"enabled": True, "roleName": "aitbc_mempool"}}, "must differ"),
    ({"readOnly": {"enabled": True}, "roleName": "r" * 61}, "63 bytes"),
    ({"readOnly": {"enabled": True, "secretName": "same"}, "secret": {"name": "same"}}, "must differ"),
    ({"schemas": [{"name": "information_schema"}]}, "reserved"),
])
def test_specs_the_operator_refuses(spec: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        AitbcDatabaseSpec.model_validate(database_spec(**spec))


# --- inside the database ------------------------------------------------------------------------------------------

WANT = DesiredDatabase(database="shop", role="app", owner="ns/x", read_only="app_ro",
                       extensions=(DesiredExtension("citext"), DesiredExtension("hstore", present=False)),
                       schemas=(DesiredSchema("ledger"), DesiredSchema("old", present=False)))
OFFERED = Availability({"citext": "1.6", "file_fdw": "1.0"},
                       {"citext": {"1.6": ExtensionVersion("1.6", True, True)},
                        "file_fdw": {"1.0": ExtensionVersion("1.0", True, False)}})
ADMIN = AdminState("admin")


def test_a_fresh_database_gets_schemas_extensions_then_the_read_only_grants() -> None:
    steps = plan_contents(EMPTY, WANT)
    assert [s.action for s in steps] == [Action.CREATE_SCHEMA, Action.CREATE_EXTENSION, Action.GRANT_CONNECT,
                                         Action.GRANT_USAGE, Action.GRANT_USAGE, Action.DEFAULT_PRIVILEGES]
    assert [s.target for s in steps if s.action is Action.GRANT_USAGE] == ["ledger", "public"]
    assert not any(s.drift for s in steps)


def test_in_sync_plans_nothing_and_drift_is_marked() -> None:
    ro = ReadOnlyState(True, frozenset({"public", "ledger"}), frozenset(), True)
    synced = ContentsState({"citext": ("1.6", "app")}, {"public": "pg_database_owner", "ledger": "app"}, ro)
    assert plan_contents(synced, WANT) == ()
    revoked = ContentsState(synced.extensions, synced.schemas,
                            ReadOnlyState(True, frozenset({"public", "ledger"}), frozenset({"ledger"}), True))
    steps = plan_contents(revoked, WANT)
    assert [(s.action, s.target, s.drift) for s in steps] == [(Action.GRANT_SELECT, "ledger", True)]


def test_what_the_owner_does_not_own_is_not_changed() -> None:
    theirs = ContentsState({}, {"public": "pg_database_owner", "old": "postgres"})
    with pytest.raises(NameConflict, match="owned by postgres"):
        plan_contents(theirs, WANT)
    foreign_ext = ContentsState({"hstore": ("1.8", "postgres")}, {"public": "pg_database_owner"})
    with pytest.raises(NameConflict, match="belongs to postgres"):
        plan_contents(foreign_ext, DesiredDatabase(database="shop", role="app", owner="ns/x",
                                                   extensions=(DesiredExtension("hstore", present=False),)))
    # present and installed by someone else, no version asked: left alone
    assert plan_contents(foreign_ext, DesiredDatabase(database="shop", role="app", owner="ns/x",
                                                      extensions=(DesiredExtension("hstore"),))) == ()


def test_extension_checks_come_before_anything() -> None:
    check_available(OFFERED, ADMIN, WANT, {})
    untrusted = DesiredDatabase(database="shop", role="app", owner="ns/x", extensions=(DesiredExtension("file_fdw"),))
    with pytest.raises(InsufficientPrivilege, match="not trusted"):
        check_available(OFFERED, ADMIN, untrusted, {})
    check_available(OFFERED, ADMIN, untrusted, {"file_fdw": ("1.0", "postgres")})  # a superuser made it: fine
    check_available(OFFERED, AdminState("su", superuser=True), untrusted, {})
    with pytest.raises(InvalidSpec, match="not available"):
        check_available(OFFERED, ADMIN, DesiredDatabase(database="shop", role="app", owner="ns/x",
                                                        extensions=(DesiredExtension("nope"),)), {})


# --- Jobs ---------------------------------------------------------------------------------------------------------

def test_the_report_parser_reads_the_scripts_last_line_and_nothing_else() -> None:
    line = '{"ok":true,"action":"dump","file":"d-20261201T000000Z.dump","sizeBytes":12,"entries":3,"removed":0,' \
           '"pgDumpMajor":15}'
    report = parse_report("some log\n" + line)
    assert report is not None
    assert (report.ok, report.file, report.size_bytes, report.pg_dump_major) == (True, "d-20261201T000000Z.dump",
                                                                                 12, 15)
    assert parse_report("Traceback ... not json") is None
    assert parse_report("") is None


def test_names_are_bounded_and_stable() -> None:
    assert bounded_name("mempool", "backup", 52) == "mempool-backup"
    long = bounded_name("m" * 100, "backup", 52)
    assert len(long) <= 52
    assert long.endswith("-backup")
    assert on_demand_job_name("x", "t1") == on_demand_job_name("x", "t1") != on_demand_job_name("x", "t2")
    assert len(on_demand_job_name("y" * 253, "t")) <= 63
    assert server_major("15.8") == 15
    assert server_major("18.1 (Debian 18.1-1)") == 18
    assert default_image("18.1") == "docker.io/library/postgres:18"


def test_status_writes_remove_nested_keys_a_merge_patch_would_keep() -> None:
    from aitbc_operator.reconcilers.database import with_removals

    current = {"restore": {"name": "old", "phase": "Failed", "error": "x", "held": [{"name": "a"}]},
               "backup": {"lastJob": "j"}, "rotation": {"phase": "Idle"}}
    desired = {"restore": {"name": "new", "phase": "Verifying"}, "backup": {"lastJob": "j"}}
    assert with_removals(current, desired) == {
        "restore": {"name": "new", "phase": "Verifying", "error": None, "held": None},
        "backup": {"lastJob": "j"}, "rotation": None}


def _ready(generation: int, status: str = "True") -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": "Reconciled", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": generation}


@pytest.mark.parametrize(("status", "generation", "may_exist"), [
    ({}, 1, False),  # never reconciled, and the only spec it had has no backup: no CronJob was ever made
    ({}, 2, True),  # never reconciled successfully, and an earlier generation may have had spec.backup
    ({"conditions": [_ready(1)]}, 1, False),  # this generation (no backup) reconciled: a CronJob was removed
    ({"conditions": [_ready(1)]}, 2, True),  # a new generation: the old one may have had spec.backup
    ({"conditions": [_ready(2, "False")]}, 2, True),  # this generation failed (maybe removing the CronJob)
    ({"conditions": [_ready(2)], "backup": {"cronJob": "mempool-backup"}}, 2, True),  # status records one
])
def test_a_cronjob_is_looked_for_until_a_generation_without_backup_succeeded(status: dict[str, Any],
                                                                             generation: int,
                                                                             may_exist: bool) -> None:
    body = {"metadata": {"name": "mempool", "namespace": "ns", "generation": generation}}
    assert cron_job_may_exist(body, AitbcDatabaseStatus.model_validate(status)) is may_exist
