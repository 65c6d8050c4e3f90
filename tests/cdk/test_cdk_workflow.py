"""The state machine is the ASL file with the five function ARNs substituted, and the schedule that starts it."""

from __future__ import annotations

import json
from typing import Any

from cdk.config import MAX_STACK_NAME_LENGTH
from cdk.functions import STAGES
from cdk.stack import DEFINITION_FILE, substitution_name
from cdk.workflow import STATE_MACHINE_NAME_MAX_LENGTH, pipeline_state_machine_name
from statemachine import definition
from tests.cdk.support import Synthesized, as_list


def substituted_file(synthesized: Synthesized) -> dict[str, Any]:
    """pipeline.asl.json with each placeholder replaced as ``deployed_definition`` renders the ARNs."""
    ids = synthesized.function_ids()
    by_placeholder = {substitution_name(stage): f"<ref:{logical}.Arn>" for stage, logical in ids.items()}
    return json.loads(definition.render({name: by_placeholder[name] for name in definition.placeholders()}))


def task_function_names(states: dict[str, Any]) -> dict[str, str]:
    """State name -> FunctionName of every Lambda task, inside Map and Parallel states too."""
    found: dict[str, str] = {}
    for name, state in states.items():
        if state["Type"] == "Task" and "FunctionName" in state.get("Parameters", {}):
            found[name] = state["Parameters"]["FunctionName"]
        for inner in [state.get("ItemProcessor", state.get("Iterator")), *state.get("Branches", [])]:
            if inner:
                found |= task_function_names(inner["States"])
    return found


def test_the_asl_file_expects_the_function_arn_of_every_stage() -> None:
    assert {substitution_name(stage) for stage in STAGES} == definition.placeholders()
    assert substitution_name("lease") == "LeaseFunctionArn"


def test_state_machine_deploys_the_asl_file_with_the_function_arns(synthesized: Synthesized) -> None:
    _, properties = synthesized.state_machine()
    ids = synthesized.function_ids()
    assert "DefinitionString" not in properties, "the definition is the ASL file, uploaded as an asset"
    assert properties["DefinitionS3Location"]["Key"].endswith(".json")

    assert synthesized.deployed_definition() == substituted_file(synthesized)
    assert properties["DefinitionSubstitutions"] == {
        substitution_name(stage): {"Fn::GetAtt": [logical, "Arn"]} for stage, logical in ids.items()
    }
    assert "${" not in json.dumps(synthesized.deployed_definition())


def test_each_task_invokes_a_pipeline_function_and_every_function_is_used(synthesized: Synthesized) -> None:
    ids = synthesized.function_ids()
    tasks = task_function_names(synthesized.deployed_definition()["States"])

    assert set(tasks.values()) == {f"<ref:{logical}.Arn>" for logical in ids.values()}
    for name, function in tasks.items():
        stage = next(stage for stage, logical in ids.items() if function == f"<ref:{logical}.Arn>")
        assert stage in name.lower(), (name, stage)  # "Extract table", "Load fact", "Take the run lease", ...
    lease = f"<ref:{ids['lease']}.Arn>"
    assert sorted(name for name, function in tasks.items() if function == lease) == [
        "Release the run lease",
        "Take the run lease",
    ]


def test_state_machine_has_a_fixed_name_from_the_stack_name(synthesized: Synthesized) -> None:
    _, properties = synthesized.state_machine()

    assert properties["StateMachineName"] == "TotesysEtl-pipeline" == synthesized.stack.state_machine_name
    assert len(pipeline_state_machine_name("S" * MAX_STACK_NAME_LENGTH)) == STATE_MACHINE_NAME_MAX_LENGTH


def test_execution_timeout_is_the_asl_files_own(synthesized: Synthesized) -> None:
    timeout = json.loads(DEFINITION_FILE.read_text(encoding="utf-8")).get("TimeoutSeconds")
    warnings = [
        violation["ruleName"]
        for report in synthesized.validation_report()["pluginReports"]
        for violation in report["violations"]
        if violation["severity"] == "warning"
    ]

    assert isinstance(timeout, int) and timeout > 0, "pipeline.asl.json sets a top-level TimeoutSeconds"
    assert synthesized.deployed_definition()["TimeoutSeconds"] == timeout
    assert synthesized.stack.workflow.timeout_seconds == timeout
    assert "Annotation::totesys:asl-timeout" not in warnings


