"""Skipping no-op writes: the subset comparison behind apply_if_changed and patch_status."""

from __future__ import annotations

import pytest

from aitbc_operator.k8s.diff import is_subset


@pytest.mark.parametrize(
    ("desired", "live", "expected"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),  # apiserver defaults in live are fine
        ({"a": 1, "b": 2}, {"a": 1}, False),  # a desired field missing
        ({"a": {"b": [1, 2]}}, {"a": {"b": [1, 2], "c": 3}}, True),
        ({"a": [1, 2]}, {"a": [1, 2, 3]}, False),  # lists must match in length
        ({"a": [{"x": 1}]}, {"a": [{"x": 1, "y": 2}]}, True),
        ({"port": 8006}, {"port": "8006"}, True),
        ({"flag": True}, {"flag": 1}, False),
        ({"flag": False}, {"flag": False}, True),
        ({"s": "x"}, {"s": "y"}, False),
        ({"gone": None}, {}, True),  # None means "absent"
        ({"env": [], "resources": {}}, {}, True),  # the apiserver drops empty values
        ({"env": [1]}, {}, False),
        ({"a": {"b": 1}}, {"a": "text"}, False),
    ],
)
def test_is_subset(desired: object, live: object, expected: bool) -> None:
    assert is_subset(desired, live) is expected


def test_ignore_extra_in_desired_compares_the_other_way() -> None:
    assert is_subset({"a": 1}, {}, ignore_extra_in_desired=True)
    assert not is_subset({"a": 1}, {"a": 2}, ignore_extra_in_desired=True)
