"""The chain volume's auto-expansion decision (volume_expansion.py): one table of cases, clock and figures passed in."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from aitbc_operator.models.chain_reports import ChainHealthReport
from aitbc_operator.models.chainops import VolumeExpansionStatus
from aitbc_operator.models.node import PvcStorage
from aitbc_operator.volume_expansion import (
    Claim,
    ExpansionInput,
    decide_expansion,
    format_bytes,
    next_request,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GI = 2**30


def report(used_percent: float) -> ChainHealthReport:
    return ChainHealthReport(observed_at=T0, fs="ext4", volume_bytes=10 * GI,
                             free_bytes=int(10 * GI * (100 - used_percent) / 100))


def claim(request: str = "10Gi", *, capacity: str | None = None, bound: bool = True,
          conditions: frozenset[str] = frozenset(), storage_class: str | None = "fast",
          expandable: bool = True) -> Claim:
    return Claim(name="aitbc1-data", request=request, capacity=request if capacity is None else capacity, bound=bound,
                 conditions=conditions, storage_class=storage_class, expandable=expandable)


@dataclass
class Case:
    claim: Claim | None
    used: float | None
    want_request: str
    want_condition: tuple[str, str] | None  # (status, reason)
    auto: dict[str, Any] | None = field(default_factory=lambda: {"maxSize": "20Gi"})
    size: str = "10Gi"
    last: datetime | None = None


CASES = {
    "below the threshold: nothing": Case(claim(), 79.0, "10Gi", ("False", "BelowThreshold")),
    "at the threshold: +10% (the default)": Case(claim(), 80.0, "11Gi", ("False", "VolumeExpanded")),
    "increase as a percentage": Case(claim(), 95.0, "15Gi", ("False", "VolumeExpanded"),
                                     auto={"maxSize": "20Gi", "increase": "50%"}),
    "increase as a quantity": Case(claim(), 90.0, "12Gi", ("False", "VolumeExpanded"),
                                   auto={"maxSize": "20Gi", "increase": "2Gi"}),
    "capped at maxSize": Case(claim("19Gi"), 90.0, "20Gi", ("False", "VolumeExpanded"),
                              auto={"maxSize": "20Gi", "increase": "5Gi"}),
    "at maxSize: a warning, no write": Case(claim("20Gi"), 99.0, "20Gi", ("True", "MaxSizeReached")),
    "above maxSize (lowered later): never shrunk": Case(claim("30Gi"), 99.0, "30Gi", ("True", "MaxSizeReached")),
    "resize in progress (capacity below the request)": Case(claim("11Gi", capacity="10Gi"), 95.0, "11Gi",
                                                            ("False", "Resizing")),
    "resize in progress (FileSystemResizePending)": Case(claim(conditions=frozenset({"FileSystemResizePending"})),
                                                         95.0, "10Gi", ("False", "Resizing")),
    "resize in progress (Resizing)": Case(claim(conditions=frozenset({"Resizing"})), 95.0, "10Gi",
                                          ("False", "Resizing")),
    "within the cooldown": Case(claim("11Gi"), 95.0, "11Gi", ("False", "CoolingDown"), last=T0 - timedelta(minutes=9)),
    "after the cooldown: +10%, rounded up to MiB": Case(claim("11Gi"), 95.0, "12391Mi", ("False", "VolumeExpanded"),
                               last=T0 - timedelta(minutes=10)),
    "StorageClass does not allow expansion: a warning, no write": Case(
        claim(expandable=False), 95.0, "10Gi", ("True", "StorageClassNotExpandable")),
    "not expandable is said at once (below the threshold, no report)": Case(
        claim(expandable=False), None, "10Gi", ("True", "StorageClassNotExpandable")),
    "no StorageClass (static volume)": Case(claim(storage_class=None, expandable=False), 95.0, "10Gi",
                                            ("True", "StorageClassNotExpandable")),
    "not bound": Case(claim(capacity="", bound=False), 95.0, "10Gi", ("False", "ClaimNotBound")),
    "no sidecar report this reconcile: condition left as it is": Case(claim(), None, "10Gi", None),
    "no claim yet: the spec size": Case(None, 95.0, "10Gi", None),
    "without autoExpand: never below the live request": Case(claim("12Gi"), 99.0, "12Gi", None, auto=None),
    "the spec raised above the live request wins": Case(claim("10Gi"), 10.0, "15Gi", ("False", "BelowThreshold"),
                                                        size="15Gi", auto={"maxSize": "30Gi"}),
}


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_decide_expansion(case_id: str) -> None:
    case = CASES[case_id]
    spec = PvcStorage.model_validate({"size": case.size, "autoExpand": case.auto} if case.auto else
                                     {"size": case.size})
    last = (VolumeExpansionStatus(time=case.last, from_size="10Gi", to_size="11Gi") if case.last else None)
    d = decide_expansion(ExpansionInput(spec=spec, claim=case.claim, report=report(case.used) if case.used is not None
                                        else None, last=last, now=T0))
    assert d.request == case.want_request
    assert (d.condition[:2] if d.condition else None) == case.want_condition, d.condition
    assert d.expanded == (case.want_condition == ("False", "VolumeExpanded"))
    if d.expanded:
        assert case.claim is not None
        assert d.status == VolumeExpansionStatus(time=T0, from_size=case.claim.request, to_size=case.want_request)
        assert d.condition is not None
        assert f"from {case.claim.request} to {case.want_request}" in d.condition[2]
    else:
        assert d.status == last


def test_a_condition_names_the_class_and_the_claim() -> None:
    spec = PvcStorage.model_validate({"size": "10Gi", "autoExpand": {"maxSize": "20Gi"}})
    d = decide_expansion(ExpansionInput(spec=spec, claim=claim(storage_class="standard", expandable=False),
                                        report=report(95), last=None, now=T0))
    assert d.condition == ("True", "StorageClassNotExpandable",
                           "StorageClass standard does not allow volume expansion: autoExpand cannot grow aitbc1-data")


@pytest.mark.parametrize(("current", "increase", "cap", "want"), [
    (10 * GI, "10%", 100 * GI, 11 * GI),
    (1000, "1%", GI, 2**20),  # rounded up to one MiB
    (10 * GI, "1Ki", 100 * GI, 10 * GI + 2**20),
    (10 * GI, "100Gi", 15 * GI, 15 * GI),
    (20 * GI, "10%", 15 * GI, 20 * GI),  # never below the current request
])
def test_next_request(current: int, increase: str, cap: int, want: int) -> None:
    assert next_request(current, increase, cap) == want


@pytest.mark.parametrize(("value", "text"), [(11 * GI, "11Gi"), (11264 * 2**20, "11Gi"), (1536 * 2**20, "1536Mi"),
                                             (2 * 10**9, "1953125Ki"), (1000, "1000")])
def test_format_bytes_is_the_canonical_binary_form(value: int, text: str) -> None:
    assert format_bytes(value) == text


@pytest.mark.parametrize(("auto", "needle"), [
    ({"maxSize": "5Gi"}, "maxSize must be at least storage.pvc.size"),
    ({"maxSize": "20Gi", "increase": "0Gi"}, "a percentage (1% to 999%) or a quantity above 0"),
    ({"maxSize": "20Gi", "increase": "0%"}, "String should match pattern"),
    ({"maxSize": "20Gi", "usedPercent": 100}, "less than or equal to 99"),
    ({"maxSize": "20Gi", "cooldown": "soon"}, "String should match pattern"),
    ({}, "maxSize"),
])
def test_the_model_refuses_a_bad_auto_expand(auto: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(needle)):
        PvcStorage.model_validate({"size": "10Gi", "autoExpand": auto})
