"""docs/cost.md prices what the code does: the counts it uses are measured here again (issue 21).

Per kind of run, from a local execution: the states the Standard parent entered, the states of the child that ran
the tables' work and whether it was the Express or the Standard one, and the Lambda tasks scheduled (what Step
Functions and Lambda bill, counted from the histories Step Functions records), its S3 requests, log bytes and
GB-seconds. Per month, from the synthesized template and the code that publishes metrics: the metric series,
alarms, dashboards and secrets. States and invocations must match exactly; the other per-run figures, which
move with timing and data, within a quarter.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from benchmarks import cost
from lambdas.common.tables import FACTS, PRIMARY_KEYS, SOURCE_TABLES, WAREHOUSE_TABLES
from lambdas.extract.handler import drift_metrics
from lambdas.load.handler import drift_metrics as warehouse_drift_metrics
from lambdas.load.handler import metrics_for
from lambdas.load.loader import LoadResult
from lambdas.load.verify import VerifyResult
from lambdas.report.freshness import freshness_metrics
from statemachine.local import runner
from statemachine.local.counts import run_counts
from statemachine.local.deployment import LOCAL_FUNCTION_NAMES, synthesized_template
from tests.conftest import Databases
from tests.test_change_signal import counted

TRANSACTION_TABLES = ("payment", "purchase_order", "sales_order", "transaction")


def touch(table: str) -> str:
    key = PRIMARY_KEYS[table]
    return f"UPDATE {table} SET last_updated = clock_timestamp() WHERE {key} = (SELECT min({key}) FROM {table})"


def memory_gb() -> dict[str, float]:
    """Each function's memory in the synthesized template, by its local name."""
    found = {}
    for resource in synthesized_template()["Resources"].values():
        if resource["Type"] == "AWS::Lambda::Function":
            stage = resource["Properties"]["Handler"].split(".")[1]
            found[LOCAL_FUNCTION_NAMES[stage]] = resource["Properties"]["MemorySize"] / 1024
    return found


def logged(event: dict[str, Any]) -> bool:
    """Whether the execution logs record the event: every state machine logs its failures with their data
    (LogLevel ERROR, cdk/workflow.py); a Standard execution's whole history stays in the console and the API."""
    return event["type"].endswith(("Failed", "TimedOut", "Aborted"))


def measured(db: Databases, outcome: runner.RunOutcome, title: str) -> cost.RunKind:
    assert outcome.succeeded, outcome
    counts = run_counts(outcome.history)
    memory = memory_gb()
    function = {stage: name for stage, name in LOCAL_FUNCTION_NAMES.items()} | {"plan": "totesys-extract"}
    calls = [i.calls for i in outcome.invocations]
    logs = db.lake / "logs" / f"{outcome.execution_arn.rsplit(':', 1)[-1]}.jsonl"
    assert len(counts.child_states) <= 1 and counts.express_requests <= 1, counts  # one child, not a fallback
    child = next(iter(counts.child_states), "")
    return cost.RunKind(
        title,
        counts.states,
        counts.invocations_by_function,
        sum(c.get("s3:GetObject", 0) for c in calls),
        sum(c.get("s3:PutObject", 0) + c.get("s3:DeleteObject", 0) for c in calls),
        logs.stat().st_size + len(json.dumps([e for e in outcome.history if logged(e)], default=str)),
        round(sum(memory[function[i.stage]] * i.seconds for i in outcome.invocations), 1),
        child,
        counts.child_states.get(child, 0),
        round(counts.express_seconds, 1),
    )


def within_a_quarter(found: float, documented: float) -> bool:
    return abs(found - documented) <= 0.25 * max(documented, 1)


def test_a_figure_a_quarter_off_is_a_drift() -> None:
    assert within_a_quarter(100, 80) and within_a_quarter(0, 0)
    assert not within_a_quarter(126, 100) and not within_a_quarter(71, 0)


