"""Alerting and observability: the alerts topic, the alarms on the pipeline, its saved log queries and the opt-in
dashboard."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from cdk.functions import METRICS_NAMESPACE, PipelineFunctions, service_name
from cdk.nag import acknowledge
from cdk.workflow import Workflow
from lambdas.load.held import STUCK_ROWS_METRIC
from lambdas.load.verify import DRIFT_METRIC as WAREHOUSE_DRIFT_METRIC
from lambdas.report.freshness import BEHIND_METRIC

PERIOD = Duration.minutes(5)
# What lambdas/extract/handler.py's drift_metrics publishes (that module is too heavy for the CDK app to import;
# tests/cdk/test_cdk_alarms_fire.py holds the two together).
SOURCE_DRIFT_METRIC = "DriftRows"
# The freshness alarm fires when no run succeeded for this long (six scheduled runs at the default rate).
FRESHNESS_PERIOD = Duration.minutes(30)
# The warehouse may trail the changes extracted by this much (fact rows held a while for a dimension row that
# arrives in a later run) before that is news; in SUSTAINED_PERIODS consecutive periods, i.e. several runs.
BEHIND_THRESHOLD = Duration.minutes(30)
# The warehouse must trail for this many consecutive 5-minute periods before WarehouseBehind fires.
SUSTAINED_PERIODS = 3

Alarm = cloudwatch.Alarm
GE = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD


class AlertTopic(Construct):
    """A TLS-only SNS topic that e-mails ``alert_emails``; alarms and the report function publish to it."""

    def __init__(self, scope: Construct, construct_id: str, *, alert_emails: Sequence[str]) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "Topic", display_name="Totesys ETL alerts", enforce_ssl=True)
        for address in alert_emails:
            subscription = self.topic.add_subscription(subscriptions.EmailSubscription(address))
            acknowledge(
                subscription,
                "Serverless-SNSRedrivePolicy",
                reason="An e-mail alert that SNS cannot deliver has no consumer to replay it from a dead-letter "
                "queue; the alarm state itself stays on the CloudWatch alarm and the dashboard.",
            )


class Monitoring(Construct):
    """The alarms an operator acts on, notifying ``topic``; the saved Logs Insights queries; optionally a dashboard.

    One alarm per failure that no other alarm catches (docs/operations.md#alarms says what each is for and why the
    others went): every Task's error ends in a failed run (Catch, then the report's ``Pipeline failed``), so
    ExecutionsFailed stands for the per-function error alarms, except the plan's, whose failure the run survives
    by planning every table. Throttles that the workflow's retries absorb only slow a run; those it cannot absorb
    fail it or time it out.

    Alarms on events (a failed or timed-out execution, a plan that failed, drift found) notify when they fire only:
    their return to OK just means that the next period had none. Alarms on conditions (no successful run for 30
    minutes, facts behind, rows held too long) also notify when they clear.

    The custom metrics are one series per alarm (a series costs $0.30 a month for every hour it is published,
    docs/cost.md); the detail per table is in log lines, which the saved queries (free) and the dashboard read.
    The dashboard costs $3 a month beyond an account's first three: it is created only with ``dashboard=True``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        workflow: Workflow,
        functions: PipelineFunctions,
        topic: sns.ITopic,
        fact_tables: Sequence[str],
        dashboard: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self._prefix = Stack.of(self).stack_name
        self._action = cw_actions.SnsAction(topic)
        state_machine = workflow.state_machine
        self.alarms: list[Alarm] = []

        self.executions_failed_alarm = self._event_alarm(
            "ExecutionsFailed",
            state_machine.metric_failed(period=PERIOD, statistic=cloudwatch.Stats.SUM),
            "A pipeline execution failed: the report e-mail (or the execution's 'Pipeline failed' cause in the "
            "Step Functions console) names each failed table and the input that re-runs it. Every function's "
            "error that retries did not absorb ends here (the lease, a table's extract, transform or load, the "
            "report).",
        )
        self.executions_timed_out_alarm = self._event_alarm(
            "ExecutionsTimedOut",
            state_machine.metric_timed_out(period=PERIOD, statistic=cloudwatch.Stats.SUM),
            "A pipeline execution ran past the TimeoutSeconds of pipeline.asl.json and was stopped: something hung "
            "(a lock, a connection, throttling the retries kept waiting on). While it ran, the scheduled runs found "
            "the lease taken and succeeded without work, so WarehouseStale could not see it. Redrive it, or let the "
            "next scheduled run continue from the committed heads.",
        )
        self.plan_failed_alarm = self._event_alarm(
            "ExtractErrors",
            functions.extract.metric_errors(period=PERIOD, statistic=cloudwatch.Stats.SUM),
            "The extract function raised. What only this alarm sees: a run whose plan failed (the change signals, "
            "heads or cursors could not be read) falls back to every table and may then succeed, at the cost of "
            "a full run each time; the plan's error is in the execution's $.plan.error and the extract's log. An "
            "error of a table's extract that retries did not absorb also fails the run (ExecutionsFailed).",
        )

        # Step Functions' own metric (no charge): a run with nothing to do succeeds without touching the warehouse,
        # so "a load succeeded" would call a quiet source stale; WarehouseBehind tells loads that do not catch up.
        self.runs_succeeded = state_machine.metric_succeeded(period=FRESHNESS_PERIOD, statistic=cloudwatch.Stats.SUM)
        self.freshness_alarm = self._condition_alarm(
            "WarehouseStale",
            self.runs_succeeded,
            "No pipeline run succeeded in the last 30 minutes: the schedule is disabled, or runs fail, are stopped, "
            "throttled or hang, and the warehouse is falling behind totesys.",
            threshold=1,
            comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
        )

        self.warehouse_behind = cloudwatch.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name=BEHIND_METRIC,
            dimensions_map={"service": service_name("report")},
            statistic=cloudwatch.Stats.MAXIMUM,
            period=PERIOD,
        )
        self.behind_alarm = self._condition_alarm(
            "WarehouseBehind",
            self.warehouse_behind,
            f"A fact in the warehouse has trailed the newest totesys change the extract has seen by more than "
            f"{BEHIND_THRESHOLD.to_minutes():g} minutes, in each of the last {SUSTAINED_PERIODS} 5-minute periods, "
            "although runs report success: changes are extracted and not loaded (a transform or load that writes "
            "nothing, or fact rows held back). The report's behind_seconds (saved query 'facts behind') names the "
            "fact; a quiet source keeps it at zero. It counts from the extract: a change the change signal has not "
            "counted yet (its writer has not flushed its statistics: up to 10 s, or while it stays inside a "
            "transaction) is not seen until the forced scan, EXTRACT_SIGNAL_MAX_AGE_SECONDS plus one schedule "
            "interval at most, and is not part of this measure (docs/guarantees.md).",
            threshold=BEHIND_THRESHOLD.to_seconds(),
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=SUSTAINED_PERIODS,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,  # no runs: WarehouseStale's to tell
        )

        self.drift_rows = cloudwatch.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name=SOURCE_DRIFT_METRIC,
            dimensions_map={"service": service_name("extract")},
            statistic=cloudwatch.Stats.SUM,
            period=PERIOD,
        )
        self.drift_alarm = self._event_alarm(
            "SourceDrift",
            self.drift_rows,
            "A reconciliation found rows where totesys and the lake differed (changed without a new last_updated, "
            "missing, or deleted upstream). They were fed through the pipeline, but something upstream or in the "
            "lake's state changed unseen: read the run's extract results (docs/operations.md#reconciliation).",
        )

        self.warehouse_drift_rows = cloudwatch.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name=WAREHOUSE_DRIFT_METRIC,
            dimensions_map={"service": service_name("load")},
            statistic=cloudwatch.Stats.SUM,
            period=PERIOD,
        )
        self.warehouse_drift_alarm = self._event_alarm(
            "WarehouseDrift",
            self.warehouse_drift_rows,
            "A reconciliation found warehouse rows that differed from what the pipeline loaded (deleted or edited "
            "in the warehouse itself) and restored them from the lake. Someone or something writes to the "
            "warehouse: read the run's load results, 'verified' (docs/operations.md#reconciliation).",
        )

        self.stuck_held_rows = cloudwatch.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name=STUCK_ROWS_METRIC,
            dimensions_map={"service": service_name("load")},
            statistic=cloudwatch.Stats.MAXIMUM,
            period=PERIOD,
        )
        self.stuck_held_rows_alarm = self._condition_alarm(
            "HeldFactRowsStuck",
            self.stuck_held_rows,
            "Fact rows have been held back for longer than held_stuck_after_seconds: the dimension rows they "
            "point at never reached the warehouse (a reference table still failing, or rows deleted upstream). "
            "The load's 'fact rows held for too long' log line and the run's loaded_facts results name their "
            "keys; they are kept, never dropped, and load as soon as their references exist.",
            threshold=1,
            comparison=GE,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

        self.queries = self._saved_queries(functions, fact_tables)
        self.dashboard = self._dashboard(workflow, functions) if dashboard else None

    def _event_alarm(self, name: str, metric: cloudwatch.IMetric, description: str) -> Alarm:
        alarm = Alarm(
            self,
            f"{name}Alarm",
            alarm_name=f"{self._prefix}-{name}",
            alarm_description=description,
            metric=metric,
            threshold=1,
            evaluation_periods=1,
            comparison_operator=GE,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(self._action)
        self.alarms.append(alarm)
        return alarm

    def _condition_alarm(
        self,
        name: str,
        metric: cloudwatch.IMetric,
        description: str,
        *,
        threshold: float,
        comparison: cloudwatch.ComparisonOperator,
        evaluation_periods: int,
        treat_missing_data: cloudwatch.TreatMissingData,
    ) -> Alarm:
        alarm = Alarm(
            self,
            f"{name}Alarm",
            alarm_name=f"{self._prefix}-{name}",
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            evaluation_periods=evaluation_periods,
            comparison_operator=comparison,
            treat_missing_data=treat_missing_data,
        )
        alarm.add_alarm_action(self._action)
        alarm.add_ok_action(self._action)
        self.alarms.append(alarm)
        return alarm

    def _saved_queries(
        self, functions: PipelineFunctions, fact_tables: Sequence[str]
    ) -> dict[str, tuple[logs.ILogGroup, list[str]]]:
        """The per-table detail as Logs Insights queries, saved in the console (free): what the metric series per
        table showed before they were cut. The dashboard shows the same queries."""
        found = {
            "Rows loaded per warehouse table": (
                functions.load.log_group,
                ['filter message = "loaded"', "stats sum(rows_written) by table, bin(5m)"],
            ),
            "Fact rows held back for a missing dimension row (maximum)": (
                functions.load.log_group,
                ['filter message = "loaded" and ispresent(rows_held)', "stats max(rows_held) by table, bin(5m)"],
            ),
            "Source lag of the loaded facts (seconds, maximum)": (
                functions.load.log_group,
                [
                    'filter message = "loaded" and ispresent(source_lag_seconds)',
                    "stats max(source_lag_seconds) by table, bin(5m)",
                ],
            ),
            "Facts behind the changes extracted (seconds, maximum; alarm above 30 minutes)": (
                functions.report.log_group,
                [
                    "filter " + " or ".join(f"ispresent(behind_seconds.{fact})" for fact in fact_tables),
                    "stats "
                    + ", ".join(f"max(behind_seconds.{fact}) as {fact}" for fact in fact_tables)
                    + " by bin(5m)",
                ],
            ),
            "Drift found by reconciliations, per table": (
                functions.extract.log_group,
                ["filter ispresent(drift_rows)", "stats sum(drift_rows) by table, bin(1h)"],
            ),
            "Warehouse rows restored by reconciliations, per table": (
                functions.load.log_group,
                ["filter ispresent(rows_restored)", "stats sum(rows_restored) by table, bin(1h)"],
            ),
        }
        for number, (title, (log_group, lines)) in enumerate(found.items()):
            logs.QueryDefinition(
                self,
                f"Query{number}",
                query_definition_name=f"{self._prefix}/{title}",
                query_string=logs.QueryString(
                    filter_statements=[line.removeprefix("filter ") for line in lines if line.startswith("filter ")],
                    stats_statements=[line.removeprefix("stats ") for line in lines if line.startswith("stats ")],
                ),
                log_groups=[log_group],
            )
        return found

    def _dashboard(self, workflow: Workflow, functions: PipelineFunctions) -> cloudwatch.Dashboard:
        state_machine = workflow.state_machine
        sum_5m = {"period": PERIOD, "statistic": cloudwatch.Stats.SUM}
        stages = functions.by_stage

        def per_stage(metric: str, statistic: str) -> list[cloudwatch.IMetric]:
            return [
                function.metric(metric, period=PERIOD, statistic=statistic, label=stage)
                for stage, function in stages.items()
            ]

        def query(title: str, view: cloudwatch.LogQueryVisualizationType) -> cloudwatch.LogQueryWidget:
            log_group, lines = self.queries[title]
            return cloudwatch.LogQueryWidget(
                title=title, log_group_names=[log_group.log_group_name], query_lines=lines, view=view, width=12
            )

        line, stacked = cloudwatch.LogQueryVisualizationType.LINE, cloudwatch.LogQueryVisualizationType.STACKEDAREA
        dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{self._prefix}-pipeline",
            default_interval=Duration.hours(24),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Executions",
                left=[
                    state_machine.metric_started(label="started", **sum_5m),
                    state_machine.metric_succeeded(label="succeeded", **sum_5m),
                    state_machine.metric_failed(label="failed", **sum_5m),
                    state_machine.metric_timed_out(label="timed out", **sum_5m),
                    state_machine.metric_aborted(label="aborted", **sum_5m),
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Successful runs (freshness: alarm below 1 per 30 minutes)",
                left=[self.runs_succeeded.with_(label="runs succeeded")],
                left_annotations=[cloudwatch.HorizontalAnnotation(value=1, label="alarm threshold")],
                width=12,
            ),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Lambda duration per stage (maximum, ms)",
                left=per_stage("Duration", cloudwatch.Stats.MAXIMUM),
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Lambda errors and throttles per stage",
                left=per_stage("Errors", cloudwatch.Stats.SUM),
                right=[
                    function.metric_throttles(label=f"{stage} throttles", **sum_5m)
                    for stage, function in stages.items()
                ],
                width=12,
            ),
        )
        dashboard.add_widgets(
            query("Rows loaded per warehouse table", stacked),
            query("Source lag of the loaded facts (seconds, maximum)", line),
        )
        dashboard.add_widgets(
            query("Fact rows held back for a missing dimension row (maximum)", line),
            cloudwatch.GraphWidget(
                title="Fact rows held for too long (maximum; alarm at 1)",
                left=[self.stuck_held_rows.with_(label="stuck")],
                width=12,
            ),
        )
        dashboard.add_widgets(
            query("Facts behind the changes extracted (seconds, maximum; alarm above 30 minutes)", line),
            cloudwatch.GraphWidget(
                title="The worst fact behind (the alarm's series)",
                left=[self.warehouse_behind.with_(label="worst fact")],
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(value=BEHIND_THRESHOLD.to_seconds(), label="alarm threshold")
                ],
                width=12,
            ),
        )
        dashboard.add_widgets(cloudwatch.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=24))
        return dashboard
