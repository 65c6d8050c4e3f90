"""Alerts: the TLS-only topic and its e-mails, every alarm's metric, threshold and actions, the saved log queries
and the opt-in dashboard. Whether each alarm fires on its failure: test_cdk_alarms_fire.py."""

from __future__ import annotations

import json
import re
from typing import Any

from aws_cdk.assertions import Match

from lambdas.common.tables import FACTS
from lambdas.load.held import STUCK_ROWS_METRIC
from lambdas.report.freshness import BEHIND_METRIC
from tests.cdk.support import Synthesized, rendered


def alarms(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    """Alarm name (without the stack prefix) -> properties."""
    return {
        a["Properties"]["AlarmName"].removeprefix("TotesysEtl-"): a["Properties"]
        for a in synthesized.resources("AWS::CloudWatch::Alarm").values()
    }


def test_topic_enforces_tls_and_has_no_subscriptions_by_default(synthesized: Synthesized) -> None:
    topic = synthesized.topic_id()
    synthesized.template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "Topics": [{"Ref": topic}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "sns:Publish",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            },
        },
    )
    synthesized.template.resource_count_is("AWS::SNS::Subscription", 0)


def test_alert_emails_become_email_subscriptions(variant: Synthesized) -> None:
    topic = variant.topic_id()
    subscriptions = [s["Properties"] for s in variant.resources("AWS::SNS::Subscription").values()]

    assert sorted(s["Endpoint"] for s in subscriptions) == ["data-team@example.org", "ops@example.com"]
    assert all(s["Protocol"] == "email" and s["TopicArn"] == {"Ref": topic} for s in subscriptions)


