"""Properties of the synthesized pipeline stack (cdk.json context), and the cdk-nag verdict on it."""

from __future__ import annotations

import json
import re
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Match
from cdk_nag import AwsSolutionsChecks

from cdk.functions import pandas_layer_arn, powertools_layer_arn
from cdk.stack import DEFINITION_FILE
from tests.cdk.support import Synthesized, synthesize

HANDLERS = {
    "extract": "lambdas.extract.handler.handler",
    "transform": "lambdas.transform.handler.handler",
    "load": "lambdas.load.handler.handler",
}


# ---------------------------------------------------------------------------------------------------- helpers


def logical_id(synthesized: Synthesized, construct: Any) -> str:
    stack = synthesized.stack
    return stack.resolve(stack.get_logical_id(construct.node.default_child))


def function_ids(synthesized: Synthesized) -> dict[str, str]:
    """Stage name -> logical id of its Lambda function, found by handler."""
    by_handler = {
        resource["Properties"]["Handler"]: logical
        for logical, resource in synthesized.resources("AWS::Lambda::Function").items()
    }
    return {stage: by_handler[handler] for stage, handler in HANDLERS.items()}


def bucket_ids(synthesized: Synthesized) -> dict[str, str]:
    storage = synthesized.stack.storage
    return {
        "Ingestion": logical_id(synthesized, storage.ingestion_bucket),
        "Processed": logical_id(synthesized, storage.processed_bucket),
        "AccessLogs": logical_id(synthesized, storage.access_logs_bucket),
    }


def role_statements(synthesized: Synthesized, function_logical_id: str) -> list[dict[str, Any]]:
    """All statements of the inline policies attached to a function's role."""
    function = synthesized.template_json["Resources"][function_logical_id]
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    role = synthesized.template_json["Resources"][role_id]
    assert "ManagedPolicyArns" not in role["Properties"], "no managed policies: logs access is granted explicitly"
    statements = []
    for policy in synthesized.resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def references(resource: Any) -> set[str]:
    """Logical ids that a policy resource (GetAtt, Ref, Join) refers to, plus any literal parts."""
    text = json.dumps(resource)
    return set(re.findall(r'"Fn::GetAtt": \["([A-Za-z0-9]+)"', text)) | set(
        re.findall(r'"Ref": "([A-Za-z0-9:]+)"', text)
    )


