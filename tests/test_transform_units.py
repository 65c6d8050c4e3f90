"""The remodelling rules, one by one, on small hand-checked tables (no AWS, no database)."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal

import pyarrow as pa
import pytest

from lambdas.common.errors import PipelineError
from lambdas.transform import dates, dimensions, facts
from lambdas.transform.columns import keep_last
from lambdas.transform.currency import currency_name

TS = pa.timestamp("us")


def sales_orders(**overrides: list) -> pa.Table:
    columns = {
        "sales_order_id": pa.array([1, 2], pa.int32()),
        "created_at": pa.array([datetime(2022, 11, 3, 14, 20, 51, 563000), datetime(2023, 1, 1, 0, 0)], TS),
        "last_updated": pa.array(
            [datetime(2022, 11, 3, 14, 20, 51, 563000), datetime(2023, 1, 2, 23, 59, 59, 999000)], TS
        ),
        "design_id": pa.array([7, 8], pa.int32()),
        "staff_id": pa.array([3, 4], pa.int32()),
        "counterparty_id": pa.array([5, 6], pa.int32()),
        "units_sold": pa.array([100, 200], pa.int32()),
        "unit_price": pa.array(["3", "2.5"]),
        "currency_id": pa.array([1, 2], pa.int32()),
        "agreed_delivery_date": pa.array(["2022-11-10", "2031-02-28"]),
        "agreed_payment_date": pa.array(["2022-11-07", "2023-01-05"]),
        "agreed_delivery_location_id": pa.array([9, 10], pa.int32()),
    }
    columns.update({k: pa.array(v) if not isinstance(v, pa.Array) else v for k, v in overrides.items()})
    return pa.table(columns)


def test_sales_fact_splits_timestamps_keeping_milliseconds_and_casts_prices_exactly() -> None:
    fact = facts.fact_sales_order(sales_orders()).to_pylist()
    assert fact[0] == {
        "sales_order_id": 1,
        "created_date": date(2022, 11, 3),
        "created_time": time(14, 20, 51, 563000),
        "last_updated_date": date(2022, 11, 3),
        "last_updated_time": time(14, 20, 51, 563000),
        "sales_staff_id": 3,
        "counterparty_id": 5,
        "units_sold": 100,
        "unit_price": Decimal("3.00"),
        "currency_id": 1,
        "design_id": 7,
        "agreed_payment_date": date(2022, 11, 7),
        "agreed_delivery_date": date(2022, 11, 10),
        "agreed_delivery_location_id": 9,
    }
    assert fact[1]["unit_price"] == Decimal("2.50")
    assert fact[1]["last_updated_time"] == time(23, 59, 59, 999000)
    assert fact[1]["agreed_delivery_date"] == date(2031, 2, 28)


def test_a_price_with_more_than_two_decimals_is_refused_naming_table_column_and_value() -> None:
    with pytest.raises(PipelineError, match=r"sales_order\.unit_price: value '2\.999'"):
        facts.fact_sales_order(sales_orders(unit_price=["3", "2.999"]))


def test_a_date_that_is_not_a_date_is_refused_naming_table_column_and_value() -> None:
    with pytest.raises(PipelineError, match=r"sales_order\.agreed_payment_date: value '2023-02-30'"):
        facts.fact_sales_order(sales_orders(agreed_payment_date=["2022-11-07", "2023-02-30"]))


def test_a_dropped_source_column_the_fact_needs_fails_naming_table_and_column() -> None:
    with pytest.raises(PipelineError, match=r"sales_order: column units_sold is missing.*fact_sales_order"):
        facts.fact_sales_order(sales_orders().drop_columns(["units_sold"]))


def test_a_new_source_column_is_ignored() -> None:
    widened = sales_orders().append_column("discount_code", pa.array(["X", None]))
    assert facts.fact_sales_order(widened).column_names == facts.fact_sales_order(sales_orders()).column_names


def test_the_same_version_seen_twice_becomes_one_fact_row_but_two_versions_stay_two() -> None:
    orders = sales_orders()
    again = pa.concat_tables([orders, orders.slice(0, 1)])
    assert facts.fact_sales_order(again).num_rows == 2
    newer = orders.slice(0, 1).set_column(2, "last_updated", pa.array([datetime(2022, 11, 4)], TS))
    assert facts.fact_sales_order(pa.concat_tables([orders, newer])).num_rows == 3


def test_payment_fact_keeps_paid_flag_and_drops_account_numbers() -> None:
    payment = pa.table(
        {
            "payment_id": pa.array([1], pa.int32()),
            "created_at": pa.array([datetime(2023, 5, 1, 9, 0, 0, 1000)], TS),
            "last_updated": pa.array([datetime(2023, 5, 1, 9, 0, 0, 1000)], TS),
            "transaction_id": pa.array([11], pa.int32()),
            "counterparty_id": pa.array([2], pa.int32()),
            "payment_amount": pa.array(["1234567.8"]),
            "currency_id": pa.array([3], pa.int32()),
            "payment_type_id": pa.array([1], pa.int32()),
            "paid": pa.array([False]),
            "payment_date": pa.array(["2023-05-09"]),
            "company_ac_number": pa.array([123], pa.int32()),
            "counterparty_ac_number": pa.array([456], pa.int32()),
        }
    )
    (row,) = facts.fact_payment(payment).to_pylist()
    assert row["payment_amount"] == Decimal("1234567.80")
    assert row["paid"] is False
    assert row["created_time"] == time(9, 0, 0, 1000)
    assert "company_ac_number" not in row and "counterparty_ac_number" not in row


def test_currency_names_are_iso_4217_and_an_unknown_code_keeps_its_code() -> None:
    assert [currency_name(c) for c in ("GBP", "USD", "EUR", "XYZ")] == ["Pound Sterling", "US Dollar", "Euro", "XYZ"]


def test_dim_location_renames_address_id_and_keeps_nulls_and_empty_strings_apart() -> None:
    address = pa.table(
        {
            "address_id": pa.array([1], pa.int32()),
            "address_line_1": ['1 O\'Connor Street, "Flat" 2'],
            "address_line_2": pa.array([None], pa.string()),
            "district": [""],
            "city": ["Zürich"],
            "postal_code": ["X1"],
            "country": ["CH"],
            "phone": ["+41"],
            "created_at": pa.array([datetime(2022, 1, 1)], TS),
            "last_updated": pa.array([datetime(2022, 1, 1)], TS),
        }
    )
    (row,) = dimensions.dim_location(address).to_pylist()
    assert row == {
        "location_id": 1,
        "address_line_1": '1 O\'Connor Street, "Flat" 2',
        "address_line_2": None,
        "district": "",
        "city": "Zürich",
        "postal_code": "X1",
        "country": "CH",
        "phone": "+41",
    }


def test_dim_staff_rebuilds_every_member_of_a_department_that_changed() -> None:
    staff = pa.table(
        {
            "staff_id": pa.array([1, 2, 3], pa.int32()),
            "first_name": ["Ann", "Bob", "Cy"],
            "last_name": ["A", "B", "C"],
            "department_id": pa.array([10, 10, 20], pa.int32()),
            "email_address": ["a@x", "b@x", "c@x"],
        }
    )
    department = pa.table(
        {
            "department_id": pa.array([10, 20], pa.int32()),
            "department_name": ["Sales", "Finance"],
            "location": pa.array(["Leeds", None]),
        }
    )
    rows = dimensions.dim_staff(staff, department, pa.array([], pa.int32()), pa.array([10], pa.int32())).to_pylist()
    assert [(r["staff_id"], r["department_name"], r["location"]) for r in rows] == [
        (1, "Sales", "Leeds"),
        (2, "Sales", "Leeds"),
    ]
    only_cy = dimensions.dim_staff(staff, department, pa.array([3], pa.int32()), pa.array([], pa.int32()))
    assert only_cy.to_pylist() == [
        {"staff_id": 3, "first_name": "Cy", "last_name": "C", "department_name": "Finance", "location": None,
         "email_address": "c@x"}
    ]  # fmt: skip


def test_dim_staff_refuses_a_member_whose_department_was_never_extracted() -> None:
    staff = pa.table({"staff_id": pa.array([1], pa.int32()), "first_name": ["A"], "last_name": ["B"],
                      "department_id": pa.array([99], pa.int32()), "email_address": ["a@x"]})  # fmt: skip
    department = pa.table({"department_id": pa.array([10], pa.int32()), "department_name": ["S"], "location": ["L"]})
    with pytest.raises(PipelineError, match="department_id 99"):
        dimensions.dim_staff(staff, department, pa.array([1], pa.int32()), pa.array([], pa.int32()))


def test_keep_last_takes_the_most_recently_observed_row_per_key() -> None:
    table = pa.table({"id": [1, 2, 1], "v": ["old", "x", "new"]})
    assert keep_last(table, "id").to_pylist() == [{"id": 2, "v": "x"}, {"id": 1, "v": "new"}]


def test_dim_date_attributes_follow_iso_weeks_and_english_names() -> None:
    rows = dates.calendar(date(2024, 12, 30), date(2025, 1, 5)).to_pylist()
    assert len(rows) == 7
    assert rows[0] == {"date_id": date(2024, 12, 30), "year": 2024, "month": 12, "day": 30, "day_of_week": 1,
                       "day_name": "Monday", "month_name": "December", "quarter": 4}  # fmt: skip
    assert rows[-1]["day_name"] == "Sunday" and rows[-1]["day_of_week"] == 7 and rows[-1]["quarter"] == 1
    assert dates.calendar(date(2024, 2, 29), date(2024, 2, 29)).to_pylist()[0]["month_name"] == "February"


def test_dim_date_grows_at_both_ends_without_gaps_and_never_shrinks() -> None:
    known = (date(2023, 1, 10), date(2023, 1, 20))
    covered, added = dates.grow(known, (date(2023, 1, 1), date(2030, 6, 1)))
    assert covered == (date(2023, 1, 1), date(2030, 6, 1))
    assert added == [(date(2023, 1, 1), date(2023, 1, 9)), (date(2023, 1, 21), date(2030, 6, 1))]
    assert dates.grow(covered, (date(2023, 5, 1), date(2023, 5, 2))) == (covered, [])
    assert dates.grow(None, None) == (None, [])
