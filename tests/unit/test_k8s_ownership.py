"""Refuse what we don't own: the pure ownership decision the Kube layer applies before every child write."""

from __future__ import annotations

from typing import Any

import pytest

from aitbc_operator import errors
from aitbc_operator.k8s.ownership import describe_owner, ownership_conflict


def owned(uid: str | None, *, kind: str = "AitbcDatabase", name: str = "mempool",
          labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "mempool-db", "namespace": "ns", "labels": labels or {}}
    if uid is not None:
        meta["ownerReferences"] = [{"apiVersion": "aitbc.io/v1alpha1", "kind": kind, "name": name, "uid": uid,
                                    "controller": True}]
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta}


def test_absent_object_is_free() -> None:
    assert ownership_conflict(owned("u1"), None) is None


def test_same_owner_uid_is_ours() -> None:
    assert ownership_conflict(owned("u1"), owned("u1")) is None


@pytest.mark.parametrize(
    ("live", "names"),
    [
        (owned(None), "not made by this operator"),  # e.g. the admin Secret made by hand
        (owned("u2", name="other"), "AitbcDatabase other (uid u2)"),  # another resource's Secret
        (owned("u2", name="mempool"), "uid u2"),  # a leftover of an earlier resource of the same name
        (owned("u9", kind="Certificate", name="tls"), "Certificate tls"),  # cert-manager's
    ],
)
def test_someone_elses_object_is_refused_with_its_owner(live: dict[str, Any], names: str) -> None:
    message = ownership_conflict(owned("u1"), live)
    assert message is not None
    assert "Secret mempool-db already exists" in message
    assert names in message
    assert "refusing to take it over" in message


def test_unowned_child_recognised_by_labels() -> None:
    ours = {"app.kubernetes.io/managed-by": "aitbc-operator", "aitbc.io/owner": "aitbc1"}
    desired = owned(None, labels=ours)
    assert ownership_conflict(desired, owned(None, labels=ours)) is None
    foreign = ownership_conflict(desired, owned(None, labels={"aitbc.io/owner": "aitbc1"}))
    assert foreign is not None
    assert "not made by this operator" in foreign
    other_owner = {**ours, "aitbc.io/owner": "aitbc2"}
    assert ownership_conflict(desired, owned(None, labels=other_owner)) is not None
    # labelled like ours but controlled by something else: not ours either
    assert ownership_conflict(desired, owned("u5", labels=ours)) is not None


def test_describe_owner() -> None:
    assert describe_owner(owned("u3", name="x")) == "AitbcDatabase x (uid u3)"
    assert "managed-by 'helm'" in describe_owner(owned(None, labels={"app.kubernetes.io/managed-by": "helm"}))


def test_apply_if_changed_refuses_and_writes_nothing() -> None:
    import asyncio

    from aitbc_operator.k8s.client import Kube

    def no_login() -> Any:
        raise AssertionError("no request may be made")

    kube = Kube(no_login)
    with pytest.raises(errors.NameConflict, match="controlled by AitbcDatabase other"):
        asyncio.run(kube.apply_if_changed(owned("u1"), owned("u2", name="other")))
    assert kube.writes == 0
