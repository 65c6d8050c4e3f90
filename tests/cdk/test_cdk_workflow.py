"""The state machines are the ASL files with the function ARNs substituted (the parent's also with its two
children's), and the schedules that start the parent."""

from __future__ import annotations

import json
from typing import Any

from cdk.config import MAX_STACK_NAME_LENGTH
from cdk.functions import STAGES
from cdk.stack import DEFINITION_FILE, substitution_name
from cdk.workflow import STATE_MACHINE_NAME_MAX_LENGTH, pipeline_state_machine_name
from statemachine import definition
from statemachine.local.deployment import CHILD_PLACEHOLDERS
from tests.cdk.support import Synthesized, as_list


def substituted_file(synthesized: Synthesized, name: str = definition.PIPELINE) -> dict[str, Any]:
    """An ASL file with each placeholder replaced as ``deployed_definition`` renders the ARNs."""
    ids = synthesized.function_ids()
    by_placeholder = {substitution_name(stage): f"<ref:{logical}.Arn>" for stage, logical in ids.items()}
    by_placeholder |= {CHILD_PLACEHOLDERS[w]: f"<ref:{synthesized.state_machine(w)[0]}>" for w in CHILD_PLACEHOLDERS}
    return json.loads(definition.render({p: by_placeholder[p] for p in definition.placeholders(name)}, name))


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


def test_the_asl_files_expect_the_function_arn_of_every_stage_and_the_children() -> None:
    assert {substitution_name(stage) for stage in STAGES} | set(CHILD_PLACEHOLDERS.values()) == \
        definition.placeholders()  # fmt: skip
    assert substitution_name("lease") == "LeaseFunctionArn"


def test_state_machine_deploys_the_asl_file_with_the_function_arns(synthesized: Synthesized) -> None:
    _, properties = synthesized.state_machine()
    ids = synthesized.function_ids()
    assert "DefinitionString" not in properties, "the definition is the ASL file, uploaded as an asset"
    assert properties["DefinitionS3Location"]["Key"].endswith(".json")

    assert synthesized.deployed_definition() == substituted_file(synthesized)
    parent_stages = ("lease", "extract", "report")
    assert properties["DefinitionSubstitutions"] == {
        **{substitution_name(stage): {"Fn::GetAtt": [ids[stage], "Arn"]} for stage in parent_stages},
        **{CHILD_PLACEHOLDERS[w]: {"Ref": synthesized.state_machine(w)[0]} for w in CHILD_PLACEHOLDERS},
    }
    assert "${" not in json.dumps(synthesized.deployed_definition())
    for workflow in CHILD_PLACEHOLDERS:  # both children are the one stages definition
        assert synthesized.deployed_definition(workflow) == substituted_file(synthesized, definition.STAGES)
        _, child = synthesized.state_machine(workflow)
        assert set(child["DefinitionSubstitutions"]) == {"ExtractFunctionArn", "TransformFunctionArn",
                                                         "LoadFunctionArn"}  # fmt: skip


def test_each_task_invokes_a_pipeline_function_and_every_function_is_used(synthesized: Synthesized) -> None:
    ids = synthesized.function_ids()
    tasks = task_function_names(synthesized.deployed_definition()["States"])
    tasks |= task_function_names(synthesized.deployed_definition("express")["States"])

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


def test_state_machine_logs_its_failures_with_their_data_and_traces(
    synthesized: Synthesized, variant: Synthesized
) -> None:
    _, properties = synthesized.state_machine()
    log_group = properties["LoggingConfiguration"]["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"]

    assert properties["LoggingConfiguration"]["Level"] == "ERROR"
    assert properties["LoggingConfiguration"]["IncludeExecutionData"] is True
    assert properties["TracingConfiguration"] == {"Enabled": True}
    assert properties["StateMachineType"] == "STANDARD"
    log_group_properties = synthesized.properties(log_group["Fn::GetAtt"][0])
    assert log_group_properties["LogGroupName"] == "/aws/vendedlogs/states/TotesysEtl-pipeline"
    assert log_group_properties["RetentionInDays"] == 30

    _, variant_properties = variant.state_machine()
    assert variant_properties["LoggingConfiguration"]["Level"] == "ERROR"
    assert variant_properties.get("TracingConfiguration", {"Enabled": False}) == {"Enabled": False}


def test_the_children_are_an_express_and_a_standard_state_machine_each_logging_its_errors_with_data(
    synthesized: Synthesized,
) -> None:
    """An Express execution keeps no history: its log group is where its graph is, errors with their data."""
    for workflow, kind, level in (("express", "EXPRESS", "ERROR"), ("standard", "STANDARD", "ERROR")):
        _, properties = synthesized.state_machine(workflow)
        assert properties["StateMachineType"] == kind
        assert properties["StateMachineName"] == f"TotesysEtl-{workflow}"
        assert properties["LoggingConfiguration"]["Level"] == level
        assert properties["LoggingConfiguration"]["IncludeExecutionData"] is True
        assert properties["TracingConfiguration"] == {"Enabled": True}
        log_group = properties["LoggingConfiguration"]["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"]
        assert synthesized.properties(log_group["Fn::GetAtt"][0])["LogGroupName"] == \
            f"/aws/vendedlogs/states/TotesysEtl-{workflow}"  # fmt: skip


def test_the_parent_may_start_wait_for_and_stop_its_children_and_nothing_else(synthesized: Synthesized) -> None:
    """What startExecution.sync:2 needs (AWS's IAM for Step Functions' own integration), on the children only."""
    _, properties = synthesized.state_machine()
    statements = synthesized.role_statements(properties["RoleArn"]["Fn::GetAtt"][0])
    by_action: dict[str, list[Any]] = {}
    for statement in statements:
        for action in as_list(statement["Action"]):
            by_action.setdefault(action, []).extend(as_list(statement["Resource"]))
    children = [{"Ref": synthesized.state_machine(w)[0]} for w in ("express", "standard")]

    assert sorted(map(json.dumps, by_action["states:StartExecution"])) == sorted(map(json.dumps, children))
    executions = json.dumps(by_action["states:DescribeExecution"])
    assert by_action["states:DescribeExecution"] == by_action["states:StopExecution"]
    assert ":execution:TotesysEtl-express:*" in executions and ":express:TotesysEtl-express:*" in executions
    assert ":execution:TotesysEtl-standard:*" in executions and "pipeline" not in executions
    for action in ("events:PutTargets", "events:PutRule", "events:DescribeRule"):
        assert "rule/StepFunctionsGetEventsForStepFunctionsExecutionRule" in json.dumps(by_action[action])


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
