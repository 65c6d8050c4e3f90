"""A broken reference table delays only the fact rows that truly need it: the rest loads in the same run.

A fact row whose dimension row is not in the warehouse is held back (durably, with the reason), shown in
the run's report and the local output, and loads by itself in the first later run in which the dimension
row exists. Rows held for too long are reported as stuck, never dropped. Crashes lose and duplicate nothing.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lambdas.common import keys, lake
from lambdas.common.errors import PipelineError
from lambdas.load import held, loader, warehouse
from lambdas.load.schema import ensure_schema
from statemachine.local import report, runner
from statemachine.local.deployment import synthesized_deployment
from tests.conftest import Databases, as_admin
from tests.test_incremental_safety import crash_once

NEW_ORDERS_WITH_KNOWN_DESIGNS, NEW_ORDERS_WITH_A_NEW_DESIGN = 3, 2


def sales_with_a_new_design(db: Databases) -> tuple[int, list[int]]:
    """A new design, new sales orders that use it, and new ones that use designs the warehouse has."""
    design = as_admin(db, "INSERT INTO design (design_name, file_location, file_name) "
                          "VALUES ('Held back', '/designs', 'held.json') RETURNING design_id")[0][0]  # fmt: skip
    total = NEW_ORDERS_WITH_KNOWN_DESIGNS + NEW_ORDERS_WITH_A_NEW_DESIGN
    rows = as_admin(
        db,
        "INSERT INTO sales_order (design_id, staff_id, counterparty_id, units_sold, unit_price, currency_id, "
        "agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id) "
        "SELECT CASE WHEN n > :known THEN :design ELSE design_id END, staff_id, counterparty_id, 7, 9.99, "
        "currency_id, agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id "
        "FROM (SELECT *, row_number() OVER (ORDER BY sales_order_id) AS n FROM sales_order) s WHERE n <= :total "
        "RETURNING sales_order_id, design_id",
        known=NEW_ORDERS_WITH_KNOWN_DESIGNS,
        design=design,
        total=total,
    )
    return design, sorted(order for order, used in rows if used == design)


def differences(db: Databases) -> dict[str, Any]:
    """The warehouse against the source, read as its owner (the pipeline's role may be locked out of a table)."""
    return dataclasses.replace(db, source={**db.admin, "dbname": db.source["dbname"]}).differences()


def fact_rows(db: Databases) -> int:
    return db.warehouse_sql("SELECT count(*) FROM fact_sales_order")[0][0]


def load_result(outcome: runner.RunOutcome, table: str = "fact_sales_order") -> dict[str, Any]:
    return next(i.result for i in outcome.invocations if i.stage == "load" and i.table == table and i.ok)


def load_head(db: Databases) -> dict[str, Any]:
    return json.loads((db.lake / runner.PROCESSED_BUCKET / keys.head_key("load", "fact_sales_order")).read_text())


def revoke(db: Databases, table: str) -> None:
    as_admin(db, f"REVOKE SELECT ON {table} FROM {db.source['username']}")


def grant(db: Databases, table: str) -> None:
    as_admin(db, f"GRANT SELECT ON {table} TO {db.source['username']}")


def test_with_a_dimension_source_unreadable_every_fact_loads_every_row_whose_references_exist(
    reader: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(warehouse, "BULK_ROWS", 1)  # also through the path that drops and re-adds the constraints
    assert reader.run().succeeded
    before = fact_rows(reader)
    design, waiting = sales_with_a_new_design(reader)
    revoke(reader, "design")

    failed = reader.run()

    assert failed.status == "FAILED"
    assert fact_rows(reader) == before + NEW_ORDERS_WITH_KNOWN_DESIGNS
    assert all(i.ok and i.result["status"] == "succeeded" for i in failed.invocations
               if i.stage == "load" and i.table.startswith("fact_"))  # fmt: skip
    different = differences(reader)
    assert set(different) == {"dim_design", "fact_sales_order"}
    assert [row[0] for row in different["fact_sales_order"]["missing"]] == waiting
    result = load_result(failed)
    assert (result["rows_held"], result["rows_stuck"]) == (NEW_ORDERS_WITH_A_NEW_DESIGN, 0)
    assert [s["key"]["sales_order_id"] for s in result["held_sample"]] == [str(o) for o in waiting]
    assert {s["reason"] for s in result["held_sample"]} == {f"design_id={design} not in dim_design"}
    cause = json.loads(failed.cause)
    assert cause["held_facts"]["fact_sales_order"]["rows_held"] == NEW_ORDERS_WITH_A_NEW_DESIGN
    assert cause["rerun_input"] == {"tables": ["design"]}
    _, body = failed.alerts[0]
    assert f"sales_order_id={waiting[0]}, last_updated_date=" in body
    assert f"design_id={design} not in dim_design" in body
    assert f"2 held (e.g. design_id={design} not in dim_design)" in report.execution_graph(failed)
    assert "⏸ fact_sales_order" in report.failure_summary(failed, report.rerun(failed), None)
    entry = load_head(reader)["held"]
    assert entry["rows"] == NEW_ORDERS_WITH_A_NEW_DESIGN and entry["key"].startswith(f"{keys.HELD_PREFIX}/")
    kept = pq.read_table(reader.lake / runner.PROCESSED_BUCKET / entry["key"])
    assert kept["sales_order_id"].to_pylist() == waiting
    assert set(kept[held.REASON].to_pylist()) == {f"design_id={design} not in dim_design"}
    assert kept[held.SINCE].null_count == 0

    grant(reader, "design")
    fixed = reader.run(**cause["rerun_input"])

    assert fixed.succeeded, fixed.cause
    assert differences(reader) == {}
    assert fact_rows(reader) == before + NEW_ORDERS_WITH_KNOWN_DESIGNS + NEW_ORDERS_WITH_A_NEW_DESIGN
    assert (load_result(fixed)["rows_released"], load_result(fixed)["rows_held"]) == (2, 0)
    assert "held" not in load_head(reader)


def test_a_row_held_past_the_configured_age_is_reported_stuck_with_its_keys_and_is_never_discarded(
    reader: Databases,
) -> None:
    # No deployable context holds rows for 0 s (the stack's minimum is 300): the load function is deployed with it.
    reader.deployment = synthesized_deployment().with_environment("load", **{held.STUCK_AFTER_ENV: "0"})
    assert reader.run().succeeded
    _, waiting = sales_with_a_new_design(reader)
    revoke(reader, "design")

    first = reader.run()
    head = load_head(reader)
    again = reader.run()

    for outcome in (first, again):
        result = load_result(outcome)
        assert (result["rows_held"], result["rows_stuck"]) == (2, 2)
        assert [s["key"]["sales_order_id"] for s in result["stuck_sample"]] == [str(o) for o in waiting]
    assert load_result(again)["stuck_sample"] == load_result(first)["stuck_sample"], "held_since is kept"
    assert load_head(reader) == head, "rows that stay held write nothing new"
    assert "2 held, 2 stuck" in report.execution_graph(again)
    assert "2 rows held, 2 of them stuck" in again.alerts[0][1]

    grant(reader, "design")
    assert reader.run(tables=["design"]).succeeded
    assert differences(reader) == {}


CRASH_POINTS = {
    "holding: held set written, load head not": (
        lake.ReaderState, "commit", lambda state, *_: state.table == "fact_sales_order", False),
    "holding: held set half-written": (
        lake.Bucket, "put_parquet", lambda b, key, *_: key.startswith(f"{keys.HELD_PREFIX}/"), False),
    "releasing: held rows merged, warehouse transaction not committed": (
        loader, "merge_batch", lambda con, table, *_, **__: table == "fact_sales_order", True),
    "releasing: warehouse committed, load head not": (
        lake.ReaderState, "commit", lambda state, *_: state.table == "fact_sales_order", False),
}  # fmt: skip


@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_a_crash_while_rows_are_held_loses_and_duplicates_nothing(
    reader: Databases, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    assert reader.run().succeeded
    before = fact_rows(reader)
    sales_with_a_new_design(reader)
    revoke(reader, "design")
    owner, name, when, after = CRASH_POINTS[point]

    def maybe_crashing(phase: str, **execution_input: Any) -> runner.RunOutcome:
        if not point.startswith(phase):
            return reader.run(**execution_input)
        with monkeypatch.context() as patch:
            crash_once(patch, owner, name, when, after=after)
            crashed = reader.run(**execution_input)
        assert any(not i.ok for i in crashed.invocations if i.table == "fact_sales_order"), "the crash happened"
        return reader.run(**execution_input)

    holding = maybe_crashing("holding")
    assert load_result(holding)["rows_held"] == NEW_ORDERS_WITH_A_NEW_DESIGN
    assert fact_rows(reader) == before + NEW_ORDERS_WITH_KNOWN_DESIGNS

    grant(reader, "design")
    released = maybe_crashing("releasing", tables=["design"])

    assert released.succeeded, released.cause
    assert fact_rows(reader) == before + NEW_ORDERS_WITH_KNOWN_DESIGNS + NEW_ORDERS_WITH_A_NEW_DESIGN
    assert differences(reader) == {}
    assert "held" not in load_head(reader)


def held_rows(ids: list[int]) -> pa.Table:
    return pa.table(
        {"payment_id": pa.array(ids, pa.int32()), held.REASON: ["currency_id=9 not in dim_currency"] * len(ids)}
    )


def test_a_row_keeps_the_time_it_was_first_held_and_is_stuck_only_past_the_configured_age() -> None:
    first, later = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, 1, tzinfo=UTC)
    earlier = held.settle(held_rows([1, 2]), None, ["payment_id"], now=first, stuck_after=timedelta(days=1))
    assert (earlier.rows, earlier.released, earlier.stuck) == (2, 0, 0)

    now = held.settle(held_rows([2, 3]), earlier.held, ["payment_id"], now=later, stuck_after=timedelta(days=1))

    assert (now.rows, now.released, now.stuck) == (2, 1, 1), "1 loaded; 2 held since the first load; 3 is new"
    assert now.held[held.SINCE].to_pylist() == [first, later]
    assert [s["key"] for s in now.stuck_sample] == [{"payment_id": "2"}]
    assert held.settle(None, now.held, ["payment_id"], now=later, stuck_after=timedelta(0)).released == 2


def test_held_rows_keep_the_warehouse_types_of_their_columns() -> None:
    assert held.arrow_type("numeric(10,2)") == pa.decimal128(10, 2)
    assert held.arrow_type("time without time zone") == pa.time64("us")
    assert held.arrow_type("character varying") == pa.string()
    with pytest.raises(PipelineError, match="no Arrow type for warehouse type 'jsonb'"):
        held.arrow_type("jsonb")


def test_with_counterparty_unreadable_all_three_facts_load_and_hold_only_the_rows_of_the_new_counterparty(
    reader: Databases,
) -> None:
    """The issue's own case: every fact references counterparty, and the sales numbers must not freeze."""
    assert reader.run().succeeded
    facts = {"sales_order": "fact_sales_order", "purchase_order": "fact_purchase_order", "payment": "fact_payment"}
    before = {fact: reader.warehouse_sql(f"SELECT count(*) FROM {fact}")[0][0] for fact in facts.values()}
    new_counterparty = (
        "INSERT INTO counterparty (counterparty_legal_name, legal_address_id) "
        "SELECT 'New & Held Ltd', min(address_id) FROM address RETURNING counterparty_id"
    )
    counterparty = as_admin(reader, new_counterparty)[0][0]
    for source in facts:
        key = f"{source}_id"
        as_admin(reader, f"UPDATE {source} SET counterparty_id = :c, last_updated = now() WHERE {key} <= 2",
                 c=counterparty)  # fmt: skip
        as_admin(reader, f"UPDATE {source} SET last_updated = now() WHERE {key} BETWEEN 3 AND 5")
    revoke(reader, "counterparty")

    failed = reader.run()

    assert failed.status == "FAILED"
    for source, fact in facts.items():
        result = load_result(failed, fact)
        assert (result["rows_written"], result["rows_held"]) == (3, 2), fact
        assert reader.warehouse_sql(f"SELECT count(*) FROM {fact}")[0][0] == before[fact] + 3
        assert [s["key"][f"{source}_id"] for s in result["held_sample"]] == ["1", "2"]
        assert {s["reason"] for s in result["held_sample"]} == {
            f"counterparty_id={counterparty} not in dim_counterparty"
        }

    grant(reader, "counterparty")
    assert reader.run(**json.loads(failed.cause)["rerun_input"]).succeeded
    assert differences(reader) == {}
    for fact in facts.values():
        assert reader.warehouse_sql(f"SELECT count(*) FROM {fact}")[0][0] == before[fact] + 5


def test_held_rows_come_back_from_the_warehouse_exactly_as_staged_awkward_text_included(
    databases: Databases,
) -> None:
    staged = pa.table(
        {
            "purchase_order_id": pa.array([1, 2], pa.int32()),
            "created_date": pa.array([date(2023, 3, 1)] * 2),
            "created_time": pa.array([time(9, 30, 0, 123456)] * 2, pa.time64("us")),
            "last_updated_date": pa.array([date(2023, 3, 1)] * 2),
            "last_updated_time": pa.array([time(10, 30)] * 2, pa.time64("us")),
            "staff_id": pa.array([7, 8], pa.int32()),
            "counterparty_id": pa.array([1, 1], pa.int32()),
            "item_code": ['multi\nline, "quoted"', ""],
            "item_quantity": pa.array([3, 4], pa.int32()),
            "item_unit_price": pa.array([Decimal("12.34"), Decimal("0.01")], pa.decimal128(10, 2)),
            "currency_id": pa.array([1, 1], pa.int32()),
            "agreed_delivery_date": pa.array([date(2023, 3, 5)] * 2),
            "agreed_payment_date": pa.array([date(2023, 3, 10)] * 2),
            "agreed_delivery_location_id": pa.array([1, 1], pa.int32()),
        }
    )
    con = databases.warehouse_con()
    try:
        ensure_schema(con)
        holding = held.Holding("fact_purchase_order")
        con.run("START TRANSACTION")
        counts = warehouse.merge_batch(con, "fact_purchase_order", [staged], hold=holding)
        kept = holding.collect(con, lambda: [staged])
        con.run("ROLLBACK")
    finally:
        con.close()

    assert (counts.written, holding.rows) == (0, 2), "the warehouse is empty: no reference resolves"
    assert kept is not None and kept.drop_columns([held.REASON]).equals(staged)
    assert kept[held.REASON][0].as_py() == (
        "agreed_delivery_date=2023-03-05 not in dim_date; agreed_delivery_location_id=1 not in dim_location; "
        "agreed_payment_date=2023-03-10 not in dim_date; counterparty_id=1 not in dim_counterparty; "
        "created_date=2023-03-01 not in dim_date; currency_id=1 not in dim_currency; "
        "last_updated_date=2023-03-01 not in dim_date; staff_id=7 not in dim_staff"
    )
