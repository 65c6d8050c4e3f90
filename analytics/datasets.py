"""What people look at: the data sets over the star schema, defined once for QuickSight and the local dashboard.

Each data set is one read-only SQL query over the tables of ``warehouse.sql``, with the columns it returns typed
as QuickSight types, and the one chart that shows it. ``cdk/quicksight.py`` turns them into QuickSight data sets
and dashboard visuals; ``analytics/dashboard.py`` runs them on a warehouse and draws them with plotly.

Facts keep every observed version of an order or payment (``UNIQUE (id, last_updated_date,
last_updated_time)``), so every query over a fact reads only the latest version of each id: a changed order counts
once, at its latest state. Money is never added across currencies: every monetary total is per currency.
The queries use no bind parameters (QuickSight runs them as given) and name tables only through ``identifier``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pg8000.native

from lambdas.common.db import identifier
from lambdas.common.tables import FACTS

# The column types of QuickSight's custom SQL (InputColumn.Type) that these queries produce.
ColumnType = Literal["STRING", "INTEGER", "DECIMAL", "DATETIME"]

# The business key of each fact: the rows of one key are the versions of one order or payment.
FACT_KEYS: dict[str, str] = {
    "fact_sales_order": "sales_order_id",
    "fact_purchase_order": "purchase_order_id",
    "fact_payment": "payment_id",
}
# S101: import-time check of this module's constants
assert set(FACT_KEYS) == set(FACTS), "every fact of the contract has a business key here"  # noqa: S101


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    label: str = ""  # what a person reads on an axis, a legend or a table header (default: the name, in words)

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()


@dataclass(frozen=True)
class Chart:
    """One bar chart: ``x`` along the axis, ``y`` summed as the bar, ``colour`` (if any) splitting bars."""

    x: str
    y: str
    colour: str | None = None
    horizontal: bool = False


@dataclass(frozen=True)
class DataSet:
    name: str
    title: str
    description: str
    sql: str
    columns: tuple[Column, ...]
    chart: Chart

    def __post_init__(self) -> None:
        names = {column.name for column in self.columns}
        used = {self.chart.x, self.chart.y} | ({self.chart.colour} if self.chart.colour else set())
        if not used <= names:
            raise ValueError(f"{self.name}: the chart uses {sorted(used - names)}, which the query does not return")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def title_of(self, name: str) -> str:
        """The column's name as a person reads it."""
        return next(column.title for column in self.columns if column.name == name)


def latest_versions(fact: str) -> str:
    """A subquery holding the latest observed version of each order/payment of ``fact`` (no history)."""
    key = identifier(FACT_KEYS[fact])
    return (
        # S608: the module's own SQL; table names through identifier()
        f"(SELECT DISTINCT ON ({key}) * FROM {identifier(fact)} "  # noqa: S608
        f"ORDER BY {key}, last_updated_date DESC, last_updated_time DESC)"
    )


def _freshness_sql() -> str:
    """Newest version time of each fact and its age now, in hours; the label is the table's own name."""
    per_fact = "\n    UNION ALL\n    ".join(
        # S608: the module's own SQL; table names through identifier()
        f"SELECT tableoid::regclass::text AS fact_table, max(last_updated_date + last_updated_time) AS newest_update "  # noqa: S608
        f"FROM {identifier(fact)} GROUP BY tableoid"
        for fact in FACTS
    )
    return f"""
SELECT fact_table, newest_update,
       round(EXTRACT(EPOCH FROM (now() AT TIME ZONE 'UTC') - newest_update) / 3600, 2) AS age_hours
FROM (
    {per_fact}
) AS newest
ORDER BY fact_table
"""  # noqa: S608 - the module's own SQL; table names through identifier()


_SALES = latest_versions("fact_sales_order")
_PURCHASES = latest_versions("fact_purchase_order")
_PAYMENTS = latest_versions("fact_payment")
_SALES_VALUE = "sum(s.units_sold * s.unit_price)"