def test_execution_alarms_notify_the_topic_when_they_fire(synthesized: Synthesized) -> None:
    logical, _ = synthesized.state_machine()
    topic = synthesized.topic_id()
    found = alarms(synthesized)

    for name in ("ExecutionsFailed", "ExecutionsTimedOut"):
        alarm = found[name]
        assert alarm["Namespace"] == "AWS/States"
        assert alarm["MetricName"] == name
        assert alarm["Dimensions"] == [{"Name": "StateMachineArn", "Value": {"Ref": logical}}]
        assert (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"]) == ("Sum", 300, 1)
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
        assert alarm["TreatMissingData"] == "notBreaching"
        assert alarm["AlarmActions"] == [{"Ref": topic}]
        assert "OKActions" not in alarm, "an event alarm's return to OK says nothing"


def test_the_one_function_error_alarm_is_the_extracts_for_the_plan_whose_failure_a_run_survives(
    synthesized: Synthesized,
) -> None:
    """Every other function's error that retries do not absorb fails the run (ExecutionsFailed): a Task without a
    Catch fails the execution, and a table's Catch ends in the report's 'Pipeline failed'. The plan's Catch plans
    every table instead, and the run may succeed: only the extract's Errors metric sees it."""
    topic = synthesized.topic_id()
    alarm = alarms(synthesized)["ExtractErrors"]

    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Lambda", "Errors")
    assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": synthesized.function_ids()["extract"]}}]
    assert (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"]) == ("Sum", 300, 1)
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm["AlarmActions"] == [{"Ref": topic}] and "OKActions" not in alarm
    assert "plan" in alarm["AlarmDescription"]


def test_freshness_alarm_fires_when_no_run_succeeded_for_30_minutes(synthesized: Synthesized) -> None:
    """Step Functions' own metric: a quiet run succeeds without a load, so loads cannot be the evidence."""
    topic = synthesized.topic_id()
    logical, _ = synthesized.state_machine()
    alarm = alarms(synthesized)["WarehouseStale"]

    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/States", "ExecutionsSucceeded")
    assert alarm["Dimensions"] == [{"Name": "StateMachineArn", "Value": {"Ref": logical}}]
    assert (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"]) == ("Sum", 1800, 1)
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("LessThanThreshold", 1)
    assert alarm["TreatMissingData"] == "breaching", "no metric at all means no run succeeded"
    assert alarm["AlarmActions"] == [{"Ref": topic}]
    assert alarm["OKActions"] == [{"Ref": topic}], "operators learn when the warehouse is fresh again"


def test_a_warehouse_behind_the_extracted_changes_alarms_even_while_runs_succeed(synthesized: Synthesized) -> None:
    topic = synthesized.topic_id()
    alarm = alarms(synthesized)["WarehouseBehind"]

    assert (alarm["Namespace"], alarm["MetricName"]) == ("TotesysEtl", BEHIND_METRIC)
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "totesys-report"}], "one alarm for every fact"
    assert (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"]) == ("Maximum", 300, 3)
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 1800)
    assert alarm["TreatMissingData"] == "notBreaching", "no runs at all is WarehouseStale's alarm"
    assert alarm["AlarmActions"] == [{"Ref": topic}]
    assert alarm["OKActions"] == [{"Ref": topic}], "operators learn when the warehouse has caught up"


def test_the_functions_that_publish_metrics_have_the_namespace(synthesized: Synthesized) -> None:
    """Powertools refuses to publish a metric without a namespace: the run would fail where it publishes."""
    variables = [f["Properties"]["Environment"]["Variables"]
                 for f in synthesized.resources("AWS::Lambda::Function").values()]  # fmt: skip
    by_service = {v["POWERTOOLS_SERVICE_NAME"]: v for v in variables if "POWERTOOLS_SERVICE_NAME" in v}
    for stage in ("extract", "load", "report"):
        assert by_service[f"totesys-{stage}"]["POWERTOOLS_METRICS_NAMESPACE"] == "TotesysEtl", stage


def test_a_fact_row_held_past_its_configured_age_fires_an_alarm_until_it_loads(synthesized: Synthesized) -> None:
    topic = synthesized.topic_id()
    alarm = alarms(synthesized)["HeldFactRowsStuck"]

    assert (alarm["Namespace"], alarm["MetricName"]) == ("TotesysEtl", STUCK_ROWS_METRIC)
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "totesys-load"}], "one alarm for every fact"
    assert (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"]) == ("Maximum", 300, 1)
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm["AlarmActions"] == [{"Ref": topic}]
    assert alarm["OKActions"] == [{"Ref": topic}], "operators learn when the stuck rows have loaded"
    assert "never dropped" in alarm["AlarmDescription"]


def test_there_are_exactly_these_alarms(synthesized: Synthesized) -> None:
    """One per failure no other alarm catches (docs/operations.md#alarms); each is $0.10 a month, ten are free."""
    assert set(alarms(synthesized)) == {
        "ExecutionsFailed",
        "ExecutionsTimedOut",
        "ExtractErrors",
        "WarehouseStale",
        "WarehouseBehind",
        "SourceDrift",
        "WarehouseDrift",
        "HeldFactRowsStuck",
    }, "docs/deploy.md and docs/operations.md name them"


def test_there_is_no_dashboard_unless_asked_for(synthesized: Synthesized, variant: Synthesized) -> None:
    """$3 a month beyond an account's first three: opt-in with the context value dashboard=true (docs/cost.md)."""
    synthesized.template.resource_count_is("AWS::CloudWatch::Dashboard", 0)
    assert "DashboardName" not in synthesized.template_json.get("Outputs", {})
    variant.template.resource_count_is("AWS::CloudWatch::Dashboard", 1)
    assert "DashboardName" in variant.template_json["Outputs"]


def saved_queries(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    return {
        q["Properties"]["Name"].removeprefix("TotesysEtl/"): q["Properties"]
        for q in synthesized.resources("AWS::Logs::QueryDefinition").values()
    }


def test_the_detail_per_table_is_in_saved_log_queries_not_metric_series(synthesized: Synthesized) -> None:
    """Saved Logs Insights queries are free; a metric series per table costs $0.30 a month each."""
    ids = synthesized.function_ids()
    queries = saved_queries(synthesized)

    def log_group(stage: str) -> list[Any]:
        return [synthesized.properties(ids[stage])["LoggingConfig"]["LogGroup"]]

    rows = queries["Rows loaded per warehouse table"]
    assert "stats sum(rows_written) by table" in rows["QueryString"] and rows["LogGroupNames"] == log_group("load")
    lag = queries["Source lag of the loaded facts (seconds, maximum)"]
    assert "stats max(source_lag_seconds) by table" in lag["QueryString"] and lag["LogGroupNames"] == log_group("load")
    held = queries["Fact rows held back for a missing dimension row (maximum)"]
    assert "stats max(rows_held) by table" in held["QueryString"]
    behind = queries["Facts behind the changes extracted (seconds, maximum; alarm above 30 minutes)"]
    assert behind["LogGroupNames"] == log_group("report")
    for fact in FACTS:
        assert f"max(behind_seconds.{fact}) as {fact}" in behind["QueryString"]
    drift = queries["Drift found by reconciliations, per table"]
    assert "stats sum(drift_rows) by table" in drift["QueryString"] and drift["LogGroupNames"] == log_group("extract")
    restored = queries["Warehouse rows restored by reconciliations, per table"]
    assert "stats sum(rows_restored) by table" in restored["QueryString"]


def dashboard_widgets(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    ((_, dashboard),) = synthesized.resources("AWS::CloudWatch::Dashboard").items()
    body = json.loads(rendered(dashboard["Properties"]["DashboardBody"]))
    return {widget["properties"]["title"]: widget["properties"] for widget in body["widgets"]}


def metric_rows(widget: dict[str, Any]) -> list[list[Any]]:
    return [[part for part in row if not isinstance(part, dict)] for row in widget.get("metrics", [])]


def test_dashboard_shows_executions_durations_rows_errors_and_alarms(variant: Synthesized) -> None:
    logical, _ = variant.state_machine()
    ids = variant.function_ids()
    widgets = dashboard_widgets(variant)

    executions = metric_rows(widgets["Executions"])
    for metric in ("ExecutionsStarted", "ExecutionsSucceeded", "ExecutionsFailed"):
        assert ["AWS/States", metric, "StateMachineArn", f"<ref:{logical}>"] in executions

    durations = metric_rows(widgets["Lambda duration per stage (maximum, ms)"])
    assert durations == [["AWS/Lambda", "Duration", "FunctionName", f"<ref:{i}>"] for i in ids.values()]

    errors = metric_rows(widgets["Lambda errors and throttles per stage"])
    for i in ids.values():
        assert ["AWS/Lambda", "Errors", "FunctionName", f"<ref:{i}>"] in errors
        assert ["AWS/Lambda", "Throttles", "FunctionName", f"<ref:{i}>"] in errors

    load_logs = rendered(variant.properties(ids["load"])["LoggingConfig"]["LogGroup"])
    report_logs = rendered(variant.properties(ids["report"])["LoggingConfig"]["LogGroup"])
    for title, query in saved_queries(variant).items():  # the saved queries, except the reconciliation's
        if title in widgets:
            assert query["QueryString"].splitlines()[-1] in widgets[title]["query"], title
    rows = widgets["Rows loaded per warehouse table"]  # the load's log lines: no metric series per table
    assert rows["region"] and "stats sum(rows_written) by table" in rows["query"]
    assert f"SOURCE '{load_logs}'" in rows["query"]
    lag = widgets["Source lag of the loaded facts (seconds, maximum)"]
    assert "stats max(source_lag_seconds) by table" in lag["query"] and f"SOURCE '{load_logs}'" in lag["query"]
    behind = widgets["Facts behind the changes extracted (seconds, maximum; alarm above 30 minutes)"]
    assert f"SOURCE '{report_logs}'" in behind["query"]
    assert all(f"max(behind_seconds.{fact})" in behind["query"] for fact in FACTS)
    worst = metric_rows(widgets["The worst fact behind (the alarm's series)"])
    assert worst == [["TotesysEtl", BEHIND_METRIC, "service", "totesys-report"]]
    held = widgets["Fact rows held back for a missing dimension row (maximum)"]  # the load's log lines
    assert "stats max(rows_held) by table" in held["query"] and f"SOURCE '{load_logs}'" in held["query"]
    stuck = metric_rows(widgets["Fact rows held for too long (maximum; alarm at 1)"])
    assert stuck == [["TotesysEtl", STUCK_ROWS_METRIC, "service", "totesys-load"]]

    alarm_widget = widgets["Alarms"]
    assert len(alarm_widget["alarms"]) == len(variant.resources("AWS::CloudWatch::Alarm"))
    assert all(re.match(r"^<ref:Monitoring\w+Alarm\w+\.Arn>$", a) for a in alarm_widget["alarms"])


def test_drift_found_by_a_reconciliation_alarms_on_the_extracts_total(synthesized: Synthesized) -> None:
    alarm = alarms(synthesized)["SourceDrift"]
    assert alarm["MetricName"] == "DriftRows"
    assert alarm["Namespace"] == "TotesysEtl"
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "totesys-extract"}]
    assert (alarm["Statistic"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        "Sum", 1, "GreaterThanOrEqualToThreshold")  # fmt: skip
    assert alarm["TreatMissingData"] == "notBreaching"
    assert len(alarm["AlarmActions"]) == 1


def test_warehouse_rows_restored_by_a_reconciliation_alarm_on_the_loads_total(synthesized: Synthesized) -> None:
    alarm = alarms(synthesized)["WarehouseDrift"]
    assert alarm["MetricName"] == "WarehouseDriftRows"
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "totesys-load"}]
    assert (alarm["Statistic"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        "Sum", 1, "GreaterThanOrEqualToThreshold")  # fmt: skip
    assert len(alarm["AlarmActions"]) == 1


def test_the_behind_alarm_says_the_change_signals_delay_is_not_part_of_its_measure(synthesized: Synthesized) -> None:
    behind = alarms(synthesized)["WarehouseBehind"]
    assert "EXTRACT_SIGNAL_MAX_AGE_SECONDS plus one schedule interval" in behind["AlarmDescription"]
