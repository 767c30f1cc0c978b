"""The pure plan: snapshot + desired -> steps, with messages; no server involved."""

from __future__ import annotations

from dataclasses import replace

import pytest

from aitbc_operator.errors import AdoptionRefused, InsufficientPrivilege, InvalidSpec, NameConflict
from aitbc_operator.models.database import AitbcDatabaseSpec
from aitbc_operator.postgres.plan import (
    Action,
    AdminState,
    DatabaseState,
    DesiredDatabase,
    PasswordAction,
    RoleState,
    ServerState,
    plan,
    plan_drop,
)
from tests.factories import database_spec

WANT = DesiredDatabase(database="aitbc_mempool", role="aitbc_mempool", owner="prod/mempool", connection_limit=20)
ROLE = RoleState("aitbc_mempool", can_login=True, connection_limit=20, expires=False, admin_can_use=True,
                 marker=WANT.marker)
DATABASE = DatabaseState("aitbc_mempool", owner="aitbc_mempool", marker=WANT.marker, size_bytes=7_000_000)
ADMIN = AdminState("aitbc_admin")
IN_SYNC = ServerState("15.8", 150008, ADMIN, ROLE, DATABASE)
EMPTY = replace(IN_SYNC, role=None, database=None)
PG16 = replace(IN_SYNC, version="16.4", version_num=160004)
ADOPT = replace(WANT, adopt=True)


def actions(steps: tuple[object, ...]) -> list[Action]:
    return [step.action for step in steps]  # type: ignore[attr-defined]


def test_in_sync_plans_nothing() -> None:
    assert plan(IN_SYNC, WANT) == ()
    assert plan(IN_SYNC, WANT, previously_created=True) == ()


def test_fresh_creation_order_and_messages() -> None:
    steps = plan(EMPTY, WANT)
    assert actions(steps) == [Action.CREATE_ROLE, Action.MARK_ROLE, Action.GRANT_ROLE_TO_ADMIN,
                              Action.CREATE_DATABASE, Action.MARK_DATABASE]
    assert not any(step.drift for step in steps)
    assert steps[0].message == "role aitbc_mempool created"
    assert steps[3].message == "database aitbc_mempool created, owned by aitbc_mempool"


def test_objects_missing_after_creation_are_drift() -> None:
    steps = plan(EMPTY, WANT, previously_created=True)
    assert [s.action for s in steps if s.drift] == [Action.CREATE_ROLE, Action.CREATE_DATABASE]
    assert "dropped out of band" in steps[0].message
    assert "EMPTY" in steps[3].message


@pytest.mark.parametrize(("state", "expected"), [
    (replace(IN_SYNC, role=replace(ROLE, connection_limit=1)), [Action.SET_CONNECTION_LIMIT]),
    (replace(IN_SYNC, role=replace(ROLE, can_login=False)), [Action.ENABLE_LOGIN]),
    (replace(IN_SYNC, role=replace(ROLE, expires=True)), [Action.CLEAR_EXPIRY]),
    (replace(IN_SYNC, role=replace(ROLE, admin_can_use=False)), [Action.GRANT_ROLE_TO_ADMIN]),
    (replace(IN_SYNC, database=replace(DATABASE, owner="aitbc_admin")), [Action.SET_DATABASE_OWNER]),
    (replace(IN_SYNC, database=None), [Action.CREATE_DATABASE, Action.MARK_DATABASE]),
])
def test_each_drift_is_one_repair(state: ServerState, expected: list[Action]) -> None:
    assert actions(plan(state, WANT, previously_created=True)) == expected


def test_connection_limit_message_names_both_values() -> None:
    (step,) = plan(replace(IN_SYNC, role=replace(ROLE, connection_limit=3)), WANT)
    assert step.message == "connection limit of role aitbc_mempool set to 20 (was 3)"
    assert step.drift


