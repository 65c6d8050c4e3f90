"""The pipeline state machine, deployed from the one ASL file, and the schedule that starts it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import Annotations, Duration
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cdk.nag import acknowledge

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")

# Step Functions names: 1 to 80 characters; with CloudWatch Logs logging, only letters, digits, '-' and '_'.
STATE_MACHINE_NAME_MAX_LENGTH = 80
STATE_MACHINE_NAME_SUFFIX = "-pipeline"
_STATE_MACHINE_NAME = re.compile(rf"^[A-Za-z0-9_-]{{1,{STATE_MACHINE_NAME_MAX_LENGTH}}}$")
# The longest a STANDARD execution may run, whatever its definition says (one year).
MAX_EXECUTION_SECONDS = 365 * 24 * 3600

# A scheduled start that cannot be delivered within one period is dropped: the next one does the same work.
SCHEDULE_MAX_EVENT_AGE = Duration.minutes(5)
SCHEDULE_RETRY_ATTEMPTS = 2


def asl_placeholders(definition_file: Path) -> set[str]:
    """Names of the ``${Name}`` placeholders that an ASL file expects to be substituted."""
    return set(_PLACEHOLDER.findall(definition_file.read_text(encoding="utf-8")))


def asl_timeout_seconds(definition_file: Path) -> int | None:
    """The top-level ``TimeoutSeconds`` of an ASL file: the execution timeout, or None if it sets none."""
    return json.loads(definition_file.read_text(encoding="utf-8")).get("TimeoutSeconds")


def pipeline_state_machine_name(stack_name: str) -> str:
    """The state machine's fixed name, '<stack_name>-pipeline', known before the state machine exists.

    IAM statements on its executions are built from it, without a reference to the state machine, so the
    functions that the state machine invokes may describe its executions without a dependency cycle.
    """
    return f"{stack_name}{STATE_MACHINE_NAME_SUFFIX}"


class Workflow(Construct):
    """A STANDARD state machine named ``state_machine_name``, with full logging (and X-Ray tracing), started by
    an EventBridge Scheduler schedule with ``schedule_input`` as the execution input.

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
        state_machine_name: str,
        substitutions: Mapping[str, str],
        schedule_expression: str,
        schedule_input: Mapping[str, Any],
        reconcile_schedule_expression: str,
        reconcile_input: Mapping[str, Any],
        log_retention: logs.RetentionDays,
        tracing: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        if not _STATE_MACHINE_NAME.match(state_machine_name):
            raise ValueError(
                f"state machine name {state_machine_name!r} must be 1 to {STATE_MACHINE_NAME_MAX_LENGTH} letters, "
                "digits, '-' or '_'"
            )
        expected = asl_placeholders(definition_file)
        if expected != set(substitutions):
            raise ValueError(
                f"{definition_file.name} expects substitutions {sorted(expected)}, got {sorted(substitutions)}"
            )
        self.timeout_seconds: int | None = asl_timeout_seconds(definition_file)
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
            log_group_name=f"/aws/vendedlogs/states/{state_machine_name}",
            retention=log_retention,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=state_machine_name,
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

        self.schedule = self._schedule(
            "Schedule", "Starts the totesys ETL pipeline", schedule_expression, schedule_input
        )
        # A reconciliation is a run like any other (it takes the run lease, so it never overlaps one); a scheduled
        # run that finds it holding the lease ends at once and the next one catches up.
        self.reconcile_schedule = self._schedule(
            "ReconcileSchedule",
            "Reconciles every source table of the totesys ETL pipeline with the lake",
            reconcile_schedule_expression,
            reconcile_input,
        )

    def _schedule(
        self, construct_id: str, description: str, expression: str, execution_input: Mapping[str, Any]
    ) -> scheduler.Schedule:
        return scheduler.Schedule(
            self,
            construct_id,
            description=description,
            schedule=scheduler.ScheduleExpression.expression(expression),
            target=scheduler_targets.StepFunctionsStartExecution(
                self.state_machine,
                input=scheduler.ScheduleTargetInput.from_object(dict(execution_input)),
                retry_attempts=SCHEDULE_RETRY_ATTEMPTS,
                max_event_age=SCHEDULE_MAX_EVENT_AGE,
            ),
        )
