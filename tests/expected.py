"""The warehouse as it should be, computed independently from the source with SQL.

These queries restate the lineage of the README given with the contracts directly in SQL against totesys;
they never call the project's transforms, so a test that compares them with the warehouse checks the pipeline
rather than repeating it. Facts are compared on the current version of each source row.
"""

from __future__ import annotations

from typing import Any

import pg8000.native

ISO_NAMES = (
    "CASE upper(currency_code) WHEN 'GBP' THEN 'Pound Sterling' WHEN 'USD' THEN 'US Dollar' "
    "WHEN 'EUR' THEN 'Euro' WHEN 'JPY' THEN 'Yen' WHEN 'CHF' THEN 'Swiss Franc' ELSE currency_code END"
)

SOURCE: dict[str, str] = {
    "dim_location": "SELECT address_id, address_line_1, address_line_2, district, city, postal_code, country, phone "
                    "FROM address ORDER BY 1",
    "dim_staff": "SELECT s.staff_id, s.first_name, s.last_name, d.department_name, d.location, s.email_address "
                 "FROM staff s JOIN department d ON d.department_id = s.department_id ORDER BY 1",
    "dim_counterparty": "SELECT c.counterparty_id, c.counterparty_legal_name, a.address_line_1, a.address_line_2, "
                        "a.district, a.city, a.postal_code, a.country, a.phone FROM counterparty c "
                        "JOIN address a ON a.address_id = c.legal_address_id ORDER BY 1",
    "dim_currency": f"SELECT currency_id, currency_code, {ISO_NAMES} FROM currency ORDER BY 1",
    "dim_design": "SELECT design_id, design_name, file_location, file_name FROM design ORDER BY 1",
    "dim_payment_type": "SELECT payment_type_id, payment_type_name FROM payment_type ORDER BY 1",
    "dim_transaction": "SELECT transaction_id, transaction_type, sales_order_id, purchase_order_id "
                       "FROM transaction ORDER BY 1",
    "fact_sales_order": "SELECT sales_order_id, created_at::date, created_at::time, last_updated::date, "
                        "last_updated::time, staff_id, counterparty_id, units_sold, unit_price::numeric(10,2), "
                        "currency_id, design_id, agreed_payment_date::date, agreed_delivery_date::date, "
                        "agreed_delivery_location_id FROM sales_order ORDER BY 1",
    "fact_purchase_order": "SELECT purchase_order_id, created_at::date, created_at::time, last_updated::date, "
                           "last_updated::time, staff_id, counterparty_id, item_code, item_quantity, "
                           "item_unit_price::numeric(10,2), currency_id, agreed_delivery_date::date, "
                           "agreed_payment_date::date, agreed_delivery_location_id FROM purchase_order ORDER BY 1",
    "fact_payment": "SELECT payment_id, created_at::date, created_at::time, last_updated::date, last_updated::time, "
                    "transaction_id, counterparty_id, payment_amount::numeric(10,2), currency_id, payment_type_id, "
                    "paid, payment_date::date FROM payment ORDER BY 1",
    "dim_date": """
        WITH referenced AS (
            SELECT created_at::date AS d FROM sales_order UNION SELECT last_updated::date FROM sales_order
            UNION SELECT agreed_payment_date::date FROM sales_order
            UNION SELECT agreed_delivery_date::date FROM sales_order
            UNION SELECT created_at::date FROM purchase_order UNION SELECT last_updated::date FROM purchase_order
            UNION SELECT agreed_payment_date::date FROM purchase_order
            UNION SELECT agreed_delivery_date::date FROM purchase_order
            UNION SELECT created_at::date FROM payment UNION SELECT last_updated::date FROM payment
            UNION SELECT payment_date::date FROM payment
        )
        SELECT d::date, extract(year FROM d)::int, extract(month FROM d)::int, extract(day FROM d)::int,
               extract(isodow FROM d)::int, to_char(d, 'FMDay'), to_char(d, 'FMMonth'), extract(quarter FROM d)::int
        FROM generate_series((SELECT min(d) FROM referenced), (SELECT max(d) FROM referenced), interval '1 day') d
        ORDER BY 1
    """,
}  # fmt: skip

# The warehouse side, facts reduced to the latest version of each source row.
_LATEST = (
    "SELECT DISTINCT ON ({key}) {cols} FROM {table} ORDER BY {key}, last_updated_date DESC, last_updated_time DESC"
)
WAREHOUSE: dict[str, str] = {
    "dim_location": "SELECT * FROM dim_location ORDER BY 1",
    "dim_staff": "SELECT * FROM dim_staff ORDER BY 1",
    "dim_counterparty": "SELECT * FROM dim_counterparty ORDER BY 1",
    "dim_currency": "SELECT * FROM dim_currency ORDER BY 1",
    "dim_design": "SELECT * FROM dim_design ORDER BY 1",
    "dim_payment_type": "SELECT * FROM dim_payment_type ORDER BY 1",
    "dim_transaction": "SELECT * FROM dim_transaction ORDER BY 1",
    "dim_date": "SELECT * FROM dim_date ORDER BY 1",
    "fact_sales_order": _LATEST.format(
        key="sales_order_id", table="fact_sales_order",
        cols="sales_order_id, created_date, created_time, last_updated_date, last_updated_time, sales_staff_id, "
             "counterparty_id, units_sold, unit_price, currency_id, design_id, agreed_payment_date, "
             "agreed_delivery_date, agreed_delivery_location_id"),
    "fact_purchase_order": _LATEST.format(
        key="purchase_order_id", table="fact_purchase_order",
        cols="purchase_order_id, created_date, created_time, last_updated_date, last_updated_time, staff_id, "
             "counterparty_id, item_code, item_quantity, item_unit_price, currency_id, agreed_delivery_date, "
             "agreed_payment_date, agreed_delivery_location_id"),
    "fact_payment": _LATEST.format(
        key="payment_id", table="fact_payment",
        cols="payment_id, created_date, created_time, last_updated_date, last_updated_time, transaction_id, "
             "counterparty_id, payment_amount, currency_id, payment_type_id, paid, payment_date"),
}  # fmt: skip


def differences(source: pg8000.native.Connection, warehouse: pg8000.native.Connection) -> dict[str, Any]:
    """Per warehouse table, the rows only in the expectation and the rows only in the warehouse."""
    found: dict[str, Any] = {}
    for table, query in SOURCE.items():
        expected = [tuple(r) for r in source.run(query)]
        actual = [tuple(r) for r in warehouse.run(WAREHOUSE[table])]
        if expected != actual:
            missing = [r for r in expected if r not in set(actual)][:3]
            extra = [r for r in actual if r not in set(expected)][:3]
            found[table] = {"expected": len(expected), "actual": len(actual), "missing": missing, "extra": extra}
    return found
