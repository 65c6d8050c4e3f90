"""Alerting: an SNS topic with e-mail subscriptions and alarms on the pipeline's failed executions."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from cdk.workflow import Workflow


class Monitoring(Construct):
    """Alarms on the workflow it watches, publishing to a TLS-only topic that e-mails ``alert_emails``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        workflow: Workflow,
        alert_emails: Sequence[str],
        period: Duration | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        period = period or Duration.minutes(5)

        self.topic = sns.Topic(self, "AlertsTopic", display_name="Totesys ETL alerts", enforce_ssl=True)
        for address in alert_emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(address))

        state_machine = workflow.state_machine
        self.failed_alarm = cloudwatch.Alarm(
            self,
            "ExecutionsFailedAlarm",
            alarm_description="A totesys ETL execution failed: see the Step Functions console for the state "
            "that raised and its error.",
            metric=state_machine.metric_failed(period=period, statistic=cloudwatch.Stats.SUM),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.timed_out_alarm = cloudwatch.Alarm(
            self,
            "ExecutionsTimedOutAlarm",
            alarm_description="A totesys ETL execution exceeded the state machine timeout.",
            metric=state_machine.metric_timed_out(period=period, statistic=cloudwatch.Stats.SUM),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        action = cw_actions.SnsAction(self.topic)
        for alarm in (self.failed_alarm, self.timed_out_alarm):
            alarm.add_alarm_action(action)
