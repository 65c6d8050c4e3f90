"""The pipeline state machines, deployed from the ASL files statemachine/definition.py writes, and the schedules.

Three state machines from two definitions: the Standard parent (``pipeline.asl.json``) that the schedules start,
and the child that runs the per-table Maps (``stages.asl.json``), deployed twice: as an Express state machine for
incremental runs and as a Standard one for heavy runs and re-runs (docs/state-machine.md). The parent starts one of
them with ``states:startExecution.sync:2`` and gets its per-table results back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import Annotations, ArnFormat, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cdk.nag import acknowledge, as_nag_prints

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")

# Step Functions names: 1 to 80 characters; with CloudWatch Logs logging, only letters, digits, '-' and '_'.
STATE_MACHINE_NAME_MAX_LENGTH = 80
STATE_MACHINE_NAME_SUFFIX = "-pipeline"
# The children's names replace the parent's suffix with one of the same length, so they fit wherever it does.
CHILD_SUFFIXES = {"express": "-express", "standard": "-standard"}
# The placeholders of the parent's definition that name the children (statemachine/definition.py: CHILD_ARN).
CHILD_PLACEHOLDERS = {"express": "StagesExpressArn", "standard": "StagesStandardArn"}
# The rule Step Functions manages to learn that a child started with .sync ended (AWS documents its name).
SYNC_EVENTS_RULE = "StepFunctionsGetEventsForStepFunctionsExecutionRule"
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


def child_state_machine_name(state_machine_name: str, workflow: str) -> str:
    """The name of the ``workflow`` ('express' or 'standard') child of the parent named ``state_machine_name``."""
    return state_machine_name.removesuffix(STATE_MACHINE_NAME_SUFFIX) + CHILD_SUFFIXES[workflow]


def pipeline_state_machine_name(stack_name: str) -> str:
    """The state machine's fixed name, '<stack_name>-pipeline', known before the state machine exists.

    IAM statements on its executions are built from it, without a reference to the state machine, so the
    functions that the state machine invokes may describe its executions without a dependency cycle.
    """
    return f"{stack_name}{STATE_MACHINE_NAME_SUFFIX}"


class Workflow(Construct):
    """The STANDARD parent named ``state_machine_name``, with full logging (and X-Ray tracing), started by an
    EventBridge Scheduler schedule with ``schedule_input`` as the execution input; and its two children from
    ``stages_definition_file`` (an EXPRESS and a STANDARD one), which it starts and waits for.

    ``substitutions`` must supply exactly the function placeholders the two ASL files use (the children's ARNs
    are substituted here), so that a renamed placeholder fails the synth rather than deploying a definition with
    a literal ``${...}`` in it. Each state machine may invoke the functions its own definition names.

    The execution timeout is the parent ASL file's own top-level ``TimeoutSeconds``: CDK's ``timeout`` property only
    applies to definitions built in CDK and is silently dropped for a file, so it is not offered here. A file
    without one gets a synth warning (Step Functions' own limit is a year).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        definition_file: Path,
        stages_definition_file: Path,
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
        parent_needs = asl_placeholders(definition_file) - set(CHILD_PLACEHOLDERS.values())
        child_needs = asl_placeholders(stages_definition_file)
        if parent_needs | child_needs != set(substitutions):
            raise ValueError(
                f"{definition_file.name} and {stages_definition_file.name} expect substitutions "
                f"{sorted(parent_needs | child_needs)}, got {sorted(substitutions)}"
            )
        self.timeout_seconds: int | None = asl_timeout_seconds(definition_file)
        if self.timeout_seconds is None:
            Annotations.of(self).add_warning_v2(
                "totesys:asl-timeout",
                f"{definition_file.name} sets no top-level TimeoutSeconds, so a stuck execution is only "
                "stopped by Step Functions' one-year limit; add one to the ASL file.",
            )

        # The children first: the parent's definition names them.
        self.children: dict[str, sfn.StateMachine] = {}
        self.child_log_groups: dict[str, logs.LogGroup] = {}
        for workflow, child_type in (("express", sfn.StateMachineType.EXPRESS),
                                     ("standard", sfn.StateMachineType.STANDARD)):  # fmt: skip
            name = child_state_machine_name(state_machine_name, workflow)
            self.child_log_groups[workflow] = logs.LogGroup(
                self, f"{workflow.capitalize()}ExecutionLogs",
                log_group_name=f"/aws/vendedlogs/states/{name}", retention=log_retention,
            )  # fmt: skip
            self.children[workflow] = self._state_machine(
                f"Stages{workflow.capitalize()}",
                name=name,
                machine_type=child_type,
                definition_file=stages_definition_file,
                substitutions={n: substitutions[n] for n in child_needs},
                # Every machine logs its failures with their data (a failed table, a timeout): a Standard
                # execution keeps its whole history in the console and the API for 90 days, and the Express
                # child's per-table results reach the parent's history (docs/operations.md#logs).
                level=sfn.LogLevel.ERROR,
                log_group=self.child_log_groups[workflow],
                tracing=tracing,
            )
        self.log_group = logs.LogGroup(
            self,
            "ExecutionLogs",
            # The /aws/vendedlogs/ prefix keeps the CloudWatch Logs resource policy small.
            log_group_name=f"/aws/vendedlogs/states/{state_machine_name}",
            retention=log_retention,
        )
        children = {CHILD_PLACEHOLDERS[w]: child.state_machine_arn for w, child in self.children.items()}
        self.state_machine = self._state_machine(
            "StateMachine",
            name=state_machine_name,
            machine_type=sfn.StateMachineType.STANDARD,
            definition_file=definition_file,
            substitutions={**{n: substitutions[n] for n in parent_needs}, **children},
            level=sfn.LogLevel.ERROR,
            log_group=self.log_group,
            tracing=tracing,
        )
        self._allow_sync_children(state_machine_name)
        for machine in self.state_machines:
            acknowledge(
                machine,
                "AwsSolutions-SF1",
                reason="Each state machine logs its failures with their execution data (LogLevel.ERROR), not every "
                "state: a Standard execution keeps its whole history in the console and the API for 90 days, the "
                "Express child's per-table results reach the parent's history, and ALL would be about 94% of a "
                "run's log bytes, more than the run itself costs (docs/operations.md#logs, docs/cost.md).",
            )

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

    @property
    def state_machines(self) -> list[sfn.StateMachine]:
        """The parent and its children: each invokes the functions its definition names."""
        return [self.state_machine, *self.children.values()]

    def _state_machine(self, construct_id: str, *, name: str, machine_type: sfn.StateMachineType,
                       definition_file: Path, substitutions: Mapping[str, str], level: sfn.LogLevel,
                       log_group: logs.LogGroup, tracing: bool) -> sfn.StateMachine:  # fmt: skip
        machine = sfn.StateMachine(
            self,
            construct_id,
            state_machine_name=name,
            state_machine_type=machine_type,
            definition_body=sfn.DefinitionBody.from_file(str(definition_file)),
            definition_substitutions=dict(substitutions),
            tracing_enabled=tracing,
            logs=sfn.LogOptions(destination=log_group, level=level, include_execution_data=True),
        )
        machine.add_to_role_policy(
            iam.PolicyStatement(actions=["lambda:InvokeFunction"],
                                resources=sorted({v for k, v in substitutions.items() if k.endswith("FunctionArn")}))
        )  # fmt: skip
        acknowledge(
            machine.role,
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
            acknowledge(machine, "AwsSolutions-SF2", reason=reason)
            acknowledge(machine, "Serverless-StepFunctionStateMachineXray", reason=reason)
        return machine

    def _allow_sync_children(self, state_machine_name: str) -> None:
        """What ``states:startExecution.sync:2`` needs of the parent's role: start either child, describe and stop
        its executions, and the managed EventBridge rule through which Step Functions learns that one ended."""
        stack = Stack.of(self)
        role = self.state_machine.role
        self.state_machine.add_to_role_policy(
            iam.PolicyStatement(actions=["states:StartExecution"],
                                resources=[child.state_machine_arn for child in self.children.values()])
        )  # fmt: skip
        names = {w: child_state_machine_name(state_machine_name, w) for w in self.children}
        # an Express execution's ARN says 'express' where a Standard one's says 'execution'
        executions = [
            stack.format_arn(service="states", resource=kind, resource_name=f"{names[w]}:*",
                             arn_format=ArnFormat.COLON_RESOURCE_NAME)
            for w in self.children
            for kind in (("express", "execution") if w == "express" else ("execution",))
        ]  # fmt: skip
        self.state_machine.add_to_role_policy(
            iam.PolicyStatement(actions=["states:DescribeExecution", "states:StopExecution"], resources=executions)
        )
        rule = stack.format_arn(service="events", resource="rule", resource_name=SYNC_EVENTS_RULE)
        self.state_machine.add_to_role_policy(
            iam.PolicyStatement(actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                                resources=[rule])
        )  # fmt: skip
        acknowledge(
            role,
            *(f"AwsSolutions-IAM5[Resource::{as_nag_prints(stack, arn)}]" for arn in executions),
            reason="The executions of the two child state machines: their names are made at run time (a UUID "
            "each), so only the state machine's own executions, by its fixed name, can be named.",
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
