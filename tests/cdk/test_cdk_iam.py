"""Least privilege: each role may do exactly what its handler does, on exactly its own keys and secret."""

from __future__ import annotations

import json

from lambdas.common.tables import SOURCE_TABLES, WAREHOUSE_TABLES
from tests.cdk.support import Synthesized, as_list, bucket_references, object_patterns, rendered

GET, GET_PUT = {"s3:GetObject"}, {"s3:GetObject", "s3:PutObject"}


def batches(tables: tuple[str, ...], actions: set[str]) -> dict[str, set[str]]:
    return {f"{table}/*": actions for table in tables}


def heads(stage: str, tables: tuple[str, ...], actions: set[str]) -> dict[str, set[str]]:
    return {f"_state/{stage}/{table}.json": actions for table in tables}


def all_policy_statements(synthesized: Synthesized) -> list[dict]:
    statements = []
    for resource in synthesized.resources_json.values():
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            statements.extend(resource["Properties"]["PolicyDocument"]["Statement"])
        if resource["Type"] == "AWS::IAM::Role":
            for policy in resource["Properties"].get("Policies", []):
                statements.extend(policy["PolicyDocument"]["Statement"])
    return statements


def test_s3_access_is_exactly_the_handlers_keys_and_actions(synthesized: Synthesized) -> None:
    ids = synthesized.function_ids()
    buckets = synthesized.bucket_ids()
    ingestion, processed = buckets["ingestion"], buckets["processed"]
    statements = {stage: synthesized.function_statements(logical) for stage, logical in ids.items()}

    # extract: its batches and heads in the ingestion bucket.
    assert bucket_references(statements["extract"]) == {ingestion}
    assert object_patterns(statements["extract"], ingestion) == {
        **batches(SOURCE_TABLES, GET_PUT),
        **heads("extract", SOURCE_TABLES, GET_PUT),
    }
    # transform: reads the extracts; writes its batches, _current/ snapshots and heads.
    assert bucket_references(statements["transform"]) == {ingestion, processed}
    assert object_patterns(statements["transform"], ingestion) == {
        **batches(SOURCE_TABLES, GET),
        **heads("extract", SOURCE_TABLES, GET),
    }
    assert object_patterns(statements["transform"], processed) == {
        **batches(WAREHOUSE_TABLES, GET_PUT),
        "_current/*": GET_PUT,
        **heads("transform", WAREHOUSE_TABLES, GET_PUT),
    }
    # load: reads the star-schema batches and transform heads; writes only its _state/load/ cursors.
    assert bucket_references(statements["load"]) == {processed}
    assert object_patterns(statements["load"], processed) == {
        **batches(WAREHOUSE_TABLES, GET),
        **heads("transform", WAREHOUSE_TABLES, GET),
        **heads("load", WAREHOUSE_TABLES, GET_PUT),
    }
    writes = {
        key for key, actions in object_patterns(statements["load"], processed).items() if "s3:PutObject" in actions
    }
    assert all(key.startswith("_state/load/") for key in writes)
    # report: no data access at all.
    assert bucket_references(statements["report"]) == set()


def test_no_policy_lists_deletes_or_uses_s3_wildcard_actions(synthesized: Synthesized, variant: Synthesized) -> None:
    for stack in (synthesized, variant):
        actions = {
            action for s in all_policy_statements(stack) if s["Effect"] == "Allow" for action in as_list(s["Action"])
        }
        s3_actions = {a for a in actions if a.startswith("s3:")}
        assert s3_actions == GET_PUT
        assert not [a for a in actions if a == "*" or a.endswith(":*")]


