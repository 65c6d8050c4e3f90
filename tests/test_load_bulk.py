"""Large fact batches check their foreign keys once per batch, with the same result and the same schema."""

from __future__ import annotations

from datetime import date, time
from decimal import Decimal

import pg8000.native
import pyarrow as pa
import pytest

from lambdas.load import held, warehouse
from tests.conftest import Databases
from tests.test_warehouse_contract import catalogue


def test_the_bulk_path_loads_exactly_the_same_warehouse_and_leaves_the_constraints_as_they_were(
    awkward: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(warehouse, "BULK_ROWS", 1)

    assert awkward.run().succeeded

    assert awkward.differences() == {}
    con = awkward.warehouse_con()
    try:
        _, constraints = catalogue(con)
        assert sum(1 for _, kind, _ in constraints if kind == "f") == 24  # warehouse.sql's foreign keys
        assert con.run("SELECT bool_and(convalidated), count(*) FROM pg_constraint WHERE contype = 'f'") == [[True, 24]]
    finally:
        con.close()


def primary_key_index(con: pg8000.native.Connection) -> int:
    return con.run("SELECT to_regclass('fact_sales_order_pkey')::oid")[0][0]


def bad_sale(staff_id: int) -> pa.Table:
    return pa.table(
        {
            "sales_order_id": pa.array([99], pa.int32()),
            "created_date": pa.array([date(2023, 3, 1)]),
            "created_time": pa.array([time(9, 30)], pa.time64("us")),
            "last_updated_date": pa.array([date(2023, 3, 1)]),
            "last_updated_time": pa.array([time(10, 30)], pa.time64("us")),
            "sales_staff_id": pa.array([staff_id], pa.int32()),
            "counterparty_id": pa.array([1], pa.int32()),
            "units_sold": pa.array([1], pa.int32()),
            "unit_price": pa.array([Decimal("1.00")], pa.decimal128(10, 2)),
            "currency_id": pa.array([1], pa.int32()),
            "design_id": pa.array([1], pa.int32()),
            "agreed_payment_date": pa.array([date(2023, 3, 10)]),
            "agreed_delivery_date": pa.array([date(2023, 3, 5)]),
            "agreed_delivery_location_id": pa.array([1], pa.int32()),
        }
    )


def test_a_bulk_batch_that_breaks_a_foreign_key_fails_and_leaves_table_and_constraints_untouched(
    awkward: Databases,
) -> None:
    assert awkward.run().succeeded
    con = awkward.warehouse_con()
    try:
        before_rows = con.run("SELECT count(*) FROM fact_sales_order")[0][0]
        before = catalogue(con)
        con.run("START TRANSACTION")
        with pytest.raises(pg8000.native.DatabaseError, match="fact_sales_order_sales_staff_id_fkey"):
            warehouse.merge_batch(con, "fact_sales_order", [bad_sale(staff_id=4242)], bulk_rows=1)
        con.run("ROLLBACK")
        assert con.run("SELECT count(*) FROM fact_sales_order")[0][0] == before_rows
        assert catalogue(con) == before

        con.run("START TRANSACTION")
        counts = warehouse.merge_batch(con, "fact_sales_order", [bad_sale(staff_id=1)], bulk_rows=1)
        con.run("COMMIT")
        assert counts.written == 1 and catalogue(con) == before
    finally:
        con.close()


def test_into_an_empty_fact_a_bulk_batch_with_a_missing_dimension_row_holds_that_row_and_loads_the_rest(
    awkward: Databases,
) -> None:
    assert awkward.run().succeeded
    con = awkward.warehouse_con()
    try:
        con.run("TRUNCATE fact_sales_order")
        before = catalogue(con)
        holding = held.Holding("fact_sales_order")
        con.run("START TRANSACTION")
        batch = pa.concat_tables(
            [bad_sale(staff_id=1), bad_sale(staff_id=4242).set_column(0, "sales_order_id", pa.array([98], pa.int32()))]
        )
        counts = warehouse.merge_batch(con, "fact_sales_order", [batch], bulk_rows=1, hold=holding)
        kept = holding.collect(con, lambda: [batch])
        con.run("COMMIT")
        assert counts.written == 1 and holding.rows == 1
        assert kept is not None and kept["sales_order_id"].to_pylist() == [98]
        assert con.run("SELECT sales_order_id, sales_staff_id FROM fact_sales_order") == [[99, 1]]
        assert catalogue(con) == before
    finally:
        con.close()


def test_into_an_empty_fact_a_bulk_batch_with_a_version_twice_loads_it_once(awkward: Databases) -> None:
    assert awkward.run().succeeded
    con = awkward.warehouse_con()
    try:
        con.run("TRUNCATE fact_sales_order")
        before, index = catalogue(con), primary_key_index(con)
        con.run("START TRANSACTION")
        twice = pa.concat_tables([bad_sale(staff_id=1), bad_sale(staff_id=2)])  # same version key, other content
        counts = warehouse.merge_batch(con, "fact_sales_order", [twice], bulk_rows=1)
        con.run("COMMIT")
        assert counts.written == 1
        assert con.run("SELECT sales_order_id, sales_staff_id FROM fact_sales_order") == [[99, 1]]  # the first wins
        assert catalogue(con) == before and primary_key_index(con) == index  # the exact path took over
    finally:
        con.close()


def test_into_an_empty_fact_the_bulk_batch_gives_the_rows_the_exact_path_gives(awkward: Databases) -> None:
    assert awkward.run().succeeded
    con = awkward.warehouse_con()
    try:
        columns = bad_sale(1).column_names
        everything = f"SELECT {', '.join(columns)} FROM fact_sales_order ORDER BY {', '.join(columns)}"
        exact = con.run(everything)
        rows = pa.Table.from_pylist([dict(zip(columns, r, strict=True)) for r in exact], schema=bad_sale(1).schema)
        con.run("TRUNCATE fact_sales_order")
        before, index = catalogue(con), primary_key_index(con)
        con.run("START TRANSACTION")
        counts = warehouse.merge_batch(
            con, "fact_sales_order", [rows], bulk_rows=1, hold=held.Holding("fact_sales_order")
        )
        con.run("COMMIT")
        again = con.run(everything)
        assert counts.written == len(exact) > 0 and again == exact
        assert catalogue(con) == before
        assert primary_key_index(con) != index  # built after the insert: the bulk path, not the exact one, ran
    finally:
        con.close()


def test_into_an_empty_dimension_a_bulk_batch_rebuilds_its_key_and_the_foreign_keys_to_it(awkward: Databases) -> None:
    assert awkward.run().succeeded
    con = awkward.warehouse_con()
    try:
        everything = "SELECT transaction_id, transaction_type, sales_order_id, purchase_order_id FROM dim_transaction"
        exact = sorted(con.run(everything))
        schema = pa.schema([("transaction_id", pa.int32()), ("transaction_type", pa.string()),
                            ("sales_order_id", pa.int32()), ("purchase_order_id", pa.int32())])  # fmt: skip
        rows = pa.Table.from_pylist([dict(zip(schema.names, r, strict=True)) for r in exact], schema=schema)
        con.run("TRUNCATE fact_payment, dim_transaction")
        before = catalogue(con)
        index = con.run("SELECT to_regclass('dim_transaction_pkey')::oid")[0][0]
        con.run("START TRANSACTION")
        counts = warehouse.merge_batch(con, "dim_transaction", [rows], bulk_rows=1)
        con.run("COMMIT")
        assert counts.written == len(exact) > 0 and sorted(con.run(everything)) == exact
        assert catalogue(con) == before  # fact_payment's foreign key to it is back, validated
        assert con.run("SELECT to_regclass('dim_transaction_pkey')::oid")[0][0] != index  # built after the insert

        con.run("TRUNCATE fact_payment, dim_transaction")
        con.run("START TRANSACTION")
        with pytest.raises(pg8000.native.DatabaseError, match="cannot affect row a second time"):
            warehouse.merge_batch(con, "dim_transaction", [pa.concat_tables([rows, rows])], bulk_rows=1)
        con.run("ROLLBACK")  # a key staged twice: the exact path's own error, and nothing changed
        assert catalogue(con) == before and con.run("SELECT count(*) FROM dim_transaction") == [[0]]
    finally:
        con.close()
