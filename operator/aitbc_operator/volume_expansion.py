"""Auto-expansion of the chain volume claim as a pure decision (cosmos-operator's SelfHealing ``pvcAutoScale`` as the
model): the health sidecar's figures, the claim and its StorageClass in, the request to apply and status out.

- The request applied is never below the live one: ``max(storage.pvc.size, the live request)``, so the routine
  server-side apply of the claim does not take an expansion back (nor one made by hand).
- With ``storage.pvc.autoExpand``: a volume at least ``usedPercent`` full has its request raised to
  ``min(maxSize, request + increase)`` (rounded up to whole MiB), unless a resize is in progress (capacity below the
  request, or a Resizing / FileSystemResizePending condition) or the last expansion was less than ``cooldown`` ago.
- Refused, with ``VolumeExpansionWarning=True`` naming why and no write: a StorageClass that does not allow expansion
  (or none), a request already at ``maxSize``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from .models.base import ConditionStatus, parse_duration
from .models.chain_reports import ChainHealthReport
from .models.chainops import VolumeExpansionStatus, quantity_bytes
from .models.node import PvcAutoExpand, PvcStorage

VOLUME_EXPANSION_WARNING = "VolumeExpansionWarning"
VOLUME_EXPANDED = "VolumeExpanded"
#: PVC conditions of a resize the storage side has not finished.
RESIZE_CONDITIONS = frozenset({"Resizing", "FileSystemResizePending"})
_MIB = 2**20
_BINARY_SUFFIXES = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))


@dataclass(frozen=True)
class Claim:
    """The live chain volume claim (one the AitbcNode owns) and its StorageClass."""

    name: str
    request: str
    """spec.resources.requests.storage, as the apiserver keeps it."""
    capacity: str | None
    """status.capacity.storage (None: not bound yet)."""
    bound: bool
    conditions: frozenset[str]
    """Types of its True conditions."""
    storage_class: str | None
    expandable: bool
    """The StorageClass exists and has allowVolumeExpansion: true."""


@dataclass(frozen=True)
class ExpansionInput:
    """What :func:`decide_expansion` looks at."""

    spec: PvcStorage
    claim: Claim | None
    """None: no claim yet."""
    report: ChainHealthReport | None
    """The sidecar's answer of this reconcile (None: not asked, or no answer)."""
    last: VolumeExpansionStatus | None
    now: datetime


@dataclass
class ExpansionDecision:
    """What to apply and write."""

    request: str
    """The claim's spec.resources.requests.storage to apply."""
    status: VolumeExpansionStatus | None
    condition: tuple[ConditionStatus, str, str] | None = None
    """(status, reason, message) of VolumeExpansionWarning; None: leave it as it is."""
    expanded: bool = False


def format_bytes(value: int) -> str:
    """A quantity in the largest binary suffix that holds it exactly (the apiserver's canonical form of one)."""
    for suffix, factor in _BINARY_SUFFIXES:
        if value % factor == 0:
            return f"{value // factor}{suffix}"
    return str(value)


def next_request(current: int, increase: str, max_size: int) -> int:
    """``min(max_size, current + increase)``, the increase a percentage of ``current`` or a quantity, rounded up to
    whole MiB; never below ``current``."""
    added = math.ceil(current * int(increase[:-1]) / 100) if increase.endswith("%") else quantity_bytes(increase)
    grown = math.ceil((current + added) / _MIB) * _MIB
    return max(current, min(max_size, grown))


def used_percent(report: ChainHealthReport) -> float | None:
    """How full the volume is, percent (None: the sidecar does not know its size)."""
    if report.volume_bytes <= 0:
        return None
    return 100.0 * (report.volume_bytes - report.free_bytes) / report.volume_bytes


def _live_request(spec: PvcStorage, claim: Claim | None) -> tuple[str, int]:
    """max(spec size, live request): the live string when it is the larger (or equal), so nothing is rewritten."""
    wanted = quantity_bytes(spec.size)
    if claim is not None:
        try:
            live = quantity_bytes(claim.request)
        except ValueError:
            live = -1  # a form this parser does not read (e.g. 1e9): the apiserver refuses a shrink anyway
        if live >= wanted:
            return claim.request, live
    return str(spec.size), wanted


def _resizing(claim: Claim, request: int) -> str | None:
    if claim.conditions & RESIZE_CONDITIONS:
        return f"a resize of {claim.name} is in progress ({', '.join(sorted(claim.conditions & RESIZE_CONDITIONS))})"
    try:
        capacity = quantity_bytes(claim.capacity) if claim.capacity else None
    except ValueError:
        capacity = None
    if capacity is None or capacity < request:
        return (f"a resize of {claim.name} to {claim.request} is in progress (capacity "
                f"{claim.capacity or 'unknown'})")
    return None


def decide_expansion(inp: ExpansionInput) -> ExpansionDecision:
    """The claim's request, and whether to raise it now (see the module docstring)."""
    request, current = _live_request(inp.spec, inp.claim)
    d = ExpansionDecision(request=request, status=inp.last)
    auto, claim = inp.spec.auto_expand, inp.claim
    if auto is None or claim is None:
        return d
    if not claim.expandable:
        why = (f"StorageClass {claim.storage_class} does not allow volume expansion" if claim.storage_class
               else f"{claim.name} has no StorageClass")
        d.condition = ("True", "StorageClassNotExpandable", f"{why}: autoExpand cannot grow {claim.name}")
        return d
    used = used_percent(inp.report) if inp.report is not None else None
    if used is None:
        return d
    return _judge(d, auto, claim, current, used, inp)


def _judge(d: ExpansionDecision, auto: PvcAutoExpand, claim: Claim, current: int, used: float,
           inp: ExpansionInput) -> ExpansionDecision:
    full = f"the chain volume is {used:.1f}% full"
    max_size = quantity_bytes(auto.max_size)
    if used < auto.used_percent:
        d.condition = ("False", "BelowThreshold", f"{full}, below usedPercent {auto.used_percent}")
        return d
    if current >= max_size:
        d.condition = ("True", "MaxSizeReached", f"{full} and {claim.name} is at maxSize {auto.max_size}:"
                                                 " not expanded further")
        return d
    if not claim.bound:
        d.condition = ("False", "ClaimNotBound", f"{full}; {claim.name} is not bound yet")
        return d
    resizing = _resizing(claim, current)
    if resizing is not None:
        d.condition = ("False", "Resizing", f"{full}; {resizing}")
        return d
    cooldown = parse_duration(auto.cooldown)
    if inp.last is not None and (inp.now - inp.last.time).total_seconds() < cooldown:
        d.condition = ("False", "CoolingDown", f"{full}; expanded at {inp.last.time.isoformat()}, the next"
                                               f" expansion not before cooldown {auto.cooldown} has passed")
        return d
    target = format_bytes(next_request(current, auto.increase, max_size))
    d.request, d.expanded = target, True
    d.status = VolumeExpansionStatus(time=inp.now, from_size=claim.request, to_size=target)
    d.condition = ("False", VOLUME_EXPANDED, f"{full}: {claim.name} expanded from {claim.request} to {target}")
    return d
