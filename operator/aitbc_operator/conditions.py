"""Condition helpers: set a condition keeping lastTransitionTime when the status does not change."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from .models.base import Condition, ConditionStatus

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
#: AitbcDatabase: its finalizer cannot do its work (True while it waits; the reason says why).
DELETION_BLOCKED = "DeletionBlocked"


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    now: datetime,
    generation: int | None = None,
) -> list[Condition]:
    """A new list with `type_` set. lastTransitionTime moves only when `status` changes."""
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != type_:
            out.append(cond)
            continue
        found = True
        transition = cond.last_transition_time if cond.status == status and cond.last_transition_time else now
        out.append(
            Condition(
                type=type_, status=status, reason=reason, message=message,
                last_transition_time=transition, observed_generation=generation,
            )
        )
    if not found:
        out.append(
            Condition(
                type=type_, status=status, reason=reason, message=message,
                last_transition_time=now, observed_generation=generation,
            )
        )
    return out


def summary(
    conditions: Sequence[Condition],
    *,
    ready: bool,
    progressing: bool,
    degraded: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Set Ready, Progressing and Degraded together from one outcome (one reason and message for all three)."""
    out = list(conditions)
    for type_, flag in ((READY, ready), (PROGRESSING, progressing), (DEGRADED, degraded)):
        out = set_condition(out, type_, "True" if flag else "False", reason, message, now=now, generation=generation)
    return out
