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


def test_a_fact_load_publishes_its_lag_per_table_and_its_stuck_rows_per_service() -> None:
    kept = held.Settled(held=None, released=0, stuck=2)
    result = LoadResult("fact_sales_order", batches=2, staged=12, written=10, newest_change=datetime(2026, 1, 1, 12),
                        kept=kept)  # fmt: skip

    now = datetime(2026, 1, 1, 12, 7, 30, tzinfo=UTC)
    service, per_table = (m.serialize_metric_set() for m in metrics_for(result, now=now))

    assert per_table["table"] == "fact_sales_order" and per_table["service"] == "totesys-load"
    assert per_table["SourceLagSeconds"] == [450.0]
    assert per_table["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TotesysEtl"
    assert service["StuckHeldRows"] == [2.0] and service["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]


def test_rows_loaded_and_held_are_in_the_log_line_not_a_metric_series_per_table() -> None:
    """A metric series per table costs $0.30 a month; the dashboard queries the load's "loaded" log line."""
    kept = held.Settled(held=None, released=0, stuck=0)
    result = LoadResult("fact_payment", 1, 5, 3, newest_change=datetime(2026, 1, 1), kept=kept)
    published = [m.serialize_metric_set() for m in metrics_for(result, now=datetime.now(UTC))]

    assert not any({"RowsLoaded", "LoadsSucceeded", "HeldRows"} & set(metric_set) for metric_set in published)
    assert {"rows_written": 3, "rows_held": 0}.items() <= result.as_dict().items()


def test_a_dimension_load_publishes_no_metric() -> None:
    dimension = LoadResult("dim_staff", 1, 3, 3, newest_change=datetime(2026, 1, 1))
    assert metrics_for(dimension, now=datetime.now(UTC)) == []


def test_metric_sets_of_concurrent_invocations_are_independent() -> None:
    changed = datetime(2026, 1, 1)
    _, first = metrics_for(LoadResult("fact_payment", 1, 3, 3, newest_change=changed), now=datetime.now(UTC))
    _, second = metrics_for(LoadResult("fact_sales_order", 1, 5, 5, newest_change=changed), now=datetime.now(UTC))
    assert first.serialize_metric_set()["table"] == "fact_payment"
    assert second.serialize_metric_set()["table"] == "fact_sales_order"
