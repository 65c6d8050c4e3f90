"""Large fact batches check their foreign keys once per batch, with the same result and the same schema."""

from __future__ import annotations

from datetime import date, time
from decimal import Decimal

import pg8000.native
import pyarrow as pa
import pytest

from lambdas.load import warehouse
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
