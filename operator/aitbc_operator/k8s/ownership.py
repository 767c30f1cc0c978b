"""Refuse what we don't own: may the operator write a child over the object that already holds its name?

Pure (no I/O): the Kube layer calls :func:`ownership_conflict` with the manifest it is about to apply and the live
object it just read, and refuses the write when this returns a message.

- A child with a controller ownerReference (almost all of them) may only be written over an object controlled by the
  same owner **uid**: a Secret made by hand (the admin Secret), another resource's child, or a leftover of an earlier
  owner of the same name are someone else's.
- A child without an ownerReference (a PVC kept after its AitbcNode is deleted) is recognised by the operator's
  labels: managed by aitbc-operator for an owner of that name (so a re-created AitbcNode gets its data back).

A small window stays between the read and the write (server-side apply has no "only if it is mine" precondition):
an object created by someone else in those milliseconds would get our fields, and our controller reference only if it
had none (the apiserver refuses a second controller).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..builders.common import LABEL_MANAGED_BY, LABEL_OWNER, MANAGED_BY


def controller_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The controller ownerReference of an object, if it has one."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref  # type: ignore[no-any-return]
    return None


def describe_owner(obj: Mapping[str, Any]) -> str:
    """Who controls an object, for a message: ``AitbcDatabase other (uid ...)``, or that nothing does."""
    ref = controller_of(obj)
    if ref is not None:
        return f"{ref.get('kind')} {ref.get('name')} (uid {ref.get('uid')})"
    manager = ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_MANAGED_BY)
    return f"no controller (managed-by {manager!r})" if manager else "no controller (not made by this operator)"


def ownership_conflict(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> str | None:
    """Why ``desired`` must not be written over ``live`` (None: absent, or ours)."""
    if live is None:
        return None
    kind = desired.get("kind", "object")
    name = (desired.get("metadata") or {}).get("name")
    wanted = controller_of(desired)
    if wanted is not None:
        current = controller_of(live)
        if current is not None and current.get("uid") == wanted.get("uid"):
            return None
        return (f"{kind} {name} already exists and is controlled by {describe_owner(live)}, not by "
                f"{wanted.get('kind')} {wanted.get('name')}: refusing to take it over (rename or remove it)")
    desired_labels = (desired.get("metadata") or {}).get("labels") or {}
    live_labels = (live.get("metadata") or {}).get("labels") or {}
    ours = (live_labels.get(LABEL_MANAGED_BY) == MANAGED_BY
            and live_labels.get(LABEL_OWNER) == desired_labels.get(LABEL_OWNER))
    if ours and controller_of(live) is None:
        return None
    return (f"{kind} {name} already exists and was not made by this operator for "
            f"{desired_labels.get(LABEL_OWNER)!r} ({describe_owner(live)}): refusing to take it over")
