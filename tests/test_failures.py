"""When a table fails: the others go through, the run ends FAILED naming it, people are told how to re-run it."""

from __future__ import annotations

import json

import pytest

from statemachine.local.counts import run_counts
from tests.conftest import Databases, as_admin
from tests.expected import SOURCE, WAREHOUSE


def matches_source(db: Databases, table: str) -> bool:
    source, warehouse = db.source_con(), db.warehouse_con()
    try:
        return [tuple(r) for r in source.run(SOURCE[table])] == [tuple(r) for r in warehouse.run(WAREHOUSE[table])]
    finally:
        source.close()
        warehouse.close()


def test_a_table_that_cannot_be_read_fails_alone_and_its_rerun_completes_the_load(reader: Databases) -> None:
    role = reader.source["username"]
    as_admin(reader, f"REVOKE SELECT ON design FROM {role}")

    failed = reader.run()

    assert failed.status == "FAILED" and failed.error == "TablesFailed"
    cause = json.loads(failed.cause)
    failed_tables = {(f["stage"], f["table"], f["status"]) for f in cause["failed_tables"]}
    assert failed_tables == {("extract", "design", "failed"), ("transform", "dim_design", "skipped"),
                             ("load", "dim_design", "skipped")}  # fmt: skip
    assert "permission denied for table design" in cause["failed_tables"][0]["message"]
    for table in ("dim_staff", "dim_counterparty", "dim_location", "dim_transaction", "fact_payment",
                  "fact_purchase_order"):  # fmt: skip
        assert matches_source(reader, table), table
    # The warehouse has no design yet, so every sales order waits for one: loaded, held, not skipped.
    sales_orders = reader.source_sql("SELECT count(*) FROM sales_order")[0][0]
    held = cause["held_facts"]["fact_sales_order"]
    assert held["rows_held"] == sales_orders and reader.warehouse_sql("SELECT count(*) FROM fact_sales_order") == [[0]]
    assert held["sample"][0]["reason"].startswith("design_id=") and "not in dim_design" in held["sample"][0]["reason"]
    assert cause["rerun_input"] == {"tables": ["design"]}
    assert cause["local_rerun"] == "python -m statemachine.local run --tables design"

    as_admin(reader, f"GRANT SELECT ON design TO {role}")
    rerun = reader.run(**cause["rerun_input"])

    assert rerun.succeeded, rerun.cause
    for table in SOURCE:
        assert matches_source(reader, table), table


def test_a_failed_run_sends_one_alert_with_the_errors_the_console_link_and_the_rerun_input(reader: Databases) -> None:
    as_admin(reader, f"REVOKE SELECT ON staff FROM {reader.source['username']}")

    failed = reader.run()

    assert len(failed.alerts) == 1
    subject, body = failed.alerts[0]
    assert subject == "Totesys ETL failed: staff"
    assert "staff (extract, failed): PipelineError: totesys: permission denied for table staff" in body
    assert failed.execution_arn in body
    assert "console.aws.amazon.com/states/home?region=eu-west-2#/v2/executions/details/" in body
    assert "aws stepfunctions start-execution --state-machine-arn " \
           "arn:aws:states:eu-west-2:123456789012:stateMachine:TotesysEtl-pipeline" in body  # fmt: skip
    assert '--input \'{"tables": ["department", "staff"]}\'' in body  # the facts were loaded, not skipped
    assert "Fact rows held back" in body
    for fact in ("fact_sales_order", "fact_purchase_order"):  # the warehouse has no staff yet: all wait for it
        rows = reader.source_sql(f"SELECT count(*) FROM {fact.removeprefix('fact_')}")[0][0]
        assert f"  - {fact}: {rows} rows held, 0 of them stuck" in body
    assert "not in dim_staff (held since " in body
    assert f"python -m statemachine.rerun {failed.execution_arn}" in body


def test_a_successful_run_sends_no_alert(reader: Databases) -> None:
    outcome = reader.run()
    assert outcome.succeeded and outcome.alerts == []


def test_the_rerun_command_reads_a_failed_execution_and_starts_one_for_only_its_tables(
    reader: Databases, capsys: pytest.CaptureFixture[str]
) -> None:
    from statemachine import rerun
    from statemachine.local.runner import local_pipeline

    role = reader.source["username"]
    as_admin(reader, f"REVOKE SELECT ON payment_type FROM {role}")
    with local_pipeline(source=reader.source, warehouse=reader.warehouse, lake_dir=reader.lake) as pipeline:
        failed = pipeline.wait(pipeline.start({}))
        assert failed.status == "FAILED"
        assert all(i.ok for i in failed.invocations if i.stage == "load"), "payments load, held where they must"
        capsys.readouterr()

        assert rerun.main([failed.execution_arn, "--dry-run"], client=pipeline.sfn) == 0
        # read from the parent's own history (an Express child keeps none in AWS); the re-run in the Standard child
        assert json.loads(capsys.readouterr().out) == {"tables": ["payment_type"], "standard_workflow": True}

        as_admin(reader, f"GRANT SELECT ON payment_type TO {role}")
        assert rerun.main([failed.execution_arn], client=pipeline.sfn) == 0
        started = capsys.readouterr().out.split()[1]
        second = pipeline.wait(started)

    assert second.succeeded, second.cause
    assert {i.table for i in second.invocations if i.stage == "extract"} == {"payment_type"}
    assert run_counts(second.history).child_states.keys() == {"STANDARD"}
    for table in SOURCE:
        assert matches_source(reader, table), table
