"""The metrics the load publishes, which the alarms and dashboard of the CDK app watch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lambdas.load import held
from lambdas.load.handler import metrics_for, source_lag
from lambdas.load.loader import LoadResult


@pytest.fixture(autouse=True)
def metrics_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "TotesysEtl")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "totesys-load")


def test_a_fact_with_rows_held_too_long_publishes_them_on_the_one_series_the_alarm_reads() -> None:
    kept = held.Settled(held=None, released=0, stuck=2)
    result = LoadResult("fact_sales_order", batches=2, staged=12, written=10, newest_change=datetime(2026, 1, 1, 12),
                        kept=kept)  # fmt: skip

    (stuck,) = (m.serialize_metric_set() for m in metrics_for(result, now=datetime.now(UTC)))

    assert stuck["StuckHeldRows"] == [2.0] and stuck["service"] == "totesys-load"
    assert stuck["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    assert stuck["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TotesysEtl"
    assert stuck["table"] == "fact_sales_order", "a property of the record, not a dimension"
    assert [m["Name"] for m in stuck["_aws"]["CloudWatchMetrics"][0]["Metrics"]] == ["StuckHeldRows"]


def test_a_healthy_fact_load_publishes_no_series_and_logs_its_source_lag() -> None:
    """A series is billed by the hours it is published in: nothing stuck, nothing published (the alarm treats a
    missing value as nothing stuck); the lag the dashboard graphs is in the "loaded" log line."""
    result = LoadResult("fact_sales_order", 2, 12, 10, newest_change=datetime(2026, 1, 1, 12))
    now = datetime(2026, 1, 1, 12, 7, 30, tzinfo=UTC)

    assert metrics_for(result, now=now) == []
    assert source_lag(result, now=now) == {"source_lag_seconds": 450.0}
    assert source_lag(LoadResult("fact_payment", 0, 0, 0), now=now) == {}


def test_rows_loaded_and_held_are_in_the_log_line_not_a_metric_series_per_table() -> None:
    """A metric series per table costs $0.30 a month; the dashboard queries the load's "loaded" log line."""
    kept = held.Settled(held=None, released=0, stuck=0)
    result = LoadResult("fact_payment", 1, 5, 3, newest_change=datetime(2026, 1, 1), kept=kept)
    published = [m.serialize_metric_set() for m in metrics_for(result, now=datetime.now(UTC))]

    assert not any({"RowsLoaded", "LoadsSucceeded", "HeldRows", "SourceLagSeconds"} & set(m) for m in published)
    assert {"rows_written": 3, "rows_held": 0}.items() <= result.as_dict().items()


def test_a_dimension_load_publishes_no_metric() -> None:
    dimension = LoadResult("dim_staff", 1, 3, 3, newest_change=datetime(2026, 1, 1))
    assert metrics_for(dimension, now=datetime.now(UTC)) == []
    assert source_lag(dimension, now=datetime.now(UTC)) == {}


def test_metric_sets_of_concurrent_invocations_are_independent() -> None:
    stuck, now = held.Settled(held=None, released=0, stuck=1), datetime.now(UTC)
    (first,) = metrics_for(LoadResult("fact_payment", 1, 3, 3, kept=stuck), now=now)
    (second,) = metrics_for(LoadResult("fact_sales_order", 1, 5, 5, kept=stuck), now=now)
    assert first.serialize_metric_set()["table"] == "fact_payment"
    assert second.serialize_metric_set()["table"] == "fact_sales_order"
