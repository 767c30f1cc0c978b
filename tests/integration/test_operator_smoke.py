"""The operator process itself: starts against the real apiserver, serves health and metrics, stops gracefully."""

from __future__ import annotations

from tests.operator_fixtures import OperatorProcess


def test_operator_serves_health_and_metrics_and_stops_cleanly(operator: OperatorProcess) -> None:
    text = operator.metrics()
    assert "aitbc_reconcile_duration_seconds" in text
    assert "aitbc_kube_writes_total" in text or "aitbc_kube_writes" in text
    assert operator.stop() == 0
    assert "Traceback" not in operator.text()