def test_each_kind_of_run_does_what_docs_cost_md_prices(reader: Databases) -> None:
    assert reader.run().succeeded  # the initial load: once, not priced per month
    found = {"quiet": measured(reader, reader.run(), cost.RUN_KINDS["quiet"].title)}
    counted(reader, *(touch(table) for table in TRANSACTION_TABLES))
    found["seed"] = measured(reader, reader.run(), cost.RUN_KINDS["seed"].title)
    counted(reader, *(touch(table) for table in SOURCE_TABLES))
    found["busy"] = measured(reader, reader.run(), cost.RUN_KINDS["busy"].title)
    found["reconcile"] = measured(reader, reader.run(reconcile=True), cost.RUN_KINDS["reconcile"].title)

    report = json.dumps({name: kind.__dict__ for name, kind in found.items()})  # to copy into benchmarks/cost.py
    print(report)  # shown when the test fails
    for name, kind in found.items():
        documented = cost.RUN_KINDS[name]
        assert (kind.states, kind.invocations) == (documented.states, documented.invocations), name
        assert (kind.child, kind.child_states) == (documented.child, documented.child_states), name
        for figure in ("s3_get", "s3_put", "log_bytes"):
            assert within_a_quarter(getattr(kind, figure), getattr(documented, figure)), (name, figure)
    assert found["quiet"].states <= 12 and found["quiet"].calls <= 3
    # a run with work is a few parent states whatever the number of tables; incremental work runs in Express
    assert found["seed"].states == found["busy"].states <= found["quiet"].states + 1
    assert (found["seed"].child, found["busy"].child, found["reconcile"].child) == ("EXPRESS", "EXPRESS", "STANDARD")


def published_series() -> tuple[set[tuple[str, ...]], set[tuple[str, ...]], set[tuple[str, ...]]]:
    """(the series every run's report publishes, those a fact load publishes, those only a reconciliation
    publishes), from the code that publishes them."""

    def series(metric_sets: list[Any]) -> set[tuple[str, ...]]:
        found = set()
        for metric_set in metric_sets:
            serialized = metric_set.serialize_metric_set()
            (directive,) = serialized["_aws"]["CloudWatchMetrics"]
            (dimensions,) = directive["Dimensions"]
            for metric in directive["Metrics"]:
                found.add((metric["Name"], *(f"{d}={serialized[d]}" for d in dimensions)))
        return found

    loads = [m for fact in FACTS for m in metrics_for(LoadResult(fact, 1, 1, 1, newest_change=_now()), now=_aware())]
    loads += [m for table in ("dim_date", "dim_staff") for m in metrics_for(LoadResult(table, 1, 1, 1), now=_aware())]
    every_run = series(freshness_metrics(dict.fromkeys(FACTS, 0.0)))
    # drift series are published only by a reconciliation that finds drift: counted as if every one did
    drift = series([m for table in SOURCE_TABLES for m in drift_metrics(table, {"rows_changed": 1})])
    restored = [VerifyResult(table, rows_missing=1) for table in WAREHOUSE_TABLES]
    drift |= series([m for verified in restored for m in warehouse_drift_metrics(verified)])
    return every_run, series(loads), drift


def _aware() -> Any:
    from datetime import UTC, datetime

    return datetime(2026, 12, 1, 12, tzinfo=UTC)


def _now() -> Any:
    return _aware().replace(tzinfo=None)


@pytest.fixture
def metrics_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "TotesysEtl")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "totesys")


def test_the_fixed_resources_docs_cost_md_counts_are_the_stacks(metrics_environment: None) -> None:
    template = synthesized_template()
    types = [resource["Type"] for resource in template["Resources"].values()]
    secrets = {
        json.dumps(statement["Resource"], sort_keys=True)
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::IAM::Policy"
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]
        if "secretsmanager:GetSecretValue" in statement["Action"]
    }
    every_run, loads, drift = published_series()

    found = replace(cost.RESOURCES, run_series=len(every_run), metric_series=len(loads), reconcile_series=len(drift),
                    alarms=types.count("AWS::CloudWatch::Alarm"), dashboards=types.count("AWS::CloudWatch::Dashboard"),
                    secrets=len(secrets))  # fmt: skip
    assert found == cost.RESOURCES, (sorted(every_run), sorted(loads), sorted(drift))
    assert memory_gb() == cost.MEMORY_GB


def test_docs_cost_md_is_what_the_figures_render() -> None:
    assert cost.DOC_PATH.read_text(encoding="utf-8") == cost.render(), "run: python -m benchmarks.cost --write"
