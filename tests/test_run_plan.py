"""A run costs only the work it has (issue 21): one planning step reads every table's change signal and the
work earlier runs left, and the Maps iterate only the tables with work.

Counted from the execution history Step Functions records (the states it bills, the Lambda tasks it
schedules), and checked against the warehouse: skipping work must never skip a change.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import boto3
from moto import mock_aws

from lambdas.common.errors import TransientError
from lambdas.common.lake import Bucket
from lambdas.common.tables import DIMENSIONS, FACTS, PRIMARY_KEYS, SOURCE_TABLES, WAREHOUSE_TABLES
from lambdas.extract.run_plan import plan_run
from lambdas.load.handler import handler as load
from statemachine.local import runner
from statemachine.local.counts import run_counts
from statemachine.local.deployment import synthesized_deployment
from statemachine.local.report import progress_line
from tests.conftest import Databases, as_admin
from tests.test_change_signal import counted

QUIET_STATES, QUIET_INVOCATIONS = 12, 3
# lease, "another run?", plan, "anything to do?", the child, report, "did every table succeed?", the end
WORK_STATES = 8


def reads(db: Databases, table: str) -> tuple[int, int, int]:
    """How often the server has read the table: sequential scans, rows they read, index scans."""
    row = as_admin(db, "SELECT seq_scan, seq_tup_read, coalesce(idx_scan, 0) FROM pg_stat_user_tables "
                       "WHERE relname = :t", t=table)  # fmt: skip
    return tuple(row[0])


def worked_on(outcome: runner.RunOutcome) -> dict[str, set[str]]:
    """The tables each stage was invoked for in this run."""
    found: dict[str, set[str]] = {"extract": set(), "transform": set(), "load": set()}
    for invocation in outcome.invocations:
        if invocation.stage in found:
            found[invocation.stage].add(invocation.table)
    return found


def test_a_run_with_nothing_changed_enters_at_most_12_states_and_invokes_at_most_3_functions(
    reader: Databases,
) -> None:
    first = reader.run()
    assert first.succeeded and [i.ok for i in first.invocations if i.stage == "plan"] == [True], first
    before = {table: reads(reader, table) for table in SOURCE_TABLES}

    quiet = reader.run()
    counts = run_counts(quiet.history)

    assert quiet.succeeded, quiet
    plan = next((i.result for i in quiet.invocations if i.stage == "plan"), None)
    assert counts.states <= QUIET_STATES, (counts, plan)
    assert counts.invocations <= QUIET_INVOCATIONS, (counts, plan)
    assert len(quiet.invocations) == counts.invocations  # the history counts what the functions saw
    assert [i.stage for i in quiet.invocations] == ["lease", "plan", "report"]
    assert worked_on(quiet) == {"extract": set(), "transform": set(), "load": set()}
    assert progress_line(quiet.invocations[1]).endswith("nothing to do")
    assert {table: reads(reader, table) for table in SOURCE_TABLES} == before  # the plan read no table
    assert reader.differences() == {}


def test_a_run_in_which_two_tables_changed_works_only_for_them_and_the_tables_built_from_them(
    reader: Databases,
) -> None:
    first_load = reader.run()
    assert first_load.succeeded, first_load
    # a first load reads whole tables: the plan cannot bound it in Express's five minutes
    assert run_counts(first_load.history).child_states.keys() == {"STANDARD"}
    counted(
        reader,
        "UPDATE design SET design_name = design_name || ' v2', last_updated = clock_timestamp() "
        "WHERE design_id = (SELECT min(design_id) FROM design)",
        "UPDATE sales_order SET units_sold = units_sold + 1, last_updated = clock_timestamp() "
        "WHERE sales_order_id = (SELECT min(sales_order_id) FROM sales_order)",
    )

    outcome = reader.run()

    assert outcome.succeeded, outcome
    assert worked_on(outcome) == {
        "extract": {"design", "sales_order"},
        "transform": {"dim_design", "dim_date", "fact_sales_order"},  # dim_date is built from sales_order too
        "load": {"dim_design", "dim_date", "fact_sales_order"},
    }
    planned = next(i for i in outcome.invocations if i.stage == "plan")
    assert planned.result["workflow"] == "express" and planned.result["why_standard"] is None
    assert planned.result["reasons"]["transform dim_date"] == "sales_order is extracted in this run"
    assert progress_line(planned).endswith("2 to extract, 3 to transform, 3 to load")
    assert reader.differences() == {}  # the change reached the warehouse: the new version and the new name


def test_a_run_with_work_enters_the_same_parent_states_whatever_the_number_of_tables(reader: Databases) -> None:
    """The per-table states are the Express child's, billed per request and second: the parent's (billed per
    state) are lease, plan, the child, the report. Counted apart from the histories Step Functions records."""
    assert reader.run().succeeded
    counted(reader, "UPDATE currency SET last_updated = clock_timestamp() "
                    "WHERE currency_id = (SELECT min(currency_id) FROM currency)")  # fmt: skip
    one = run_counts(reader.run().history)
    counted(reader, *(f"UPDATE {t} SET last_updated = clock_timestamp() WHERE {PRIMARY_KEYS[t]} = "
                      f"(SELECT min({PRIMARY_KEYS[t]}) FROM {t})" for t in SOURCE_TABLES))  # fmt: skip
    every = reader.run()
    counts = run_counts(every.history)

    assert every.succeeded, every
    assert one.states == counts.states == WORK_STATES, (one, counts)
    assert one.child_states.keys() == counts.child_states.keys() == {"EXPRESS"}
    assert one.express_requests == counts.express_requests == 1
    assert one.child_states["EXPRESS"] < counts.child_states["EXPRESS"]  # the Maps iterate the tables with work
    assert counts.transitions == WORK_STATES  # nothing of the child is billed per state
    assert worked_on(every)["extract"] == set(SOURCE_TABLES)


def test_a_load_that_failed_is_done_by_the_next_quiet_run_which_also_releases_the_facts_it_held(
    reader: Databases,
) -> None:
    def staff_load_down(event: dict[str, Any], context: Any) -> Any:
        if event.get("table") == "dim_staff":
            raise RuntimeError("the warehouse refused dim_staff")
        return load(event, context)

    first = runner.run(source=reader.source, warehouse=reader.warehouse, lake_dir=reader.lake, execution_input={},
                       handlers={"totesys-load": staff_load_down}, deployment=reader.deployment)  # fmt: skip
    assert first.status == "FAILED", first
    held = {i.table for i in first.invocations if i.stage == "load" and i.ok and i.result.get("rows_held")}
    assert "fact_sales_order" in held  # its rows wait for their staff

    nothing_changed = reader.run()

    assert nothing_changed.succeeded, nothing_changed
    assert worked_on(nothing_changed) == {"extract": set(), "transform": set(), "load": {"dim_staff", *held}}
    loaded = {i.table: i.result for i in nothing_changed.invocations if i.stage == "load"}
    assert all(loaded[fact]["rows_held"] == 0 and loaded[fact]["rows_released"] > 0 for fact in held)
    assert reader.differences() == {}


def test_a_source_that_cannot_be_reached_is_work_for_every_table_not_nothing_to_do() -> None:
    """A plan never answers "nothing to do" to "I could not tell": the extracts then say what is wrong."""
    attempts: list[int] = []

    def unreachable() -> Any:
        attempts.append(1)
        raise TransientError("totesys: connection refused")

    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-2")
        for name in ("ingestion", "processed"):
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        plan = plan_run({}, con=unreachable, ingestion=Bucket("ingestion", s3), processed=Bucket("processed", s3),
                        signal_max_age=timedelta(hours=1))  # fmt: skip

    assert plan.extract == list(SOURCE_TABLES) and plan.transform == list(WAREHOUSE_TABLES) and plan.work
    assert "connection refused" in plan.reasons["extract sales_order"]
    assert plan.workflow == "standard" and "could not tell" in str(plan.heavy)  # nothing bounds what it cannot see
    assert attempts == [1]  # tried once, not once per table


def test_a_run_mode_plans_every_table_it_names_without_asking_the_source() -> None:
    def never() -> Any:
        raise AssertionError("a full refresh needs no change signal")

    plan = plan_run({"tables": ["staff"], "full_refresh": True}, con=never, ingestion=Bucket("unused", object()),
                    processed=Bucket("unused", object()), signal_max_age=timedelta(hours=1))  # fmt: skip

    assert plan.extract == ["staff"] and plan.transform == list(WAREHOUSE_TABLES)
    assert plan.dimensions == list(DIMENSIONS) and plan.facts == list(FACTS)
    assert plan.workflow == "standard" and plan.heavy == "the run is a full refresh"  # whole tables: not Express


def test_a_re_run_asks_for_the_standard_workflow_and_gets_it() -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-2")
        for name in ("ingestion", "processed"):
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        plan = plan_run({"tables": [], "standard_workflow": True}, con=lambda: None,
                        ingestion=Bucket("ingestion", s3), processed=Bucket("processed", s3),
                        signal_max_age=timedelta(hours=1))  # fmt: skip

    assert plan.as_dict()["workflow"] == "standard" and "re-run" in plan.as_dict()["why_standard"]


def test_a_child_workflow_that_cannot_run_fails_the_run_with_its_error_and_releases_the_lease(
    reader: Databases,
) -> None:
    """Without states:StartExecution on the children (as IAM would refuse it in AWS) no table runs: the parent
    catches the child's failure, the report fails the run naming it, and the lease is released for the next run."""
    deployment = reader.deployment or synthesized_deployment()
    kept = tuple(s for s in deployment.state_machine_statements if "states:StartExecution" not in s["Action"])
    refused = replace(deployment, state_machine_statements=kept)

    first_load = runner.run(source=reader.source, warehouse=reader.warehouse, lake_dir=reader.lake,
                            execution_input={}, deployment=refused)  # fmt: skip

    assert first_load.status == "FAILED" and first_load.error == "TablesFailed", first_load
    assert "StepFunctions.AccessDeniedException" in first_load.cause and "states:StartExecution" in first_load.cause
    assert worked_on(first_load) == {"extract": set(), "transform": set(), "load": set()}
    assert run_counts(first_load.history).child_states == {}
    assert reader.run().succeeded  # the lease was given back: the next run does the first load
