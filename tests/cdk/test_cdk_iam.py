"""Least privilege: each role may do exactly what its handler does, on exactly its own keys and secret."""

from __future__ import annotations

import json

from lambdas.common.keys import lease_key, reconcile_snapshot_key
from lambdas.common.tables import FACTS, SOURCE_TABLES, WAREHOUSE_TABLES
from tests.cdk.support import Synthesized, as_list, bucket_references, object_patterns, rendered

GET, GET_PUT = {"s3:GetObject"}, {"s3:GetObject", "s3:PutObject"}
GET_PUT_DELETE = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
# Object key pattern "" stands for the bucket ARN itself (see object_patterns).
LIST = {"": {"s3:ListBucket"}}
EXECUTIONS = "arn:aws:states:eu-west-2:<ref:AWS::AccountId>:execution:TotesysEtl-pipeline:*"


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

    # Every role that reads a bucket may ListBucket on it, so that a missing key is a 404, not a 403.
    # extract: its batches and heads in the ingestion bucket, and the reconciliation checkpoints; the run plan
    # reads (only) the transform heads and load cursors in the processed bucket.
    assert bucket_references(statements["extract"]) == {ingestion, processed}
    assert object_patterns(statements["extract"], ingestion) == {
        **LIST,
        **batches(SOURCE_TABLES, GET_PUT),
        **heads("extract", SOURCE_TABLES, GET_PUT),
        **heads("reconcile", SOURCE_TABLES, GET_PUT),
        **{f"_reconcile/{table}/*": GET_PUT for table in SOURCE_TABLES},
    }
    assert object_patterns(statements["extract"], processed) == {
        **LIST,
        "_state/transform/*.json": GET,
        "_state/load/*.json": GET,
    }
    assert reconcile_snapshot_key("staff", 7).startswith("_reconcile/staff/0000000007-")
    # transform: reads the extracts; writes its batches, _current/ snapshots and heads.
    assert bucket_references(statements["transform"]) == {ingestion, processed}
    assert object_patterns(statements["transform"], ingestion) == {
        **LIST,
        **batches(SOURCE_TABLES, GET),
        **heads("extract", SOURCE_TABLES, GET),
    }
    assert object_patterns(statements["transform"], processed) == {
        **LIST,
        **batches(WAREHOUSE_TABLES, GET_PUT),
        "_current/*": GET_PUT,
        **heads("transform", WAREHOUSE_TABLES, GET_PUT),
    }
    # load: reads the star-schema batches and transform heads; writes only its _state/load/ cursors.
    assert bucket_references(statements["load"]) == {processed}
    assert object_patterns(statements["load"], processed) == {
        **LIST,
        **batches(WAREHOUSE_TABLES, GET),
        **heads("transform", WAREHOUSE_TABLES, GET),
        **heads("load", WAREHOUSE_TABLES, GET_PUT),
        **{f"_held/{fact}/*": GET_PUT for fact in FACTS},
        **heads("verify", WAREHOUSE_TABLES, GET_PUT),
        **{f"_verify/{table}/*": GET_PUT for table in WAREHOUSE_TABLES},
    }
    writes = {
        key for key, actions in object_patterns(statements["load"], processed).items() if "s3:PutObject" in actions
    }
    assert all(key.startswith(("_state/load/", "_held/fact_", "_state/verify/", "_verify/")) for key in writes)
    # report: no data, only the run lease it gives back (read, then deleted if this run holds it).
    assert bucket_references(statements["report"]) == {ingestion}
    assert object_patterns(statements["report"], ingestion) == {
        **LIST,
        lease_key(): {"s3:GetObject", "s3:DeleteObject"},
    }
    # lease: its one object in the ingestion bucket, nothing else.
    assert lease_key() == "_state/run-lease.json"
    assert bucket_references(statements["lease"]) == {ingestion}
    assert object_patterns(statements["lease"], ingestion) == {**LIST, lease_key(): GET_PUT_DELETE}


def test_s3_list_is_only_listbucket_on_bucket_arns_and_only_the_lease_key_is_ever_deleted(
    synthesized: Synthesized, variant: Synthesized
) -> None:
    for stack in (synthesized, variant):
        buckets = stack.bucket_ids()
        releasers = [stack.properties(stack.function_ids()[f])["Role"]["Fn::GetAtt"][0] for f in ("lease", "report")]
        lease_statements = [s for role in releasers for s in stack.role_statements(role)]
        data_buckets = {f"<ref:{buckets['ingestion']}.Arn>", f"<ref:{buckets['processed']}.Arn>"}
        allowed = [s for s in all_policy_statements(stack) if s["Effect"] == "Allow"]
        actions = {action for s in allowed for action in as_list(s["Action"])}

        assert {a for a in actions if a.startswith("s3:")} == GET_PUT_DELETE | {"s3:ListBucket"}
        assert not [a for a in actions if a == "*" or a.endswith(":*") or (a.startswith("s3:") and "*" in a)]
        for statement in allowed:
            s3_actions = {a for a in as_list(statement["Action"]) if a.startswith("s3:")}
            resources = {rendered(r) for r in as_list(statement["Resource"])}
            if "s3:ListBucket" in s3_actions:
                # Bucket ARNs only, never objects, and no condition (see docs/deploy.md).
                assert s3_actions == {"s3:ListBucket"} and resources <= data_buckets, statement
                assert "Condition" not in statement, statement
            if any(a.startswith("s3:Delete") for a in s3_actions):
                assert statement in lease_statements, statement
                assert resources == {f"<ref:{buckets['ingestion']}.Arn>/{lease_key()}"}, statement