def test_password_actions() -> None:
    (reset,) = plan(IN_SYNC, WANT, password=PasswordAction.RESET)
    (rotate,) = plan(IN_SYNC, WANT, password=PasswordAction.ROTATE)
    assert reset.action is rotate.action is Action.SET_PASSWORD
    assert reset.drift
    assert not rotate.drift
    # A new role gets its password in CREATE ROLE; no separate step.
    assert Action.SET_PASSWORD not in actions(plan(EMPTY, WANT, password=PasswordAction.ROTATE))


def test_unmarked_objects_are_adopted_only_when_asked() -> None:
    state = replace(IN_SYNC, role=replace(ROLE, marker=None, admin_can_use=False),
                    database=replace(DATABASE, marker=None, owner="someone"))
    with pytest.raises(NameConflict, match=r"role 'aitbc_mempool' already exists .* set spec.adopt: true"):
        plan(state, WANT)
    with pytest.raises(NameConflict, match=r"database 'aitbc_mempool' already exists .* set spec.adopt: true"):
        plan(replace(state, role=ROLE), WANT)
    steps = plan(state, ADOPT)
    assert actions(steps) == [Action.MARK_ROLE, Action.GRANT_ROLE_TO_ADMIN, Action.SET_DATABASE_OWNER,
                              Action.MARK_DATABASE]
    assert "adopted" in steps[0].message
    assert not any(step.drift for step in steps)  # adopting is not repairing drift


@pytest.mark.parametrize("attributes", [("SUPERUSER",), ("REPLICATION",), ("BYPASSRLS",), ("CREATEROLE",),
                                        ("REPLICATION", "BYPASSRLS")])
def test_privileged_roles_are_never_adopted(attributes: tuple[str, ...]) -> None:
    state = replace(IN_SYNC, role=replace(ROLE, marker=None, attributes=attributes), database=None)
    with pytest.raises(AdoptionRefused, match=f"it has {', '.join(attributes)}"):
        plan(state, ADOPT)


def test_members_of_privileged_roles_are_never_adopted() -> None:
    role = replace(ROLE, marker=None, privileged_memberships=("pg_read_all_data", "postgres"))
    with pytest.raises(AdoptionRefused, match="member of pg_read_all_data, postgres"):
        plan(replace(IN_SYNC, role=role, database=None), ADOPT)


def test_databases_of_privileged_owners_are_never_adopted() -> None:
    database = replace(DATABASE, marker=None, owner="postgres", owner_attributes=("SUPERUSER", "CREATEROLE"))
    with pytest.raises(AdoptionRefused, match=r"owner postgres has SUPERUSER, CREATEROLE.*OWNER TO aitbc_mempool"):
        plan(replace(IN_SYNC, database=database), ADOPT)


def test_our_own_objects_need_no_adopt() -> None:
    assert plan(replace(IN_SYNC, database=replace(DATABASE, owner="x", owner_attributes=("CREATEROLE",))),
                WANT) == plan(replace(IN_SYNC, database=replace(DATABASE, owner="x")), WANT)


# --- privileges first ---


@pytest.mark.parametrize(("admin", "state", "missing"), [
    (replace(ADMIN, createdb=False), EMPTY, "CREATEDB (to create database aitbc_mempool owned by aitbc_mempool)"),
    (replace(ADMIN, createrole=False), EMPTY, "CREATEROLE (to create role aitbc_mempool)"),
    (replace(ADMIN, createrole=False), replace(IN_SYNC, role=replace(ROLE, connection_limit=1)),
     "CREATEROLE (to set the connection limit of role aitbc_mempool)"),
    (replace(ADMIN, inherit=False), EMPTY, "INHERIT"),
    (ADMIN, replace(PG16, role=replace(ROLE, connection_limit=1, admin_option=False)),
     "the ADMIN option on role aitbc_mempool (to set the connection limit"),
    (ADMIN, replace(IN_SYNC, database=replace(DATABASE, owner="other", admin_is_owner=False)),
     "membership in role other, the owner of database aitbc_mempool"),
])
def test_missing_privileges_refuse_the_whole_plan(admin: AdminState, state: ServerState, missing: str) -> None:
    with pytest.raises(InsufficientPrivilege) as info:
        plan(replace(state, admin=admin), WANT, previously_created=True)
    assert missing in info.value.message
    assert info.value.message.endswith("nothing was changed")