def s3_access(statements: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Bucket logical id -> the S3 actions granted on it or its objects."""
    access: dict[str, set[str]] = {}
    for statement in statements:
        actions = as_list(statement["Action"])
        if not any(a.startswith("s3:") for a in actions):
            continue
        for resource in as_list(statement["Resource"]):
            for bucket in references(resource):
                access.setdefault(bucket, set()).update(actions)
    return access


# ---------------------------------------------------------------------------------------------------- nag


def test_aws_solutions_checks_pass_with_only_reasoned_acknowledgements(synthesized: Synthesized) -> None:
    # The fixture's app.synth() raises on any unacknowledged finding; the report says the same.
    (report,) = [r for r in synthesized.validation_report()["pluginReports"] if r["pluginName"] == "AwsSolutions"]
    assert report["conclusion"] == "success"
    assert report["violations"] == []
    for suppressed in report["suppressedViolations"]:
        assert len(suppressed["reason"]) > 40, suppressed["acknowledgedId"]
        assert "[" in suppressed["acknowledgedId"] or suppressed["acknowledgedId"].count("::") == 1


def test_every_acknowledgement_matches_a_finding_on_its_construct(synthesized: Synthesized) -> None:
    placed = {
        (construct.node.path, finding)
        for construct in synthesized.stack.node.find_all()
        for entry in construct.node.metadata
        if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY
        for finding in entry.data
    }
    (report,) = [r for r in synthesized.validation_report()["pluginReports"] if r["pluginName"] == "AwsSolutions"]
    used = {(s["acknowledgedAt"], s["acknowledgedId"]) for s in report["suppressedViolations"]}

    assert placed, "the stack acknowledges some findings"
    assert placed == used, f"unused acknowledgements: {sorted(placed - used)}"


def test_an_unacknowledged_finding_fails_the_synth(tmp_path: Any) -> None:
    # How cdk-nag v3 reports failures in Python: app.synth() raises once the plugin has listed them.
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Probe", env=cdk.Environment(region="eu-west-2"))
    s3.Bucket(stack, "NoAccessLogs", enforce_ssl=True)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))

    with pytest.raises(RuntimeError, match="ValidationFailed") as raised:
        app.synth()
    assert "AwsSolutions::AwsSolutions-S1" in str(raised.value)
    report = json.loads((tmp_path / "validation-report.json").read_text())
    assert "AwsSolutions-S1" in [v["ruleName"] for r in report["pluginReports"] for v in r["violations"]]


# ---------------------------------------------------------------------------------------------------- storage


def test_buckets_are_private_encrypted_tls_only_and_retained(synthesized: Synthesized) -> None:
    buckets = bucket_ids(synthesized)
    synthesized.template.resource_count_is("AWS::S3::Bucket", 3)
    for logical in buckets.values():
        bucket = synthesized.template_json["Resources"][logical]
        properties = bucket["Properties"]
        assert bucket["DeletionPolicy"] == "Retain"
        assert bucket["UpdateReplacePolicy"] == "Retain"
        assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
        ]
        assert properties["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        synthesized.template.has_resource_properties(
            "AWS::S3::BucketPolicy",
            {
                "Bucket": {"Ref": logical},
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Action": "s3:*",
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                    "Principal": {"AWS": "*"},
                                }
                            )
                        ]
                    )
                },
            },
        )


def test_ingestion_is_versioned_and_data_buckets_log_access(synthesized: Synthesized) -> None:
    buckets = bucket_ids(synthesized)
    resources = synthesized.template_json["Resources"]

    assert resources[buckets["Ingestion"]]["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}
    for name in ("Ingestion", "Processed"):
        logging = resources[buckets[name]]["Properties"]["LoggingConfiguration"]
        assert logging["DestinationBucketName"] == {"Ref": buckets["AccessLogs"]}
    assert "LoggingConfiguration" not in resources[buckets["AccessLogs"]]["Properties"]


# ---------------------------------------------------------------------------------------------------- functions


def test_three_functions_with_handlers_runtime_layers_and_tracing(synthesized: Synthesized) -> None:
    synthesized.template.resource_count_is("AWS::Lambda::Function", 3)
    ids = function_ids(synthesized)
    expected_layers = sorted(
        [
            powertools_layer_arn(region="eu-west-2", runtime=cdk.aws_lambda.Runtime.PYTHON_3_14,
                                 architecture=cdk.aws_lambda.Architecture.X86_64, version=27),
            pandas_layer_arn(region="eu-west-2", runtime=cdk.aws_lambda.Runtime.PYTHON_3_14,
                             architecture=cdk.aws_lambda.Architecture.X86_64, version=11),
        ]
    )  # fmt: skip
    assert expected_layers == [
        "arn:aws:lambda:eu-west-2:017000801446:layer:AWSLambdaPowertoolsPythonV3-python314-x86_64:27",
        "arn:aws:lambda:eu-west-2:336392948345:layer:AWSSDKPandas-Python314:11",
    ]
    for stage, logical in ids.items():
        properties = synthesized.template_json["Resources"][logical]["Properties"]
        assert properties["Handler"] == HANDLERS[stage]
        assert properties["Runtime"] == "python3.14"
        assert properties["Architectures"] == ["x86_64"]
        assert sorted(properties["Layers"]) == expected_layers
        assert properties["TracingConfig"] == {"Mode": "Active"}
        assert properties["LoggingConfig"]["LogGroup"]["Ref"] in synthesized.resources("AWS::Logs::LogGroup")


def test_functions_have_stage_sized_memory_and_timeouts(synthesized: Synthesized) -> None:
    resources = synthesized.template_json["Resources"]
    sizes = {stage: (resources[i]["Properties"]["MemorySize"], resources[i]["Properties"]["Timeout"])
             for stage, i in function_ids(synthesized).items()}  # fmt: skip

    assert sizes == {"extract": (1024, 300), "transform": (2048, 600), "load": (1024, 600)}


def test_function_environment_variables(synthesized: Synthesized) -> None:
    ids = function_ids(synthesized)
    buckets = bucket_ids(synthesized)
    common = {
        "INGESTION_BUCKET": {"Ref": buckets["Ingestion"]},
        "PROCESSED_BUCKET": {"Ref": buckets["Processed"]},
        "POWERTOOLS_LOG_LEVEL": "INFO",
    }
    expected = {
        "extract": {**common, "POWERTOOLS_SERVICE_NAME": "totesys-extract", "TOTESYS_SECRET_ID": "totesys/source"},
        "transform": {**common, "POWERTOOLS_SERVICE_NAME": "totesys-transform"},
        "load": {**common, "POWERTOOLS_SERVICE_NAME": "totesys-load", "WAREHOUSE_SECRET_ID": "totesys/warehouse"},
    }
    for stage, logical in ids.items():
        variables = synthesized.template_json["Resources"][logical]["Properties"]["Environment"]["Variables"]
        assert variables == expected[stage], stage


def test_function_log_groups_keep_logs_for_the_configured_retention(synthesized: Synthesized) -> None:
    for log_group in synthesized.resources("AWS::Logs::LogGroup").values():
        assert log_group["Properties"]["RetentionInDays"] == 30


# ---------------------------------------------------------------------------------------------------- IAM


def test_bucket_access_is_scoped_per_stage(synthesized: Synthesized) -> None:
    ids = function_ids(synthesized)
    buckets = bucket_ids(synthesized)
    ingestion, processed = buckets["Ingestion"], buckets["Processed"]
    access = {stage: s3_access(role_statements(synthesized, logical)) for stage, logical in ids.items()}

    assert set(access["extract"]) == {ingestion}
    assert {"s3:GetObject*", "s3:PutObject", "s3:List*"} <= access["extract"][ingestion]

    assert set(access["transform"]) == {ingestion, processed}
    assert not {a for a in access["transform"][ingestion] if a.startswith(("s3:Put", "s3:Delete"))}
    assert {"s3:GetObject*", "s3:PutObject"} <= access["transform"][processed]

    assert set(access["load"]) == {processed}


def test_load_writes_only_its_state_objects(synthesized: Synthesized) -> None:
    statements = role_statements(synthesized, function_ids(synthesized)["load"])
    processed = bucket_ids(synthesized)["Processed"]
    writes = [s for s in statements if any(a.startswith(("s3:Put", "s3:Delete")) for a in as_list(s["Action"]))]

    assert writes, "load writes its state objects"
    for statement in writes:
        assert not [a for a in as_list(statement["Action"]) if a.startswith("s3:Delete")]
        assert as_list(statement["Resource"]) == [
            {"Fn::Join": ["", [{"Fn::GetAtt": [processed, "Arn"]}, "/_state/load/*"]]}
        ]


def secret_resources(statements: list[dict[str, Any]]) -> list[str]:
    return [
        json.dumps(resource)
        for statement in statements
        if "secretsmanager:GetSecretValue" in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
    ]


def test_each_secret_is_readable_only_by_its_stage(synthesized: Synthesized) -> None:
    ids = function_ids(synthesized)
    secrets = {stage: secret_resources(role_statements(synthesized, logical)) for stage, logical in ids.items()}

    assert len(secrets["extract"]) == 1 and ":secret:totesys/source-??????" in secrets["extract"][0]
    assert secrets["transform"] == []
    assert len(secrets["load"]) == 1 and ":secret:totesys/warehouse-??????" in secrets["load"][0]


def test_function_roles_write_only_their_own_log_group(synthesized: Synthesized) -> None:
    for logical in function_ids(synthesized).values():
        log_group = synthesized.template_json["Resources"][logical]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        log_statements = [
            s for s in role_statements(synthesized, logical) if any(a.startswith("logs:") for a in as_list(s["Action"]))
        ]
        assert log_statements == [
            {
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Effect": "Allow",
                "Resource": {"Fn::GetAtt": [log_group, "Arn"]},
            }
        ]


# ---------------------------------------------------------------------------------------------------- workflow


def state_machine(synthesized: Synthesized) -> tuple[str, dict[str, Any]]:
    ((logical, resource),) = synthesized.resources("AWS::StepFunctions::StateMachine").items()
    return logical, resource["Properties"]


def deployed_definition(synthesized: Synthesized) -> dict[str, Any]:
    """The definition as Step Functions will see it: the asset file with DefinitionSubstitutions applied.

    Each substitution is a CloudFormation expression; it is rendered as ``<ref:LogicalId.Arn>`` so that the
    result can be compared as parsed JSON.
    """
    _, properties = state_machine(synthesized)
    text = (synthesized.outdir / f"asset.{properties['DefinitionS3Location']['Key']}").read_text(encoding="utf-8")
    for name, value in properties["DefinitionSubstitutions"].items():
        target, attribute = value["Fn::GetAtt"]
        text = text.replace("${" + name + "}", f"<ref:{target}.{attribute}>")
    return json.loads(text)


def test_state_machine_deploys_the_asl_file_with_the_three_function_arns(synthesized: Synthesized) -> None:
    _, properties = state_machine(synthesized)
    ids = function_ids(synthesized)
    assert "DefinitionString" not in properties, "the definition is the ASL file, uploaded as an asset"

    source = DEFINITION_FILE.read_text(encoding="utf-8")
    expected = json.loads(
        source.replace("${ExtractFunctionArn}", f"<ref:{ids['extract']}.Arn>")
        .replace("${TransformFunctionArn}", f"<ref:{ids['transform']}.Arn>")
        .replace("${LoadFunctionArn}", f"<ref:{ids['load']}.Arn>")
    )
    assert deployed_definition(synthesized) == expected
    assert properties["DefinitionSubstitutions"] == {
        "ExtractFunctionArn": {"Fn::GetAtt": [ids["extract"], "Arn"]},
        "TransformFunctionArn": {"Fn::GetAtt": [ids["transform"], "Arn"]},
        "LoadFunctionArn": {"Fn::GetAtt": [ids["load"], "Arn"]},
    }
    assert "${" not in json.dumps(deployed_definition(synthesized))


def test_each_task_invokes_the_function_of_its_stage(synthesized: Synthesized) -> None:
    ids = function_ids(synthesized)
    states = deployed_definition(synthesized)["States"]
    tasks = {
        name: state["Parameters"]["FunctionName"]
        for outer in states.values()
        if outer["Type"] == "Map"
        for name, state in outer["ItemProcessor"]["States"].items()
        if state["Type"] == "Task"
    }

    assert tasks == {
        "Extract table": f"<ref:{ids['extract']}.Arn>",
        "Transform table": f"<ref:{ids['transform']}.Arn>",
        "Load dimension": f"<ref:{ids['load']}.Arn>",
        "Load fact": f"<ref:{ids['load']}.Arn>",
    }


def test_state_machine_logs_everything_and_traces(synthesized: Synthesized) -> None:
    _, properties = state_machine(synthesized)
    log_group = properties["LoggingConfiguration"]["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"]

    assert properties["LoggingConfiguration"]["Level"] == "ALL"
    assert properties["LoggingConfiguration"]["IncludeExecutionData"] is True
    assert properties["TracingConfiguration"] == {"Enabled": True}
    assert properties["StateMachineType"] == "STANDARD"
    resources = synthesized.template_json["Resources"]
    assert resources[log_group["Fn::GetAtt"][0]]["Properties"]["LogGroupName"].startswith("/aws/vendedlogs/states/")
    assert properties["DefinitionS3Location"]["Key"].endswith(".json")


def test_a_missing_execution_timeout_in_the_asl_file_is_flagged(synthesized: Synthesized) -> None:
    # CDK drops StateMachine(timeout=...) for file definitions: the timeout must be the file's TimeoutSeconds.
    has_timeout = "TimeoutSeconds" in json.loads(DEFINITION_FILE.read_text(encoding="utf-8"))
    warnings = [
        violation["ruleName"]
        for report in synthesized.validation_report()["pluginReports"]
        for violation in report["violations"]
        if violation["severity"] == "warning"
    ]

    assert ("Annotation::totesys:asl-timeout" in warnings) is not has_timeout


def test_state_machine_may_invoke_exactly_the_three_functions(synthesized: Synthesized) -> None:
    _, properties = state_machine(synthesized)
    role_id = properties["RoleArn"]["Fn::GetAtt"][0]
    ids = function_ids(synthesized)
    invoke = [
        statement
        for policy in synthesized.resources("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "lambda:InvokeFunction" in as_list(statement["Action"])
    ]

    assert len(invoke) == 1
    assert sorted(json.dumps(r) for r in invoke[0]["Resource"]) == sorted(
        json.dumps({"Fn::GetAtt": [i, "Arn"]}) for i in ids.values()
    )


def test_schedule_starts_the_state_machine_with_empty_input(synthesized: Synthesized) -> None:
    logical, _ = state_machine(synthesized)
    synthesized.template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "rate(5 minutes)",
            "State": "ENABLED",
            "Targets": [
                Match.object_like(
                    {"Arn": {"Ref": logical}, "Input": "{}", "RoleArn": {"Fn::GetAtt": [Match.any_value(), "Arn"]}}
                )
            ],
        },
    )


# ---------------------------------------------------------------------------------------------------- monitoring


def test_failed_executions_alarm_notifies_the_topic(synthesized: Synthesized) -> None:
    logical, _ = state_machine(synthesized)
    (topic,) = synthesized.resources("AWS::SNS::Topic")
    synthesized.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "AWS/States",
            "MetricName": "ExecutionsFailed",
            "Dimensions": [{"Name": "StateMachineArn", "Value": {"Ref": logical}}],
            "Statistic": "Sum",
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "AlarmActions": [{"Ref": topic}],
        },
    )


def test_topic_enforces_tls_and_has_no_subscriptions_by_default(synthesized: Synthesized) -> None:
    (topic,) = synthesized.resources("AWS::SNS::Topic")
    synthesized.template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "Topics": [{"Ref": topic}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                )
            },
        },
    )
    synthesized.template.resource_count_is("AWS::SNS::Subscription", 0)


def test_alert_emails_become_email_subscriptions(context: dict[str, Any], tmp_path: Any) -> None:
    emails = ["ops@example.com", "data-team@example.org"]
    other = synthesize({**context, "alert_emails": emails, "schedule": "cron(0 6 * * ? *)"}, tmp_path)

    subscriptions = other.resources("AWS::SNS::Subscription").values()
    assert sorted(s["Properties"]["Endpoint"] for s in subscriptions) == sorted(emails)
    assert {s["Properties"]["Protocol"] for s in subscriptions} == {"email"}
    other.template.has_resource_properties("AWS::Events::Rule", {"ScheduleExpression": "cron(0 6 * * ? *)"})
