"""The metrics the load publishes, which the alarms and dashboard of the CDK app watch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lambdas.load import held
from lambdas.load.handler import metrics_for
from lambdas.load.loader import LoadResult


@pytest.fixture(autouse=True)
def metrics_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "TotesysEtl")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "totesys-load")


def test_a_fact_load_publishes_rows_and_lag_per_table_and_one_success_per_service() -> None:
    result = LoadResult("fact_sales_order", batches=2, staged=12, written=10, newest_change=datetime(2026, 1, 1, 12))

    now = datetime(2026, 1, 1, 12, 7, 30, tzinfo=UTC)
    per_table, succeeded = (m.serialize_metric_set() for m in metrics_for(result, now=now))

    assert per_table["table"] == "fact_sales_order" and per_table["service"] == "totesys-load"
    assert per_table["RowsLoaded"] == [10.0]
    assert per_table["SourceLagSeconds"] == [450.0]
    assert per_table["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TotesysEtl"
    assert succeeded["LoadsSucceeded"] == [1.0]
    assert succeeded["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]


def test_a_dimension_load_has_no_lag_metric() -> None:
    per_table, _ = metrics_for(LoadResult("dim_staff", 1, 3, 3), now=datetime.now(UTC))
    assert "SourceLagSeconds" not in per_table.serialize_metric_set()


def test_metric_sets_of_concurrent_invocations_are_independent() -> None:
    first, _ = metrics_for(LoadResult("dim_staff", 1, 3, 3), now=datetime.now(UTC))
    second, _ = metrics_for(LoadResult("dim_design", 1, 5, 5), now=datetime.now(UTC))
    assert first.serialize_metric_set()["table"] == "dim_staff"
    assert second.serialize_metric_set()["RowsLoaded"] == [5.0]


def test_a_fact_load_publishes_its_held_and_stuck_rows_per_table_and_stuck_rows_per_service() -> None:
    kept = held.Settled(held=None, released=0, stuck=2)
    result = LoadResult("fact_payment", 1, 5, 3, kept=kept)

    per_table, service = (m.serialize_metric_set() for m in metrics_for(result, now=datetime.now(UTC)))

    assert per_table["HeldRows"] == [0.0] and per_table["StuckHeldRows"] == [2.0]
    assert service["StuckHeldRows"] == [2.0] and service["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]


def test_a_dimension_load_publishes_no_held_rows() -> None:
    per_table, service = (m.serialize_metric_set() for m in metrics_for(LoadResult("dim_staff", 1, 3, 3),
                                                                         now=datetime.now(UTC)))  # fmt: skip
    assert "HeldRows" not in per_table and "StuckHeldRows" not in service
