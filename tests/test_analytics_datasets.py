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
