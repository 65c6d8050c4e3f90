"""The local run executes the synthesized stack: each function's environment and permissions, as CDK deploys them.

A missing grant in cdk/stack.py, a variable a handler reads but its function does not set, a state machine that may
not invoke a function: each fails a local run here, naming what is missing, before any deploy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lambdas.common.keys import head_key
from statemachine.local import deployment as deployed
from statemachine.local import report, runner, sandbox
from statemachine.local.deployment import Deployment, Unresolved, resolve, synthesized_deployment
from tests.conftest import Databases

TABLES = {"tables": ["staff", "department"]}


@pytest.fixture(scope="module")
def stack() -> Deployment:
    return synthesized_deployment()


def without_resource(stack: Deployment, stage: str, resource: str) -> Deployment:
    """The stack with one resource taken out of one function's policy (every statement that names it)."""
    statements = tuple(
        {**s, "Resource": [r for r in s["Resource"] if r != resource]} for s in stack.functions[stage].statements
    )
    assert statements != stack.functions[stage].statements, f"{resource} is not granted to {stage}"
    return stack.with_statements(stage, tuple(s for s in statements if s["Resource"]))


def failure_text(outcome: runner.RunOutcome) -> str:
    """What a person sees of a failed run: its cause and the failure summary the command prints."""
    return f"{outcome.cause}\n{report.failure_summary(outcome, report.rerun(outcome), None)}"


def test_the_tokens_of_the_synthesized_stack_map_onto_the_local_resources(stack: Deployment) -> None:
    env = {stage: spec.environment for stage, spec in stack.functions.items()}

    assert env["extract"]["INGESTION_BUCKET"] == env["transform"]["INGESTION_BUCKET"] == runner.INGESTION_BUCKET
    assert env["transform"]["PROCESSED_BUCKET"] == env["load"]["PROCESSED_BUCKET"] == runner.PROCESSED_BUCKET
    assert env["report"]["ALERT_TOPIC_ARN"] == deployed.topic_arn()
    assert (env["extract"]["TOTESYS_SECRET_ID"], env["load"]["WAREHOUSE_SECRET_ID"]) == (
        "totesys/source",
        "totesys/warehouse",
    )  # from cdk.json's context, as deployed

    def invoked(statements: tuple[dict[str, Any], ...]) -> set[str]:
        return {r for s in statements if s["Action"] == "lambda:InvokeFunction" for r in s["Resource"]}

    # the run invokes the lease, the plan and the report; its children the tables' work
    assert invoked(stack.state_machine_statements) == {deployed.function_arn(s) for s in ("lease", "extract", "report")}
    for child in stack.children_statements.values():
        assert invoked(child) == {deployed.function_arn(s) for s in ("extract", "transform", "load")}
    granted = {r for s in stack.functions["transform"].statements for r in s["Resource"]}
    assert f"arn:aws:s3:::{runner.INGESTION_BUCKET}/{head_key('extract', 'staff')}" in granted
    assert "arn:aws:secretsmanager:eu-west-2:123456789012:secret:totesys/source-??????" in {
        r for s in stack.functions["extract"].statements for r in s["Resource"]
    }
    with pytest.raises(Unresolved, match="SomeQueue"):  # no local counterpart: never silently a wrong value
        resolve({"Fn::GetAtt": ["SomeQueue", "Arn"]}, {("SomeBucket", "Arn"): "arn:aws:s3:::b"})


def test_the_policy_evaluator_matches_iam_wildcards_and_refuses_what_it_cannot_judge() -> None:
    granted = ["arn:aws:s3:::b/t/*", "arn:aws:s3:::b/h?.json"]
    statements = ({"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": granted},)

    assert sandbox.allows(statements, "s3:GetObject", "arn:aws:s3:::b/t/0000000001/part-00000-x.parquet")
    assert sandbox.allows(statements, "S3:getobject", "arn:aws:s3:::b/h1.json"), "actions are case-insensitive"
    assert not sandbox.allows(statements, "s3:GetObject", "arn:aws:s3:::b/T/1"), "resources are case-sensitive"
    assert not sandbox.allows(statements, "s3:GetObject", "arn:aws:s3:::b/h12.json")
    assert not sandbox.allows(statements, "s3:PutObject", "arn:aws:s3:::b/t/1")
    assert not sandbox.allows(statements, "s3:GetObject", "arn:aws:s3:::b/t")
    for unsupported in (
        {"Effect": "Deny", "Action": "s3:*", "Resource": "*"},
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "true"}}},
        {"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"},
    ):
        with pytest.raises(sandbox.UnsupportedStatement):
            sandbox.check_statements((unsupported,))


def spy(stage: str, seen: dict[str, dict[str, str]]) -> Callable[..., Any]:
    """The real handler of ``stage``, remembering the environment it ran in."""
    import importlib

    real = importlib.import_module(f"lambdas.{stage}.handler").handler

    def handler(event: dict[str, Any], context: Any) -> Any:
        seen[stage] = dict(os.environ)
        return real(event, context)

    return handler


