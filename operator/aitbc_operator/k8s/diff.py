"""Structural comparison used to skip writes that would change nothing."""

from __future__ import annotations

from typing import Any


def is_subset(desired: Any, live: Any, *, ignore_extra_in_desired: bool = False) -> bool:
    """Whether every field of `desired` is present with the same value in `live`.

    Dicts compare key by key (extra keys in `live` are fine: defaults filled in by the apiserver);
    lists must have the same length and match element-wise; scalars compare equal, with numbers and their
    string forms considered equal (the apiserver normalises e.g. ports and quantities).
    With `ignore_extra_in_desired`, keys of `desired` missing from `live` are ignored (used to compare both ways).
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        for key, value in desired.items():
            if key not in live:
                # The apiserver omits empty values: a desired `[]`, `{}` or null matches an absent field.
                if ignore_extra_in_desired or value is None or value == [] or value == {}:
                    continue
                return False
            if not is_subset(value, live[key], ignore_extra_in_desired=ignore_extra_in_desired):
                return False
        return True
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return False
        return all(
            is_subset(d, v, ignore_extra_in_desired=ignore_extra_in_desired) for d, v in zip(desired, live, strict=True)
        )
    if isinstance(desired, bool) or isinstance(live, bool):
        return isinstance(desired, bool) and isinstance(live, bool) and desired == live
    number_vs_text = isinstance(desired, int | float) and isinstance(live, str)
    text_vs_number = isinstance(desired, str) and isinstance(live, int | float)
    if number_vs_text or text_vs_number:
        return str(desired) == str(live)
    return bool(desired == live)
