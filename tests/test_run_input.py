"""A run asked something it cannot do says so, alerts, and leaves nothing held: malformed input, a broken report."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from lambdas.common.keys import lease_key
from lambdas.report.handler import handler as report
from lambdas.report.options import InvalidRunInput, run_options
from statemachine.local.runner import INGESTION_BUCKET, REGION, _Context, local_pipeline
from tests.conftest import Databases

DEFAULTS = {"tables": ["staff", "department"], "full_refresh": False}


@pytest.mark.parametrize(
    ("given", "complaint"),
    [
        ({"tables": "sales_order"}, "'tables' must be a list of table names, got 'sales_order'"),
        (None, "the execution input must be a JSON object"),
        ({"tables": ["sales_order", "no_such_table"]}, "'tables': unknown table no_such_table"),
        ({"full_refresh": "yes"}, "'full_refresh' must be true or false"),
        ({"ignore_change_signal": 1}, "'ignore_change_signal' must be true or false"),
        ({"standard_workflow": "yes"}, "'standard_workflow' must be true or false"),
    ],
)
def test_a_malformed_execution_input_is_refused_naming_what_is_wrong(given: Any, complaint: str) -> None:
    with pytest.raises(InvalidRunInput, match="^" + complaint.replace("(", r"\(").replace("[", r"\[")):
        run_options(DEFAULTS, given)


def test_a_table_named_twice_is_run_once_and_other_keys_pass_through() -> None:
    options = run_options(DEFAULTS, {"tables": ["staff", "staff", "department"], "reconcile": True})
    assert options == {"tables": ["staff", "department"], "full_refresh": False, "reconcile": True}


def test_a_huge_table_name_is_cut_short_in_the_refusal() -> None:
    with pytest.raises(InvalidRunInput) as refused:
        run_options(DEFAULTS, {"tables": ["x" * 5_000_000]})
    assert len(str(refused.value)) < 1000


@pytest.mark.parametrize("run", [None, {}, {"extracted": "sales_order"}, {"extracted": [None, "x", {"no": "table"}]}])
def test_the_report_of_a_malformed_or_empty_run_result_is_a_failure_not_a_crash(run: Any) -> None:
    event = run if not isinstance(run, dict) else {**run, "execution_id": "arn:aws:states:eu-west-2:1:execution:m:n"}
    result = report(event, _Context("totesys-report"))
    assert result["failed"] is True
    assert any(f["error"] == "MalformedResult" for f in result["failures"])


def lease_is_held() -> bool:
    try:
        boto3.client("s3", region_name=REGION).head_object(Bucket=INGESTION_BUCKET, Key=lease_key())
    except ClientError:
        return False
    return True


@pytest.mark.parametrize("given", [{"tables": "sales_order"}, None])
def test_a_malformed_input_fails_the_run_before_anything_runs_and_still_sends_the_alert(
    databases: Databases, given: Any
) -> None:
    with local_pipeline(source=databases.source, warehouse=databases.warehouse, lake_dir=databases.lake) as pipeline:
        outcome = pipeline.wait(pipeline.start(given))  # type: ignore[arg-type]

    assert outcome.status == "FAILED" and outcome.error == "InvalidRunInput", outcome
    assert "refused its input" in (outcome.cause or "")
    # the lease's options check refused it before taking the lease; no table was touched
    assert [(i.stage, i.ok) for i in outcome.invocations] == [("lease", False), ("report", True)]
    assert not (databases.lake / INGESTION_BUCKET / lease_key()).exists()
    assert len(outcome.alerts) == 1
    subject, body = outcome.alerts[0]
    assert subject == "Totesys ETL failed: invalid run input"
    assert "must be" in body and outcome.execution_arn in body


def test_a_report_that_crashes_still_releases_the_lease_and_fails_the_run(databases: Databases) -> None:
    databases.seed(scale=0.02)

    def broken_report(event: dict[str, Any], context: Any) -> Any:
        if event.get("action"):
            return report(event, context)
        raise RuntimeError("the report broke")

    with local_pipeline(source=databases.source, warehouse=databases.warehouse, lake_dir=databases.lake,
                        handlers={"totesys-report": broken_report}) as pipeline:  # fmt: skip
        outcome = pipeline.wait(pipeline.start({"tables": ["staff", "staff", "department"]}))
        held = lease_is_held()

    assert outcome.status == "FAILED", outcome
    assert "The run report failed" in (outcome.cause or "") and "the report broke" in (outcome.cause or "")
    assert not held
    assert not (databases.lake / INGESTION_BUCKET / lease_key()).exists()  # the local lake forgets it too
    extracts = [i.table for i in outcome.invocations if i.stage == "extract"]
    assert sorted(extracts) == ["department", "staff"]  # named twice, extracted once
    assert json.loads(json.dumps(outcome.history, default=str))  # the history is complete and serialisable


def test_a_huge_table_name_reaching_a_stage_is_cut_short_in_its_error() -> None:
    from lambdas.common.errors import UnknownTableError
    from lambdas.common.tables import require_source_table, require_warehouse_table

    for require in (require_source_table, require_warehouse_table):
        with pytest.raises(UnknownTableError) as refused:
            require("t" * 5_000_000)
        assert len(str(refused.value)) < 1000


def test_the_ignore_change_signal_flag_becomes_the_execution_input_and_combines_with_a_mode() -> None:
    from statemachine.local.__main__ import _parser, run_request

    args = _parser().parse_args(["reconcile", "--tables", "staff", "--ignore-change-signal"])
    request = run_request(args, reconcile=True)

    assert request.execution_input == {"reconcile": True, "tables": ["staff"], "ignore_change_signal": True}
    assert run_options(DEFAULTS, request.execution_input)["ignore_change_signal"] is True