def test_each_handler_sees_only_its_own_functions_variables(
    databases: Databases, stack: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    databases.seed(scale=0.05)
    monkeypatch.setenv("TOTESYS_NOT_DEPLOYED", "a variable of the developer's shell")
    seen: dict[str, dict[str, str]] = {}
    handlers = {runner.LOCAL_FUNCTION_NAMES[s]: spy(s, seen) for s in ("extract", "transform", "load", "lease")}

    outcome = runner.run(source=databases.source, warehouse=databases.warehouse, lake_dir=databases.lake,
                         execution_input=TABLES, handlers=handlers, deployment=stack)  # fmt: skip

    assert outcome.succeeded, outcome
    for stage, environment in seen.items():
        expected = {**stack.functions[stage].environment, **sandbox.RUNTIME_ENVIRONMENT, **sandbox.LOCAL_ENVIRONMENT}
        assert expected.items() <= environment.items(), stage
        extra = set(environment) - set(expected)
        assert all(k in sandbox.PASSED_THROUGH or k.startswith(sandbox.PASSED_THROUGH_PREFIXES) for k in extra), extra
    assert "TOTESYS_SECRET_ID" in seen["extract"] and "WAREHOUSE_SECRET_ID" not in seen["extract"]
    assert not {"TOTESYS_SECRET_ID", "WAREHOUSE_SECRET_ID", "ALERT_TOPIC_ARN"} & seen["transform"].keys()
    assert "TOTESYS_SECRET_ID" not in seen["load"] and "LEASE_TTL_SECONDS" in seen["lease"]
    assert "TOTESYS_NOT_DEPLOYED" in os.environ and not any("TOTESYS_NOT_DEPLOYED" in e for e in seen.values())


def test_a_grant_removed_from_the_synthesized_policy_fails_the_run_naming_function_action_and_resource(
    databases: Databases, stack: Deployment
) -> None:
    databases.seed(scale=0.05)
    head = f"arn:aws:s3:::{runner.INGESTION_BUCKET}/{head_key('extract', 'staff')}"
    databases.deployment = without_resource(stack, "transform", head)

    outcome = databases.run(**TABLES)

    assert outcome.status == "FAILED"
    assert f"totesys-transform is not authorized to perform: s3:GetObject on resource: {head}" in failure_text(outcome)
    (denied,) = [i for i in outcome.invocations if not i.ok]
    assert (denied.stage, denied.table, denied.result["errorType"]) == ("transform", "dim_staff", "AccessDenied")
    databases.deployment = stack
    assert databases.run(**TABLES).succeeded, "with the grant back, the same lake runs through"


def test_a_missing_list_grant_turns_a_missing_key_into_access_denied_as_s3_does(
    databases: Databases, stack: Deployment
) -> None:
    databases.seed(scale=0.05)
    databases.deployment = without_resource(stack, "extract", f"arn:aws:s3:::{runner.INGESTION_BUCKET}")

    outcome = databases.run(**TABLES)

    assert outcome.status == "FAILED"
    bucket = f"arn:aws:s3:::{runner.INGESTION_BUCKET}"
    assert f"totesys-extract is not authorized to perform: s3:ListBucket on resource: {bucket}" in failure_text(outcome)


def test_a_state_machine_that_may_not_invoke_a_function_fails_the_run_naming_it(
    databases: Databases, stack: Deployment
) -> None:
    databases.seed(scale=0.05)
    load = deployed.function_arn("load")
    statements = tuple(
        {**s, "Resource": [r for r in s["Resource"] if r != load]} for s in stack.children_statements["standard"]
    )
    # the Standard child runs a first load (lambdas/extract/run_plan.py)
    databases.deployment = replace(stack, children_statements={**stack.children_statements, "standard": statements})

    outcome = databases.run(**TABLES)

    assert outcome.status == "FAILED"
    assert (
        f"state machine TotesysEtl-standard is not authorized to perform: lambda:InvokeFunction on resource: {load}"
        in failure_text(outcome)
    )
    assert {i.stage for i in outcome.invocations if i.ok} >= {"extract", "transform"}


def test_the_synthesized_template_is_cached_by_what_it_is_built_from(stack: Deployment) -> None:
    started = time.monotonic()
    again = synthesized_deployment()
    assert time.monotonic() - started < 2, "the second synthesis is read from the cache"
    assert again == stack
    assert deployed.cache_key() == deployed.cache_key({})
    assert deployed.cache_key({"held_stuck_after_seconds": 600}) != deployed.cache_key()
    assert any(path.name == "stack.py" for path in deployed._source_files())


def test_an_app_that_does_not_synthesize_is_refused_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(deployed.CACHE_ENV, str(tmp_path))

    with pytest.raises(deployed.SynthError, match="schedule"):
        deployed.synthesized_template({"schedule": "whenever it suits"})
    assert not list(tmp_path.glob("*.json")), "nothing is cached for an app that did not synthesize"