def test_state_machine_logs_everything_and_traces(synthesized: Synthesized, variant: Synthesized) -> None:
    _, properties = synthesized.state_machine()
    log_group = properties["LoggingConfiguration"]["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"]

    assert properties["LoggingConfiguration"]["Level"] == "ALL"
    assert properties["LoggingConfiguration"]["IncludeExecutionData"] is True
    assert properties["TracingConfiguration"] == {"Enabled": True}
    assert properties["StateMachineType"] == "STANDARD"
    log_group_properties = synthesized.properties(log_group["Fn::GetAtt"][0])
    assert log_group_properties["LogGroupName"] == "/aws/vendedlogs/states/TotesysEtl-pipeline"
    assert log_group_properties["RetentionInDays"] == 30

    _, variant_properties = variant.state_machine()
    assert variant_properties["LoggingConfiguration"]["Level"] == "ALL"
    assert variant_properties.get("TracingConfiguration", {"Enabled": False}) == {"Enabled": False}


def scheduler_role_statements(synthesized: Synthesized, schedule: dict[str, Any]) -> list[dict[str, Any]]:
    return synthesized.role_statements(schedule["Target"]["RoleArn"]["Fn::GetAtt"][0])


def test_schedule_starts_the_state_machine_every_five_minutes_with_empty_input(synthesized: Synthesized) -> None:
    logical, _ = synthesized.state_machine()
    synthesized.template.resource_count_is("AWS::Events::Rule", 0)
    properties = schedules(synthesized)["{}"]

    assert properties["ScheduleExpression"] == "rate(5 minutes)"
    assert properties["State"] == "ENABLED"
    assert properties["FlexibleTimeWindow"] == {"Mode": "OFF"}
    target = dict(properties["Target"])
    assert set(target.pop("RoleArn")) == {"Fn::GetAtt"}
    assert target == {
        "Arn": {"Ref": logical},
        "Input": "{}",
        "RetryPolicy": {"MaximumEventAgeInSeconds": 300, "MaximumRetryAttempts": 2},
    }
    start = [s for s in scheduler_role_statements(synthesized, properties) if s["Effect"] == "Allow"]
    assert start == [{"Action": "states:StartExecution", "Effect": "Allow", "Resource": {"Ref": logical}}]


def schedules(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    """The two schedules by their execution input: the pipeline's and the nightly reconciliation's."""
    found = {s["Properties"]["Target"]["Input"]: s["Properties"] for s in synthesized.resources(
        "AWS::Scheduler::Schedule").values()}  # fmt: skip
    assert len(found) == 2
    return found


def test_a_second_schedule_reconciles_every_night_with_the_same_target(synthesized: Synthesized) -> None:
    logical, _ = synthesized.state_machine()
    properties = schedules(synthesized)['{"reconcile":true}']

    assert properties["ScheduleExpression"] == "cron(30 2 * * ? *)"
    assert properties["Target"]["Arn"] == {"Ref": logical}
    start = [s for s in scheduler_role_statements(synthesized, properties) if s["Effect"] == "Allow"]
    assert start == [{"Action": "states:StartExecution", "Effect": "Allow", "Resource": {"Ref": logical}}]


def test_schedule_expression_and_input_come_from_the_context(variant: Synthesized) -> None:
    found = schedules(variant)
    schedule = found['{"tables":["sales_order","staff"]}']
    reconcile = found['{"tables":["sales_order","staff"],"reconcile":true}']

    assert schedule["ScheduleExpression"] == "cron(0/10 * * * ? *)"
    assert reconcile["ScheduleExpression"] == "cron(0 4 ? * SUN *)"


def test_fewer_source_connections_than_parallel_extracts_is_flagged(
    synthesized: Synthesized, variant: Synthesized
) -> None:
    def warnings(stack: Synthesized) -> list[str]:
        return [
            violation["ruleName"]
            for report in stack.validation_report()["pluginReports"]
            for violation in report["violations"]
            if violation["severity"] == "warning"
        ]

    assert "Annotation::totesys:source-connections" not in warnings(synthesized)  # 4 connections, 4 at once
    assert "Annotation::totesys:source-connections" in warnings(variant)  # 2 connections


def test_invoke_statement_names_no_function_version_wildcard(synthesized: Synthesized) -> None:
    _, properties = synthesized.state_machine()
    role_id = properties["RoleArn"]["Fn::GetAtt"][0]
    for statement in synthesized.role_statements(role_id):
        if "lambda:InvokeFunction" in as_list(statement["Action"]):
            assert ":*" not in json.dumps(statement["Resource"])
