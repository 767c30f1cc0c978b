"""What kopf keeps on objects (persistence.py): an AitbcDatabase's diff-base is its status.observedGeneration, never
written by kopf; other kinds keep kopf's annotation; the progress storage writes no marker."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from aitbc_operator.persistence import DIFFBASE_KEY, PREFIX, ObservedGenerationDiffBase, UnmarkedProgressStorage

KEY = f"{PREFIX}/{DIFFBASE_KEY}"


def storage() -> ObservedGenerationDiffBase:
    return ObservedGenerationDiffBase(["AitbcDatabase"])


def body(kind: str, generation: int, observed: int | None = None, **meta: Any) -> kopf.Body:
    raw: dict[str, Any] = {"apiVersion": "aitbc.io/v1alpha1", "kind": kind,
                           "metadata": {"name": "x", "namespace": "ns", "generation": generation, **meta},
                           "spec": {"serverRef": "pg"}}
    if observed is not None:
        raw["status"] = {"observedGeneration": observed}
    return kopf.Body(raw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("observed", "changed"), [(None, None), (1, True), (2, False)])
def test_a_database_is_new_changed_or_handled_by_its_observed_generation(observed: int | None,
                                                                         changed: bool | None) -> None:
    db = body("AitbcDatabase", 2, observed)
    old, new = storage().fetch(body=db), storage().build(body=db)
    if changed is None:
        assert old is None  # kopf: a creation
    else:
        assert (old != new) is changed  # kopf: an update, or nothing to do


def test_label_and_annotation_edits_of_a_database_are_no_change() -> None:
    handled = body("AitbcDatabase", 3, 3)
    edited = body("AitbcDatabase", 3, 3, labels={"team": "a"}, annotations={"note": "b"})
    assert storage().build(body=edited) == storage().fetch(body=handled) == storage().fetch(body=edited)


def test_nothing_is_written_for_a_database() -> None:
    patch = kopf.Patch()
    db = body("AitbcDatabase", 1)
    storage().store(body=db, patch=patch, essence=storage().build(body=db))
    assert not patch


def test_a_node_keeps_the_annotation_with_its_labels() -> None:
    patch = kopf.Patch()
    node = body("AitbcNode", 1, 1, labels={"team": "a"})
    storage().store(body=node, patch=patch, essence=storage().build(body=node))
    stored = patch["metadata"]["annotations"][KEY]
    assert '"team":"a"' in stored
    relabelled = body("AitbcNode", 1, 1, labels={"team": "b"}, annotations={KEY: stored})
    assert storage().fetch(body=relabelled) != storage().build(body=relabelled)


def test_a_handled_change_leaves_nothing_to_write() -> None:
    """kopf stores a succeeded handler's progress and purges it in the same patch: what remains must be nothing."""
    patch = kopf.Patch()
    db = body("AitbcDatabase", 1)
    progress = UnmarkedProgressStorage()
    progress.store(key=kopf.HandlerId("database_changed"), record={"success": True}, body=db, patch=patch)  # type: ignore[typeddict-item]
    progress.purge(key=kopf.HandlerId("database_changed"), body=db, patch=patch)
    assert not patch
