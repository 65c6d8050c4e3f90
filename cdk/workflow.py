"""The pipeline state machine, deployed from the one ASL file, and the schedule that starts it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import Annotations, Duration, Stack
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cdk.nag import acknowledge

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")

# A scheduled start that cannot be delivered within one period is dropped: the next one does the same work.
SCHEDULE_MAX_EVENT_AGE = Duration.minutes(5)
SCHEDULE_RETRY_ATTEMPTS = 2


def asl_placeholders(definition_file: Path) -> set[str]:
    """Names of the ``${Name}`` placeholders that an ASL file expects to be substituted."""
    return set(_PLACEHOLDER.findall(definition_file.read_text(encoding="utf-8")))


class Workflow(Construct):
    """A STANDARD state machine with full logging (and X-Ray tracing), started by an EventBridge Scheduler
    schedule with ``schedule_input`` as the execution input.

    ``substitutions`` must supply exactly the placeholders the ASL file uses, so that a renamed placeholder
    fails the synth rather than deploying a definition with a literal ``${...}`` in it.

    The execution timeout is the ASL file's own top-level ``TimeoutSeconds``: CDK's ``timeout`` property only
    applies to definitions built in CDK and is silently dropped for a file, so it is not offered here. A file
    without one gets a synth warning (Step Functions' own limit is a year).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        definition_file: Path,
        substitutions: Mapping[str, str],
        schedule_expression: str,
        schedule_input: Mapping[str, Any],
        log_retention: logs.RetentionDays,
        tracing: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        expected = asl_placeholders(definition_file)
        if expected != set(substitutions):
            raise ValueError(
                f"{definition_file.name} expects substitutions {sorted(expected)}, got {sorted(substitutions)}"
            )
        definition = json.loads(definition_file.read_text(encoding="utf-8"))
        self.timeout_seconds: int | None = definition.get("TimeoutSeconds")
        if self.timeout_seconds is None:
            Annotations.of(self).add_warning_v2(
                "totesys:asl-timeout",
                f"{definition_file.name} sets no top-level TimeoutSeconds, so a stuck execution is only "
                "stopped by Step Functions' one-year limit; add one to the ASL file.",
            )

        self.log_group = logs.LogGroup(
            self,
            "ExecutionLogs",
            # The /aws/vendedlogs/ prefix keeps the CloudWatch Logs resource policy small.
            log_group_name=f"/aws/vendedlogs/states/{Stack.of(self).stack_name}-pipeline",
            retention=log_retention,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_file(str(definition_file)),
            definition_substitutions=dict(substitutions),
            tracing_enabled=tracing,
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
        )
        acknowledge(
            self.state_machine.role,
            "AwsSolutions-IAM5[Resource::*]",
            reason="Execution logging (logs:CreateLogDelivery, logs:*LogDelivery*, logs:PutResourcePolicy, "
            "logs:DescribeResourcePolicies, logs:DescribeLogGroups)"
            + (" and X-Ray tracing (xray:PutTraceSegments, xray:GetSampling*)" if tracing else "")
            + " support no resource-level permissions.",
        )
        if not tracing:
            reason = (
                "X-Ray tracing is switched off for this deployment with the CDK context tracing=false "
                "(docs/deploy.md); it is on by default."
            )
            acknowledge(self.state_machine, "AwsSolutions-SF2", reason=reason)
            acknowledge(self.state_machine, "Serverless-StepFunctionStateMachineXray", reason=reason)

        self.schedule = scheduler.Schedule(
            self,
            "Schedule",
            description="Starts the totesys ETL pipeline",
            schedule=scheduler.ScheduleExpression.expression(schedule_expression),
            target=scheduler_targets.StepFunctionsStartExecution(
                self.state_machine,
                input=scheduler.ScheduleTargetInput.from_object(dict(schedule_input)),
                retry_attempts=SCHEDULE_RETRY_ATTEMPTS,
                max_event_age=SCHEDULE_MAX_EVENT_AGE,
            ),
        )
