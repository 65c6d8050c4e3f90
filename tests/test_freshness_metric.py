"""The freshness metric: how far the warehouse's facts are behind the changes the extract has seen.

It must stay at zero on a quiet source however much time passes, and grow when runs keep "succeeding" with zero
rows while totesys changes, which is what the liveness alarm (LoadsSucceeded) cannot see.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lambdas.common.events import SUCCEEDED
from lambdas.report.freshness import BEHIND_METRIC, behind_seconds, freshness_metrics, with_known_state
from statemachine.local import runner
from tests.conftest import Databases

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def extracted(table: str, watermark: str | None) -> dict[str, Any]:
    return {"table": table, "stage": "extract", "status": SUCCEEDED, "rows": 0, "watermark": watermark}


def loaded(table: str, newest: str | None) -> dict[str, Any]:
    return {"table": table, "stage": "load", "status": SUCCEEDED, "rows_written": 0, "newest_loaded": newest}


@pytest.fixture(autouse=True)
def metrics_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "TotesysEtl")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "totesys-report")


def test_a_quiet_source_is_not_behind_however_long_it_stays_quiet() -> None:
    run = {"extracted": [extracted("sales_order", "2026-11-26T17:30:00")],
           "loaded_facts": [loaded("fact_sales_order", "2026-11-26T17:30:00")]}  # fmt: skip
    assert behind_seconds(run, now=NOW) == {"fact_sales_order": 0.0}
    assert behind_seconds(run, now=NOW + timedelta(days=3)) == {"fact_sales_order": 0.0}  # a long weekend


def test_changes_extracted_but_not_loaded_put_the_warehouse_behind_by_their_distance() -> None:
    run = {"extracted": [extracted("sales_order", "2026-11-27T02:55:00"), extracted("payment", "2026-11-27T01:00:00")],
           "loaded_facts": [loaded("fact_sales_order", "2026-11-27T01:55:00"),
                            loaded("fact_payment", "2026-11-27T01:00:00")]}  # fmt: skip
    assert behind_seconds(run, now=NOW) == {"fact_sales_order": 3600.0, "fact_payment": 0.0}


def test_an_empty_fact_whose_source_has_changes_is_behind_by_at_least_the_newest_changes_age() -> None:
    run = {"extracted": [extracted("payment", "2026-11-27T02:00:00")], "loaded_facts": [loaded("fact_payment", None)]}
    assert behind_seconds(run, now=NOW) == {"fact_payment": 3600.0}


def test_an_empty_source_is_never_behind() -> None:
    run = {"extracted": [extracted("payment", None)], "loaded_facts": [loaded("fact_payment", None)]}
    assert behind_seconds(run, now=NOW) == {"fact_payment": 0.0}


def test_facts_whose_source_was_not_extracted_or_whose_load_failed_are_not_measured() -> None:
    failed_load = {"table": "fact_payment", "stage": "load", "status": "failed", "error": "PipelineError"}
    run = {"extracted": [extracted("payment", "2026-11-27T02:00:00")],
           "loaded_facts": [loaded("fact_sales_order", "2026-11-27T01:00:00"), failed_load]}  # fmt: skip
    assert behind_seconds(run, now=NOW) == {}


def test_one_series_carries_the_worst_fact_for_the_alarm_and_each_fact_as_a_property() -> None:
    """A series per fact costs $0.30 a month each (docs/cost.md): the dashboard reads the facts from the record."""
    sets = [m.serialize_metric_set() for m in freshness_metrics({"fact_sales_order": 60.0, "fact_payment": 0.0})]

    (record,) = sets
    assert record[BEHIND_METRIC] == [60.0], "the alarm reads the worst fact"
    assert record["behind_seconds"] == {"fact_sales_order": 60.0, "fact_payment": 0.0}
    assert record["service"] == "totesys-report" and "table" not in record
    assert record["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    assert record["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [{"Name": BEHIND_METRIC, "Unit": "Seconds"}]


def test_a_quiet_source_still_publishes_its_zero_and_a_run_that_measured_nothing_publishes_nothing() -> None:
    (quiet,) = [m.serialize_metric_set() for m in freshness_metrics(dict.fromkeys(("fact_payment",), 0.0))]
    assert quiet[BEHIND_METRIC] == [0.0]
    assert freshness_metrics({}) == []


def stage_results(outcome: runner.RunOutcome) -> dict[str, Any]:
    """What the report receives, from the real handlers' results of this execution (and its plan's)."""
    plan = next((i.result for i in outcome.invocations if i.stage == "plan"), None)
    return {"extracted": [i.result for i in outcome.invocations if i.stage == "extract"],
            "loaded_facts": [i.result for i in outcome.invocations if i.stage == "load"], "plan": plan}  # fmt: skip


def test_runs_that_succeed_with_zero_rows_while_the_source_changes_show_the_warehouse_falling_behind(
    databases: Databases,
) -> None:
    small = databases.seed(scale=0.02)
    first = small.run()
    assert first.succeeded, first
    assert behind_seconds(stage_results(first), now=datetime.now(UTC)) == dict.fromkeys(
        ("fact_sales_order", "fact_purchase_order", "fact_payment"), 0.0)  # fmt: skip

    quiet = small.run()
    # nothing to do: every fact is still measured, from what the run's plan read
    assert quiet.succeeded and behind_seconds(stage_results(quiet), now=datetime.now(UTC)) == dict.fromkeys(
        ("fact_sales_order", "fact_purchase_order", "fact_payment"), 0.0)  # fmt: skip

    small.source_sql("UPDATE sales_order SET units_sold = units_sold + 1, last_updated = last_updated_max + "
                     "interval '2 hours' FROM (SELECT max(last_updated) AS last_updated_max FROM sales_order) m "
                     "WHERE sales_order_id = 1")  # fmt: skip

    def transform_that_does_nothing(event: dict[str, Any], context: Any) -> dict[str, object]:
        """A silent defect: every table 'succeeds' and writes nothing."""
        return {"table": event["table"], "stage": "transform", "status": SUCCEEDED, "rows": 0, "batch": None}

    silent = runner.run(source=small.source, warehouse=small.warehouse, lake_dir=small.lake, execution_input={},
                        handlers={"totesys-transform": transform_that_does_nothing})  # fmt: skip

    assert silent.succeeded, silent  # the liveness alarm sees a successful load of every table
    behind = behind_seconds(stage_results(silent), now=datetime.now(UTC))
    assert behind["fact_sales_order"] >= 2 * 3600
    assert behind["fact_payment"] == 0.0


FACTS = ("fact_sales_order", "fact_purchase_order", "fact_payment")


def processed(db: Databases) -> Path:
    return db.lake / runner.PROCESSED_BUCKET


def newest_in_the_warehouse(db: Databases, table: str) -> str | None:
    (newest,) = db.warehouse_sql(f"SELECT max(last_updated_date + last_updated_time) FROM {table}")[0]
    return newest.isoformat() if newest else None


def fact_scans(db: Databases) -> int:
    time.sleep(0.5)  # a backend's statistics reach the shared counters as it exits
    return db.warehouse_sql("SELECT sum(seq_scan) FROM pg_stat_user_tables WHERE relname = ANY(:t)", t=list(FACTS))[0][
        0
    ]


def test_the_newest_loaded_change_comes_from_the_load_cursor_and_a_quiet_run_does_not_scan_the_facts(
    databases: Databases,
) -> None:
    small = databases.seed(scale=0.02)
    assert small.run().succeeded
    scans = fact_scans(small)

    quiet = small.run()

    assert quiet.succeeded
    assert fact_scans(small) == scans
    assert [i for i in quiet.invocations if i.stage == "load"] == []  # nothing to load: the plan read the cursors
    reported = with_known_state(stage_results(quiet))["loaded_facts"]
    loaded = {r["table"]: r["newest_loaded"] for r in reported if r["table"] in FACTS}
    assert loaded == {t: newest_in_the_warehouse(small, t) for t in FACTS}


def test_a_load_cursor_that_does_not_remember_the_newest_change_has_it_read_from_the_table(
    databases: Databases,
) -> None:
    small = databases.seed(scale=0.02)
    assert small.run().succeeded
    cursor = processed(small) / "_state" / "load" / "fact_sales_order.json"
    state = json.loads(cursor.read_text())
    state["newest_loaded"] = "not a time"  # unreadable: not believed
    cursor.write_text(json.dumps(state))
    other = processed(small) / "_state" / "load" / "fact_payment.json"
    state = json.loads(other.read_text())
    del state["newest_loaded"]  # written by an earlier version
    other.write_text(json.dumps(state))

    again = small.run()

    assert again.succeeded
    # the two facts whose cursors cannot tell are loaded again (the plan's doubt); the third is read from its cursor
    assert {i.table for i in again.invocations if i.stage == "load"} >= {"fact_sales_order", "fact_payment"}
    reported = with_known_state(stage_results(again))["loaded_facts"]
    loaded = {r["table"]: r["newest_loaded"] for r in reported if r["table"] in FACTS}
    assert loaded == {t: newest_in_the_warehouse(small, t) for t in FACTS}
    for path, table in ((cursor, "fact_sales_order"), (other, "fact_payment")):
        assert json.loads(path.read_text())["newest_loaded"] == newest_in_the_warehouse(small, table)
