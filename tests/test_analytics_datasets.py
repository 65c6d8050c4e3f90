"""The data sets people look at (analytics/datasets.py), on a hand-built warehouse against hand-computed totals."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from analytics.datasets import BY_NAME, DATA_SETS, fetch
from lambdas.load.schema import ensure_schema
from tests import analytics_warehouse


@pytest.fixture
def warehouse(databases):
    con = databases.warehouse_con()
    analytics_warehouse.build(con)
    yield con
    con.close()


@pytest.mark.parametrize("name", sorted(analytics_warehouse.EXPECTED))
def test_each_data_set_equals_the_totals_worked_out_by_hand(warehouse, name):
    assert fetch(warehouse, BY_NAME[name]) == analytics_warehouse.EXPECTED[name]


def test_a_changed_order_counts_once_at_its_latest_version(warehouse):
    units = {row["design"]: row for row in fetch(warehouse, BY_NAME["top_designs"])}
    # Order 4 was 100 units of Wooden before it changed to 1 unit; order 1 moved from Wooden to Steel.
    assert units["Wooden #1"]["units_sold"] == 6
    assert units["Wooden #1"]["orders"] == 2
    assert units["Wooden #3"]["units_sold"] == 7, "two designs sharing a name are not added together"
    total_units = sum(row["units_sold"] for row in fetch(warehouse, BY_NAME["sales_by_month"]))
    assert total_units == 4 + 5 + 7 + 1


def test_money_is_never_added_across_currencies(warehouse):
    for data_set in DATA_SETS:
        money = [c.name for c in data_set.columns if c.type == "DECIMAL" and c.name != "age_hours"]
        if money:
            assert "currency_code" in data_set.column_names, f"{data_set.name} totals money without its currency"


def test_deliveries_to_a_location_without_a_district_are_counted(warehouse):
    rows = fetch(warehouse, BY_NAME["sales_by_delivery_city"])
    assert {(row["city"], row["currency_code"]) for row in rows} >= {("London", "GBP"), ("Paris", "GBP")}


def test_freshness_gives_the_newest_version_of_each_fact_and_its_age(warehouse):
    before = datetime.now(UTC).replace(tzinfo=None)
    rows = fetch(warehouse, BY_NAME["freshness"])
    after = datetime.now(UTC).replace(tzinfo=None)

    assert {row["fact_table"]: row["newest_update"] for row in rows} == analytics_warehouse.NEWEST
    for row in rows:
        low = (before - row["newest_update"]).total_seconds() / 3600
        high = (after - row["newest_update"]).total_seconds() / 3600
        assert Decimal(str(round(low, 2))) - Decimal("0.01") <= row["age_hours"] <= Decimal(str(round(high, 2)))


def test_the_data_sets_return_exactly_their_declared_columns_on_an_empty_warehouse(databases):
    con = databases.warehouse_con()
    try:
        ensure_schema(con)
        for data_set in DATA_SETS:
            assert fetch(con, data_set) == []
    finally:
        con.close()


def as_tuples(rows: list[dict], columns: tuple[str, ...]) -> list[tuple]:
    return sorted(tuple(row[c] for c in columns) for row in rows)


# The same totals computed from totesys itself, which holds only the current state of each order and payment:
# independent of the warehouse, its history and the data sets' SQL.
SOURCE_TOTALS = {
    "sales_by_delivery_city": """
        SELECT a.country, a.city, c.currency_code, sum(s.units_sold * s.unit_price), sum(s.units_sold)
        FROM sales_order s JOIN address a ON a.address_id = s.agreed_delivery_location_id
        JOIN currency c USING (currency_id) GROUP BY 1, 2, 3""",
    "sales_by_staff": """
        SELECT d.department_name, st.first_name || ' ' || st.last_name, c.currency_code,
               sum(s.units_sold * s.unit_price), sum(s.units_sold)
        FROM sales_order s JOIN staff st ON st.staff_id = s.staff_id JOIN department d USING (department_id)
        JOIN currency c USING (currency_id) GROUP BY st.staff_id, 1, 2, 3""",
    "purchases_by_supplier": """
        SELECT cp.counterparty_legal_name, c.currency_code, sum(p.item_quantity * p.item_unit_price), count(*)
        FROM purchase_order p JOIN counterparty cp USING (counterparty_id) JOIN currency c USING (currency_id)
        GROUP BY cp.counterparty_id, 1, 2""",
    "payments_by_type": """
        SELECT t.payment_type_name, c.currency_code, count(*), sum(p.payment_amount),
               coalesce(sum(p.payment_amount) FILTER (WHERE p.paid), 0)
        FROM payment p JOIN payment_type t USING (payment_type_id) JOIN currency c USING (currency_id)
        GROUP BY 1, 2""",
}


def test_after_orders_and_payments_change_the_data_sets_equal_the_sources_current_totals(databases):
    sample = databases.seed(scale=0.05)
    assert sample.run().succeeded
    sample.source_sql(
        "UPDATE sales_order SET units_sold = units_sold + 5, unit_price = unit_price + 1, "
        "currency_id = (SELECT min(currency_id) FROM currency), last_updated = now() WHERE sales_order_id % 7 = 0"
    )
    sample.source_sql(
        "UPDATE purchase_order SET item_quantity = item_quantity * 2, last_updated = now() "
        "WHERE purchase_order_id % 3 = 0"
    )
    sample.source_sql(
        "UPDATE payment SET payment_amount = payment_amount + 10, paid = NOT paid, last_updated = now() "
        "WHERE payment_id % 5 = 0"
    )
    assert sample.run().succeeded
    for fact in ("fact_sales_order", "fact_purchase_order", "fact_payment"):
        versions, ids = sample.warehouse_sql(f"SELECT count(*), count(DISTINCT {fact.removeprefix('fact_')}_id) "
                                             f"FROM {fact}")[0]  # fmt: skip
        assert versions > ids, f"{fact} holds history, which the data sets must not count twice"

    con = sample.warehouse_con()
    try:
        got = {name: fetch(con, BY_NAME[name]) for name in BY_NAME}
    finally:
        con.close()
    for name, sql in SOURCE_TOTALS.items():
        assert as_tuples(got[name], BY_NAME[name].column_names) == sorted(map(tuple, sample.source_sql(sql))), name

    by_currency = sorted(map(tuple, sample.source_sql(
        "SELECT c.currency_code, sum(units_sold * unit_price), sum(units_sold) FROM sales_order "
        "JOIN currency c USING (currency_id) GROUP BY 1")))  # fmt: skip
    monthly: dict[str, list] = {}
    for row in got["sales_by_month"]:
        totals = monthly.setdefault(row["currency_code"], [Decimal(0), 0])
        totals[0] += row["sales_value"]
        totals[1] += row["units_sold"]
    assert sorted((code, value, units) for code, (value, units) in monthly.items()) == by_currency

    units_by_design = dict(map(tuple, sample.source_sql(
        "SELECT design_id, sum(units_sold) FROM sales_order GROUP BY 1")))  # fmt: skip
    top = sorted(units_by_design.items(), key=lambda item: (-item[1], item[0]))[:20]
    assert [(row["design_id"], row["units_sold"]) for row in got["top_designs"]] == top
