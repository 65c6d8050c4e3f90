"""Each alarm of the synthesized stack fires on the failure it is for, and stays quiet on a healthy run.

CloudWatch evaluates an alarm here as it does in AWS (docs: "Evaluating an alarm"): per period, the alarm's
statistic over the datapoints its metric received; a period without any is treated as TreatMissingData says; the
alarm is in ALARM when each of its last EvaluationPeriods periods breaches. Its metric is matched exactly, by
namespace, name and the full set of dimensions.

The datapoints are what the code publishes on that failure: the embedded-metric (EMF) records the report, load and
extract build, with the namespace and service name the synthesized function gives them in its environment, so a
metric renamed in the code, a dimension added, or an environment that differs from the alarm's is a test that
fails. Step Functions' and Lambda's own metrics (one ExecutionsFailed per failed execution, one Errors per failed
invocation) are AWS's to publish; what the tests show for those is which failures reach them.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lambdas.common.events import SUCCEEDED
from lambdas.extract.handler import drift_metrics as source_drift_metrics
from lambdas.load import held
from lambdas.load.handler import drift_metrics as warehouse_drift_metrics
from lambdas.load.handler import metrics_for
from lambdas.load.loader import LoadResult
from lambdas.load.verify import VerifyResult
from lambdas.report.freshness import behind_seconds, freshness_metrics
from tests.cdk.support import Synthesized
from tests.cdk.test_cdk_monitoring import alarms

COMPARE: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanOrEqualToThreshold": operator.ge,
    "GreaterThanThreshold": operator.gt,
    "LessThanThreshold": operator.lt,
    "LessThanOrEqualToThreshold": operator.le,
}
STATISTIC: dict[str, Callable[[list[float]], float]] = {"Sum": sum, "Maximum": max, "Minimum": min}


def state(alarm: dict[str, Any], periods: list[list[float]]) -> str:
    """ALARM or OK after the given periods (oldest first), each the datapoints its metric received in it."""
    assert len(periods) >= alarm["EvaluationPeriods"]
    breaching = []
    for values in periods[-alarm["EvaluationPeriods"] :]:
        if values:
            statistic = STATISTIC[alarm["Statistic"]](values)
            breaching.append(COMPARE[alarm["ComparisonOperator"]](statistic, alarm["Threshold"]))
        else:
            breaching.append({"breaching": True, "notBreaching": False}[alarm["TreatMissingData"]])
    return "ALARM" if all(breaching) else "OK"


def datapoints(alarm: dict[str, Any], records: list[dict[str, Any]]) -> list[float]:
    """What CloudWatch takes from these EMF records into the alarm's metric: each dimension set of a directive is
    one metric, identified by the namespace, the metric's name and those dimensions' values."""
    wanted = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
    found: list[float] = []
    for record in records:
        for directive in record["_aws"]["CloudWatchMetrics"]:
            if directive["Namespace"] != alarm["Namespace"]:
                continue
            for dimensions in directive["Dimensions"]:
                if {name: record[name] for name in dimensions} != wanted:
                    continue
                for metric in directive["Metrics"]:
                    if metric["Name"] == alarm["MetricName"]:
                        value = record[metric["Name"]]
                        found += value if isinstance(value, list) else [value]
    return found


@contextmanager
def published_by(
    synthesized: Synthesized, stage: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[list[Any]], list[dict[str, Any]]]]:
    """Serialize metric sets as the synthesized ``stage`` function would: with its namespace and service name."""
    environment = synthesized.properties(synthesized.function_ids()[stage])["Environment"]["Variables"]
    with monkeypatch.context() as patch:
        for name in ("POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_SERVICE_NAME"):
            patch.setenv(name, environment[name])
        yield lambda metric_sets: [m.serialize_metric_set() for m in metric_sets]


def test_the_evaluation_follows_cloudwatch() -> None:
    sustained = {"Statistic": "Maximum", "ComparisonOperator": "GreaterThanThreshold", "Threshold": 10,
                 "EvaluationPeriods": 3, "TreatMissingData": "notBreaching"}  # fmt: skip
    assert state(sustained, [[11], [5, 12], [20]]) == "ALARM"
    assert state(sustained, [[11], [], [20]]) == "OK"
    assert state(sustained, [[11], [10], [20]]) == "OK"
    assert state({**sustained, "TreatMissingData": "breaching"}, [[11], [], [20]]) == "ALARM"
    assert state({**sustained, "Statistic": "Sum", "EvaluationPeriods": 1}, [[6, 6]]) == "ALARM"


def extracted(table: str, watermark: str) -> dict[str, Any]:
    return {"table": table, "stage": "extract", "status": SUCCEEDED, "watermark": watermark}


def loaded(table: str, newest: str) -> dict[str, Any]:
    return {"table": table, "stage": "load", "status": SUCCEEDED, "newest_loaded": newest}


def report_of(minutes_behind: float) -> dict[str, Any]:
    """The report's input for a run in which fact_sales_order's load trails its extract by ``minutes_behind``."""
    newest = datetime(2026, 12, 1, 12)
    return {
        "extracted": [extracted("sales_order", newest.isoformat()), extracted("payment", newest.isoformat())],
        "loaded_facts": [
            loaded("fact_sales_order", (newest - timedelta(minutes=minutes_behind)).isoformat()),
            loaded("fact_payment", newest.isoformat()),
        ],
    }


def test_warehouse_behind_fires_when_a_fact_trails_its_extract_for_three_periods_and_not_before(
    synthesized: Synthesized, monkeypatch: pytest.MonkeyPatch
) -> None:
    alarm = alarms(synthesized)["WarehouseBehind"]
    now = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)
    with published_by(synthesized, "report", monkeypatch) as serialize:

        def period(minutes_behind: float) -> list[float]:
            return datapoints(alarm, serialize(freshness_metrics(behind_seconds(report_of(minutes_behind), now=now))))

        assert period(45) == [45 * 60.0], "the worst fact, on the alarm's one series"
        assert state(alarm, [period(45), period(50), period(55)]) == "ALARM"
        assert state(alarm, [period(45), period(0), period(55)]) == "OK"
        assert state(alarm, [period(0), period(0), period(0)]) == "OK"
        assert state(alarm, [period(20), period(25), period(29)]) == "OK", "within the threshold"


def test_held_fact_rows_stuck_fires_on_the_load_that_reports_them_and_clears_when_they_load(
    synthesized: Synthesized, monkeypatch: pytest.MonkeyPatch
) -> None:
    alarm = alarms(synthesized)["HeldFactRowsStuck"]
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    stuck = LoadResult("fact_sales_order", 1, 5, 3, kept=held.Settled(held=None, released=0, stuck=2))
    healthy = LoadResult("fact_sales_order", 1, 5, 5, newest_change=datetime(2026, 12, 1, 11, 59))
    with published_by(synthesized, "load", monkeypatch) as serialize:
        assert state(alarm, [datapoints(alarm, serialize(metrics_for(stuck, now=now)))]) == "ALARM"
        assert state(alarm, [datapoints(alarm, serialize(metrics_for(healthy, now=now)))]) == "OK"


def test_source_drift_fires_on_a_reconciliation_that_found_some_and_not_on_a_clean_one(
    synthesized: Synthesized, monkeypatch: pytest.MonkeyPatch
) -> None:
    alarm = alarms(synthesized)["SourceDrift"]
    clean = {"rows_changed": 0, "rows_missing": 0, "rows_deleted": 0}
    with published_by(synthesized, "extract", monkeypatch) as serialize:
        drifted = serialize(source_drift_metrics("staff", {**clean, "rows_deleted": 1}))
        assert state(alarm, [datapoints(alarm, drifted)]) == "ALARM"
        assert state(alarm, [datapoints(alarm, serialize(source_drift_metrics("staff", clean)))]) == "OK"


def test_warehouse_drift_fires_on_rows_restored_from_the_lake_and_not_on_a_table_that_agrees(
    synthesized: Synthesized, monkeypatch: pytest.MonkeyPatch
) -> None:
    alarm = alarms(synthesized)["WarehouseDrift"]
    with published_by(synthesized, "load", monkeypatch) as serialize:
        restored = serialize(warehouse_drift_metrics(VerifyResult("dim_staff", 3, 1, rows_missing=1)))
        assert state(alarm, [datapoints(alarm, restored)]) == "ALARM"
        agrees = serialize(warehouse_drift_metrics(VerifyResult("dim_staff", 3, 0)))
        assert state(alarm, [datapoints(alarm, agrees)]) == "OK"


def test_warehouse_stale_fires_on_30_minutes_without_a_successful_run(synthesized: Synthesized) -> None:
    alarm = alarms(synthesized)["WarehouseStale"]
    assert state(alarm, [[]]) == "ALARM", "no run at all: the schedule is off, or every run failed or hung"
    assert state(alarm, [[1]]) == "OK"


def test_one_failed_or_timed_out_execution_or_extract_error_fires_its_alarm(synthesized: Synthesized) -> None:
    found = alarms(synthesized)
    for name in ("ExecutionsFailed", "ExecutionsTimedOut", "ExtractErrors"):
        assert state(found[name], [[1]]) == "ALARM", name
        assert state(found[name], [[]]) == "OK", name


def test_every_tasks_error_but_the_plans_ends_in_a_failed_execution(synthesized: Synthesized) -> None:
    """Why ExecutionsFailed stands for the per-function error alarms: a Task's error that retries do not absorb
    either fails the execution (no Catch) or is caught into the run's results as a failed table, which the report
    reads and the 'Pipeline failed' state ends with; the plan's error alone is caught into a fallback that may
    succeed, which is ExtractErrors's to tell. (tests/test_failures.py runs these paths.)"""

    def caught_in(states: dict[str, Any], every: dict[str, dict[str, Any]]) -> dict[str, str]:
        caught = {}
        for name, state_ in states.items():
            every[name] = state_
            if state_["Type"] == "Map":
                caught |= caught_in((state_.get("ItemProcessor") or state_["Iterator"])["States"], every)
            for catch in state_.get("Catch", []):
                caught[name] = catch["Next"]
        return caught

    top, every = synthesized.deployed_definition()["States"], {}
    caught = caught_in(top, every)
    assert caught.pop("Plan which tables to extract, transform and load") == "Plan every table named"
    assert top["Plan every table named"]["Next"] == "Run the tables' work (Standard)", "the run goes on"
    assert caught.pop("Take the run lease") == "Report the refused input"
    assert top[top["Report the refused input"]["Next"]]["Type"] == "Fail"
    # an Express child that fails as a whole: its work is done again by the Standard child, once its Lambdas ended
    assert caught.pop("Run the tables' work (Express)") == "Let the Express child's invocations end"
    assert top["Let the Express child's invocations end"]["Next"] == "Run the tables' work (Standard)"
    # a Standard child that fails as a whole: a failed result the report counts
    assert caught.pop("Run the tables' work (Standard)") == "The tables' work failed"
    assert top["The tables' work failed"]["Parameters"]["extracted"][0]["status"] == "failed"
    assert top["The tables' work failed"]["Next"] == "Report run"
    assert caught.pop("Report run") == "The report failed"
    assert top["The report failed"]["Parameters"]["failed"] is True
    assert top["Did every table succeed?"]["Choices"][0] == {
        "Variable": "$.report.failed", "BooleanEquals": True, "Next": "Pipeline failed"}  # fmt: skip
    assert top["Pipeline failed"]["Type"] == "Fail"
    assert not caught, caught

    stages, every = synthesized.deployed_definition("express")["States"], {}
    per_table = caught_in(stages, every)
    assert per_table, "a table's extract, transform and load"
    for task, handler in per_table.items():  # a table's failure: a result the report counts as failed
        assert every[handler]["Type"] == "Pass" and every[handler]["Parameters"]["status"] == "failed", task