def test_each_secret_is_readable_only_by_its_stage(synthesized: Synthesized) -> None:
    secrets = {
        stage: [
            (as_list(statement["Action"]), rendered(statement["Resource"]))
            for statement in synthesized.function_statements(logical)
            if any(a.startswith("secretsmanager:") for a in as_list(statement["Action"]))
        ]
        for stage, logical in synthesized.function_ids().items()
    }

    prefix = "arn:aws:secretsmanager:eu-west-2:<ref:AWS::AccountId>:secret:"
    assert secrets == {
        "extract": [(["secretsmanager:GetSecretValue"], f"{prefix}totesys/source-??????")],
        "transform": [],
        "load": [(["secretsmanager:GetSecretValue"], f"{prefix}totesys/warehouse-??????")],
        "report": [],
    }


def test_report_may_publish_to_the_alert_topic_only(synthesized: Synthesized) -> None:
    topic = synthesized.topic_id()
    publishes = {
        stage: [
            s
            for s in synthesized.function_statements(logical)
            if any(a.startswith("sns:") for a in as_list(s["Action"]))
        ]
        for stage, logical in synthesized.function_ids().items()
    }

    assert publishes.pop("report") == [{"Action": "sns:Publish", "Effect": "Allow", "Resource": {"Ref": topic}}]
    assert all(statements == [] for statements in publishes.values())


def test_function_roles_write_only_their_own_log_group(synthesized: Synthesized) -> None:
    for logical in synthesized.function_ids().values():
        log_group = synthesized.properties(logical)["LoggingConfig"]["LogGroup"]["Ref"]
        log_statements = [
            s
            for s in synthesized.function_statements(logical)
            if any(a.startswith("logs:") for a in as_list(s["Action"]))
        ]
        assert log_statements == [
            {
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Effect": "Allow",
                "Resource": {"Fn::GetAtt": [log_group, "Arn"]},
            }
        ]


def test_every_function_statement_is_accounted_for(synthesized: Synthesized) -> None:
    # Nothing beyond logs, X-Ray, S3 objects, the secret and (report) the topic.
    for stage, logical in synthesized.function_ids().items():
        services = {a.split(":")[0] for s in synthesized.function_statements(logical) for a in as_list(s["Action"])}
        expected = {"logs", "xray"} | {
            "extract": {"s3", "secretsmanager"},
            "transform": {"s3"},
            "load": {"s3", "secretsmanager"},
            "report": {"sns"},
        }[stage]
        assert services == expected, stage


def test_state_machine_may_invoke_exactly_the_four_functions(synthesized: Synthesized) -> None:
    _, properties = synthesized.state_machine()
    role_id = properties["RoleArn"]["Fn::GetAtt"][0]
    invoke = [
        statement
        for statement in synthesized.role_statements(role_id)
        if "lambda:InvokeFunction" in as_list(statement["Action"])
    ]

    assert len(invoke) == 1
    assert sorted(json.dumps(r) for r in invoke[0]["Resource"]) == sorted(
        json.dumps({"Fn::GetAtt": [i, "Arn"]}) for i in synthesized.function_ids().values()
    )


def test_operators_policy_runs_stops_inspects_and_redrives_this_state_machine_only(synthesized: Synthesized) -> None:
    logical, _ = synthesized.state_machine()
    ((policy_id, policy),) = synthesized.resources("AWS::IAM::ManagedPolicy").items()
    granted: dict[str, set[str]] = {}
    for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            granted.setdefault(rendered(statement["Resource"]), set()).add(action)

    executions = (
        'arn:aws:states:eu-west-2:<ref:AWS::AccountId>:execution:{"Fn::Select": [6, {"Fn::Split": [":", '
        f'{{"Ref": "{logical}"}}]}}]}}:*'
    )
    assert granted == {
        f"<ref:{logical}>": {"states:StartExecution", "states:DescribeStateMachine", "states:ListExecutions"},
        executions: {
            "states:DescribeExecution",
            "states:GetExecutionHistory",
            "states:StopExecution",
            "states:RedriveExecution",
        },
    }
    assert "Roles" not in policy["Properties"] and "Users" not in policy["Properties"], "attached by operators"
    assert synthesized.template_json["Outputs"]["OperatorsPolicyArn"] == {"Value": {"Ref": policy_id}}
