"""Pure AitbcDatabase decisions: rotation triggers, what a Secret write repairs, and name claims on a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aitbc_operator.models.database import AitbcDatabaseSpec, AitbcDatabaseStatus
from aitbc_operator.reconcilers.database_policy import (
    ROTATE_ANNOTATION,
    Rotation,
    claim_of,
    conflicting_owner,
    next_rotation_in,
    rotation_due,
    rotation_token,
    secret_repairs,
    users_blocking_drop,
)
from tests.factories import database_spec, make_database

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def spec(**overrides: object) -> AitbcDatabaseSpec:
    return AitbcDatabaseSpec.model_validate(database_spec(**overrides))


def settled(s: AitbcDatabaseSpec, annotations: dict[str, str] | None = None, **status: object) -> AitbcDatabaseStatus:
    return AitbcDatabaseStatus(
        observed_rotation_token=rotation_token(s, annotations or {}),
        last_rotation_time=NOW - timedelta(hours=1),
        **status,  # type: ignore[arg-type]
    )


def test_first_password_is_initial() -> None:
    s = spec()
    assert rotation_due(s, AitbcDatabaseStatus(), {}, have_password=False, now=NOW) is Rotation.INITIAL


def test_settled_password_is_kept() -> None:
    s = spec(password={"rotationPeriod": "720h"})
    assert rotation_due(s, settled(s), {}, have_password=True, now=NOW) is None


def test_spec_token_change_rotates() -> None:
    before = spec(password={"rotationToken": "2026-11-01"})
    after = spec(password={"rotationToken": "2026-11-25"})
    assert rotation_due(after, settled(before), {}, have_password=True, now=NOW) is Rotation.TOKEN


def test_annotation_change_rotates() -> None:
    s = spec()
    status = settled(s, {ROTATE_ANNOTATION: "1"})
    assert rotation_due(s, status, {ROTATE_ANNOTATION: "1"}, have_password=True, now=NOW) is None
    assert rotation_due(s, status, {ROTATE_ANNOTATION: "2"}, have_password=True, now=NOW) is Rotation.TOKEN


def test_schedule_rotates_when_the_period_has_passed() -> None:
    s = spec(password={"rotationPeriod": "30m"})
    assert rotation_due(s, settled(s), {}, have_password=True, now=NOW) is Rotation.SCHEDULE
    assert next_rotation_in(s, settled(s), now=NOW) == 0.0
    s2 = spec(password={"rotationPeriod": "2h"})
    assert rotation_due(s2, settled(s2), {}, have_password=True, now=NOW) is None
    assert next_rotation_in(s2, settled(s2), now=NOW) == 3600.0


def obj(name: str, uid: str, created: str, *, server: str | None = "pg:5432", deleting: bool = False,
        **spec_overrides: object) -> dict[str, object]:
    o = make_database(name, namespace="ns", **spec_overrides)
    o["metadata"].update({"uid": uid, "creationTimestamp": created})  # type: ignore[union-attr]
    if deleting:
        o["metadata"]["deletionTimestamp"] = "2026-11-25T12:00:00Z"  # type: ignore[index]
    if server:
        o["status"] = {"server": server}
    return o


def test_older_claim_wins() -> None:
    first = claim_of(obj("a", "u1", "2026-11-01T00:00:00Z"))
    second = claim_of(obj("b", "u2", "2026-11-02T00:00:00Z"))
    assert first is not None
    assert second is not None
    assert conflicting_owner(first, [first, second], server="pg:5432") is None
    message = conflicting_owner(second, [first, second], server="pg:5432")
    assert message is not None
    assert "database aitbc_mempool" in message
    assert "role aitbc_mempool" in message
    assert "ns/a" in message


def test_other_server_or_other_names_do_not_conflict() -> None:
    first = claim_of(obj("a", "u1", "2026-11-01T00:00:00Z", server="other:5432"))
    second = claim_of(obj("b", "u2", "2026-11-02T00:00:00Z"))
    third = claim_of(obj("c", "u3", "2026-11-03T00:00:00Z", service="wallet"))
    assert first
    assert second
    assert third
    assert conflicting_owner(second, [first, second, third], server="pg:5432") is None
    assert conflicting_owner(third, [first, second, third], server="pg:5432") is None


def test_claim_without_status_matches_by_admin_secret() -> None:
    first = claim_of(obj("a", "u1", "2026-11-01T00:00:00Z", server=None))
    second = claim_of(obj("b", "u2", "2026-11-02T00:00:00Z"))
    assert first
    assert second
    assert conflicting_owner(second, [first, second], server="pg:5432") is not None


@pytest.mark.parametrize("deleting", [False, True])
def test_drop_refused_while_another_uses_the_role(deleting: bool) -> None:
    me = claim_of(obj("a", "u1", "2026-11-01T00:00:00Z"))
    other = claim_of(obj("b", "u2", "2026-11-02T00:00:00Z", databaseName="other_db", deleting=deleting))
    assert me
    assert other
    blocking = users_blocking_drop(me, [me, other], server="pg:5432")
    assert blocking == ([] if deleting else ["ns/b (role aitbc_mempool)"])


def test_invalid_spec_claims_nothing() -> None:
    bad = obj("x", "u9", "2026-11-01T00:00:00Z", databaseName="pg_bad")
    assert claim_of(bad) is None


# --- the connection Secret ---


def test_a_lost_password_after_creation_is_lost_not_initial() -> None:
    s = spec()
    status = settled(s, database_name="aitbc_mempool")
    assert rotation_due(s, status, {}, have_password=False, now=NOW) is Rotation.LOST


def test_secret_repairs_name_what_someone_else_changed() -> None:
    desired = {"DATABASE_URL": "postgresql+psycopg://u:p@h/d", "host": "h", "password": "p"}
    edited = {**desired, "DATABASE_URL": "forged", "added-by-someone": "kept"}
    assert secret_repairs("x-db", None, desired, edited, ours_last=True) == [
        "Secret x-db: DATABASE_URL changed by someone else, put back"]
    assert secret_repairs("x-db", None, desired, {"host": "h"}, ours_last=True) == [
        "Secret x-db: DATABASE_URL, password changed by someone else, put back"]
    assert secret_repairs("x-db", None, desired, desired, ours_last=True) == [
        "Secret x-db: labels or annotations changed by someone else, put back"]


def test_secret_writes_that_are_not_repairs() -> None:
    desired = {"password": "new"}
    # Our own change (a rotation, a spec change): the live Secret was applied from another manifest.
    assert secret_repairs("x-db", Rotation.TOKEN, desired, {"password": "old"}, ours_last=False) == []
    assert secret_repairs("x-db", Rotation.INITIAL, desired, None, ours_last=False) == []


def test_a_lost_secret_or_password_is_a_repair() -> None:
    assert secret_repairs("x-db", Rotation.LOST, {"password": "new"}, None, ours_last=False) == [
        "Secret x-db was deleted: re-created with a new password"]
    assert secret_repairs("x-db", Rotation.LOST, {"password": "new"}, {"host": "h"}, ours_last=False) == [
        "Secret x-db had lost its password: a new one was written"]