DATA_SETS: tuple[DataSet, ...] = (
    DataSet(
        name="sales_by_month",
        title="Sales by month",
        description="The value of the sales orders created each month, per currency (their units are in the table).",
        sql=f"""
SELECT make_date(d.year, d.month, 1)::timestamp AS month, c.currency_code,
       {_SALES_VALUE} AS sales_value, sum(s.units_sold)::bigint AS units_sold
FROM {_SALES} AS s
JOIN dim_date AS d ON d.date_id = s.created_date
JOIN dim_currency AS c ON c.currency_id = s.currency_id
GROUP BY d.year, d.month, c.currency_code
ORDER BY month, c.currency_code
""",  # noqa: S608 - the module's own SQL; table names through identifier()
        columns=(
            Column("month", "DATETIME", "Month"),
            Column("currency_code", "STRING", "Currency"),
            Column("sales_value", "DECIMAL", "Sales value (in its currency)"),
            Column("units_sold", "INTEGER", "Units sold"),
        ),
        chart=Chart(x="month", y="sales_value", colour="currency_code"),
    ),
    DataSet(
        name="sales_by_delivery_city",
        title="Sales by country and city of delivery",
        description="Units sold by city of delivery, by country (their value per currency is in the table).",
        sql=f"""
SELECT l.country, l.city, c.currency_code,
       {_SALES_VALUE} AS sales_value, sum(s.units_sold)::bigint AS units_sold
FROM {_SALES} AS s
JOIN dim_location AS l ON l.location_id = s.agreed_delivery_location_id
JOIN dim_currency AS c ON c.currency_id = s.currency_id
GROUP BY l.country, l.city, c.currency_code
ORDER BY l.country, l.city, c.currency_code
""",  # noqa: S608 - the module's own SQL; table names through identifier()
        columns=(
            Column("country", "STRING", "Country of delivery"),
            Column("city", "STRING", "City of delivery"),
            Column("currency_code", "STRING", "Currency"),
            Column("sales_value", "DECIMAL", "Sales value (in its currency)"),
            Column("units_sold", "INTEGER", "Units sold"),
        ),
        chart=Chart(x="city", y="units_sold", colour="country", horizontal=True),
    ),
    DataSet(
        name="top_designs",
        title="Top designs",
        description="The twenty designs with the most units sold (name #id; their number of orders is in the table).",
        sql=f"""
SELECT g.design_id, g.design_name || ' #' || g.design_id AS design,
       sum(s.units_sold)::bigint AS units_sold, count(*) AS orders
FROM {_SALES} AS s
JOIN dim_design AS g ON g.design_id = s.design_id
GROUP BY g.design_id, g.design_name
ORDER BY units_sold DESC, g.design_id
LIMIT 20
""",  # noqa: S608 - the module's own SQL; table names through identifier()
        columns=(
            Column("design_id", "INTEGER", "Design id"),
            Column("design", "STRING"),
            Column("units_sold", "INTEGER", "Units sold"),
            Column("orders", "INTEGER", "Orders"),
        ),
        # Several designs share a name: the label carries the id so that they stay apart.
        chart=Chart(x="design", y="units_sold", horizontal=True),
    ),
    DataSet(
        name="sales_by_staff",
        title="Sales by staff and department",
        description="Units sold by each member of staff, by department (their value per currency is in the table).",
        sql=f"""
SELECT st.department_name, st.first_name || ' ' || st.last_name AS staff_name, c.currency_code,
       {_SALES_VALUE} AS sales_value, sum(s.units_sold)::bigint AS units_sold
FROM {_SALES} AS s
JOIN dim_staff AS st ON st.staff_id = s.sales_staff_id
JOIN dim_currency AS c ON c.currency_id = s.currency_id
GROUP BY st.staff_id, st.department_name, st.first_name, st.last_name, c.currency_code
ORDER BY st.department_name, staff_name, c.currency_code
""",  # noqa: S608 - the module's own SQL; table names through identifier()
        columns=(
            Column("department_name", "STRING", "Department"),
            Column("staff_name", "STRING", "Member of staff"),
            Column("currency_code", "STRING", "Currency"),
            Column("sales_value", "DECIMAL", "Sales value (in its currency)"),
            Column("units_sold", "INTEGER", "Units sold"),
        ),
        chart=Chart(x="staff_name", y="units_sold", colour="department_name"),
    ),
    DataSet(
        name="purchases_by_supplier",
        title="Purchases by supplier",
        description="The value of the purchase orders placed with each counterparty, per currency "
        "(their number is in the table).",
        sql=f"""
SELECT cp.counterparty_legal_name AS supplier, c.currency_code,
       sum(p.item_quantity * p.item_unit_price) AS purchase_value, count(*) AS purchase_orders
FROM {_PURCHASES} AS p
JOIN dim_counterparty AS cp ON cp.counterparty_id = p.counterparty_id
JOIN dim_currency AS c ON c.currency_id = p.currency_id
GROUP BY cp.counterparty_id, cp.counterparty_legal_name, c.currency_code
ORDER BY supplier, c.currency_code
""",  # noqa: S608 - the module's own SQL; table names through identifier()
        columns=(
            Column("supplier", "STRING", "Supplier"),
            Column("currency_code", "STRING", "Currency"),
            Column("purchase_value", "DECIMAL", "Purchase value (in its currency)"),
            Column("purchase_orders", "INTEGER", "Purchase orders"),
        ),
        chart=Chart(x="supplier", y="purchase_value", colour="currency_code", horizontal=True),
    ),
    DataSet(
        name="payments_by_type",
        title="Payments by payment type and currency",
        description="The amount of the payments per payment type and currency "
        "(their number and the amount already paid are in the table).",
        sql=f"""
SELECT t.payment_type_name, c.currency_code, count(*) AS payments,
       sum(p.payment_amount) AS payment_amount,
       coalesce(sum(p.payment_amount) FILTER (WHERE p.paid), 0) AS paid_amount
FROM {_PAYMENTS} AS p
JOIN dim_payment_type AS t ON t.payment_type_id = p.payment_type_id
JOIN dim_currency AS c ON c.currency_id = p.currency_id
GROUP BY t.payment_type_name, c.currency_code
ORDER BY t.payment_type_name, c.currency_code
""",  # noqa: S608 - the module's own SQL; table names through identifier()
        columns=(
            Column("payment_type_name", "STRING", "Payment type"),
            Column("currency_code", "STRING", "Currency"),
            Column("payments", "INTEGER", "Payments"),
            Column("payment_amount", "DECIMAL", "Amount (in its currency)"),
            Column("paid_amount", "DECIMAL", "Amount paid (in its currency)"),
        ),
        chart=Chart(x="payment_type_name", y="payment_amount", colour="currency_code"),
    ),
    DataSet(
        name="freshness",
        title="Newest change in the warehouse",
        description="The newest order or payment change each fact table holds, and its age when this was read. It "
        "measures how recent the business's newest activity in the warehouse is, not the pipeline's lag: on the "
        "sample data, whose newest change is years old, it is the sample's age. How far the warehouse is behind "
        "totesys is the stack's WarehouseBehind alarm (docs/deploy.md#what-the-alarms-mean).",
        sql=_freshness_sql(),
        columns=(
            Column("fact_table", "STRING", "Fact table"),
            Column("newest_update", "DATETIME", "Newest change loaded (UTC)"),
            Column("age_hours", "DECIMAL", "Its age when read (hours)"),
        ),
        chart=Chart(x="fact_table", y="age_hours"),
    ),
)

BY_NAME: dict[str, DataSet] = {data_set.name: data_set for data_set in DATA_SETS}


def fetch(con: pg8000.native.Connection, data_set: DataSet) -> list[dict[str, Any]]:
    """The rows of one data set, as column -> value; fails if the query's columns drift from the declared ones."""
    rows = con.run(data_set.sql)
    returned = tuple(column["name"] for column in con.columns or ())
    if returned != data_set.column_names:
        raise ValueError(f"{data_set.name} returns {returned}, but declares {data_set.column_names}")
    return [dict(zip(data_set.column_names, row, strict=True)) for row in rows]