def test_lease_role_statements_are_exactly_these(synthesized: Synthesized, variant: Synthesized) -> None:
    for stack, account, tracing in ((synthesized, "<ref:AWS::AccountId>", True), (variant, "123456789012", False)):
        logical = stack.function_ids()["lease"]
        log_group = stack.properties(logical)["LoggingConfig"]["LogGroup"]["Ref"]
        ingestion = stack.bucket_ids()["ingestion"]
        statements = [
            {**s, "Resource": [rendered(r) for r in as_list(s["Resource"])]} for s in stack.function_statements(logical)
        ]
        expected = [
            {
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Effect": "Allow",
                "Resource": [f"<ref:{log_group}.Arn>"],
            },
            *(
                [
                    {
                        "Action": ["xray:PutTelemetryRecords", "xray:PutTraceSegments"],
                        "Effect": "Allow",
                        "Resource": ["*"],
                    }
                ]
                if tracing
                else []
            ),
            {
                "Action": ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"],
                "Effect": "Allow",
                "Resource": [f"<ref:{ingestion}.Arn>/_state/run-lease.json"],
            },
            {"Action": "s3:ListBucket", "Effect": "Allow", "Resource": [f"<ref:{ingestion}.Arn>"]},
            {
                "Action": "states:DescribeExecution",
                "Effect": "Allow",
                "Resource": [f"arn:aws:states:eu-west-2:{account}:execution:TotesysEtl-pipeline:*"],
            },
        ]
        assert sorted(statements, key=json.dumps) == sorted(expected, key=json.dumps)


def test_lease_describes_executions_of_this_state_machine_by_name_without_a_cycle(synthesized: Synthesized) -> None:
    logical, properties = synthesized.state_machine()
    lease = synthesized.function_ids()["lease"]
    (describe,) = [
        s for s in synthesized.function_statements(lease) if "states:DescribeExecution" in as_list(s["Action"])
    ]

    # The pattern names the state machine by its fixed name: no reference to it, which would be a cycle
    # (state machine -> lease ARN substitution -> lease function -> its role's policy -> state machine).
    assert properties["StateMachineName"] == "TotesysEtl-pipeline"
    assert rendered(describe["Resource"]) == EXECUTIONS
    assert logical not in json.dumps(describe)
    assert properties["DefinitionSubstitutions"]["LeaseFunctionArn"] == {"Fn::GetAtt": [lease, "Arn"]}


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
        "lease": [],
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
    # Nothing beyond logs, X-Ray, S3, the secret, (report) the topic and (lease) Step Functions.
    for stage, logical in synthesized.function_ids().items():
        services = {a.split(":")[0] for s in synthesized.function_statements(logical) for a in as_list(s["Action"])}
        expected = {"logs", "xray"} | {
            "extract": {"s3", "secretsmanager"},
            "transform": {"s3"},
            "load": {"s3", "secretsmanager"},
            "report": {"sns", "s3"},
            "lease": {"s3", "states"},
        }[stage]
        assert services == expected, stage


def test_each_state_machine_may_invoke_exactly_the_functions_its_definition_names(synthesized: Synthesized) -> None:
    ids = synthesized.function_ids()
    names = {None: ("extract", "lease", "report"), "express": ("extract", "load", "transform"),
             "standard": ("extract", "load", "transform")}  # fmt: skip
    for workflow, stages in names.items():
        _, properties = synthesized.state_machine(workflow)
        role_id = properties["RoleArn"]["Fn::GetAtt"][0]
        invoke = [
            statement
            for statement in synthesized.role_statements(role_id)
            if "lambda:InvokeFunction" in as_list(statement["Action"])
        ]

        assert len(invoke) == 1, workflow
        assert sorted(json.dumps(r) for r in invoke[0]["Resource"]) == sorted(
            json.dumps({"Fn::GetAtt": [ids[stage], "Arn"]}) for stage in stages
        ), workflow


def test_operators_policy_runs_stops_inspects_and_redrives_this_state_machine_and_its_standard_child_only(
    synthesized: Synthesized,
) -> None:
    logical, _ = synthesized.state_machine()
    ((policy_id, policy),) = synthesized.resources("AWS::IAM::ManagedPolicy").items()
    granted: dict[str, set[str]] = {}
    for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            for resource in as_list(statement["Resource"]):
                granted.setdefault(rendered(resource), set()).add(action)

    assert granted == {
        f"<ref:{logical}>": {"states:StartExecution", "states:DescribeStateMachine", "states:ListExecutions"},
        EXECUTIONS: {
            "states:DescribeExecution",
            "states:GetExecutionHistory",
            "states:StopExecution",
            "states:RedriveExecution",
        },
        # the Standard child that runs the work of heavy runs and re-runs: its graph, stop and redrive
        f"<ref:{synthesized.state_machine('standard')[0]}>": {"states:DescribeStateMachine", "states:ListExecutions"},
        EXECUTIONS.replace("-pipeline", "-standard"): {
            "states:DescribeExecution",
            "states:GetExecutionHistory",
            "states:StopExecution",
            "states:RedriveExecution",
        },
    }
    assert "Roles" not in policy["Properties"] and "Users" not in policy["Properties"], "attached by operators"
    assert synthesized.template_json["Outputs"]["OperatorsPolicyArn"] == {"Value": {"Ref": policy_id}}