def test_privileges_the_plan_does_not_need_are_not_asked_for() -> None:
    weak = replace(ADMIN, createrole=False, createdb=False, inherit=False)
    assert plan(replace(IN_SYNC, admin=weak), WANT) == ()
    # PostgreSQL 15: CREATEROLE alone reaches a role the admin holds no ADMIN option on.
    assert plan(replace(IN_SYNC, role=replace(ROLE, connection_limit=1, admin_option=False)), WANT)
    # A superuser admin needs nothing else.
    assert plan(replace(EMPTY, admin=replace(weak, superuser=True)), WANT)


def test_self_grant_makes_the_grant_unnecessary() -> None:
    steps = plan(replace(PG16, role=None, database=None, admin=replace(ADMIN, self_grant=True)), WANT)
    assert Action.GRANT_ROLE_TO_ADMIN not in actions(steps)


def test_steps_say_what_they_attempt() -> None:
    attempts = [step.attempt(WANT) for step in plan(EMPTY, WANT)]
    assert attempts[0] == "create role aitbc_mempool"
    assert attempts[3] == "create database aitbc_mempool owned by aitbc_mempool"


def test_foreign_marker_is_a_name_conflict() -> None:
    other = replace(WANT, owner="staging/mempool")
    with pytest.raises(NameConflict, match="managed by prod/mempool, not by staging/mempool"):
        plan(IN_SYNC, other)
    with pytest.raises(NameConflict, match="database"):
        plan(replace(IN_SYNC, role=replace(ROLE, marker=other.marker)), other)


def test_superuser_role_and_admin_role_are_refused() -> None:
    with pytest.raises(NameConflict, match="superuser"):
        plan(replace(IN_SYNC, role=replace(ROLE, attributes=("SUPERUSER",))), WANT)
    with pytest.raises(InvalidSpec, match="admin role itself"):
        plan(replace(IN_SYNC, admin=AdminState("aitbc_mempool")), WANT)


def test_plan_drop() -> None:
    assert actions(plan_drop(IN_SYNC, WANT)) == [Action.DROP_DATABASE, Action.DROP_ROLE]
    assert actions(plan_drop(replace(IN_SYNC, role=replace(ROLE, admin_can_use=False)), WANT)) == [
        Action.GRANT_ROLE_TO_ADMIN, Action.DROP_DATABASE, Action.DROP_ROLE]
    assert plan_drop(EMPTY, WANT) == ()
    with pytest.raises(NameConflict, match="refusing to drop"):
        plan_drop(replace(IN_SYNC, database=replace(DATABASE, marker=None)), WANT)
    with pytest.raises(NameConflict, match="refusing to drop"):
        plan_drop(replace(IN_SYNC, role=replace(ROLE, marker="aitbc-operator: other/x")), WANT)


def test_desired_from_spec_defaults_and_overrides() -> None:
    spec = AitbcDatabaseSpec.model_validate(database_spec(service="wallet", connectionLimit=9))
    want = DesiredDatabase.from_spec(spec, namespace="prod", name="wallet")
    assert (want.database, want.role, want.owner, want.connection_limit) == (
        "aitbc_wallet", "aitbc_wallet", "prod/wallet", 9)
    assert want.marker == "aitbc-operator: prod/wallet"
    spec = AitbcDatabaseSpec.model_validate(database_spec(databaseName="w_db", roleName="w_role"))
    assert DesiredDatabase.from_spec(spec, namespace="n", name="x").database == "w_db"


@pytest.mark.parametrize("kwargs", [
    {"owner": "no spaces/allowed here"},
    {"owner": "x'; --"},
    {"owner": ""},
    {"connection_limit": -2},
    {"connection_limit": 10001},
])
def test_desired_validation(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"database": "d", "role": "r", "owner": "ns/n"}
    with pytest.raises(InvalidSpec):
        DesiredDatabase(**(base | kwargs))  # type: ignore[arg-type]
