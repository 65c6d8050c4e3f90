"""The metrics the load publishes, which the alarms and dashboard of the CDK app watch."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from aws_lambda_powertools import Metrics

from lambdas.load.handler import record_metrics
from lambdas.load.loader import LoadResult


def test_a_fact_load_publishes_rows_lag_and_one_success(capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    metrics = Metrics(namespace="TotesysEtl", service="totesys-load")
    metrics.clear_metrics()  # Powertools shares one metric set between instances
    result = LoadResult("fact_sales_order", batches=2, staged=12, written=10, newest_change=datetime(2026, 1, 1, 12))

    record_metrics(metrics, result, now=datetime(2026, 1, 1, 12, 7, 30, tzinfo=UTC))

    per_table = metrics.serialize_metric_set()
    assert per_table["table"] == "fact_sales_order" and per_table["service"] == "totesys-load"
    assert per_table["RowsLoaded"] == [10.0]
    assert per_table["SourceLagSeconds"] == [450.0]
    success = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert success["LoadsSucceeded"] == [1.0]
    assert success["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    assert success["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TotesysEtl"


def test_a_dimension_load_has_no_lag_metric() -> None:
    metrics = Metrics(namespace="TotesysEtl", service="totesys-load")
    metrics.clear_metrics()  # Powertools shares one metric set between instances
    record_metrics(metrics, LoadResult("dim_staff", 1, 3, 3), now=datetime.now(UTC))
    assert "SourceLagSeconds" not in metrics.serialize_metric_set()
