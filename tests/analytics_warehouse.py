"""A tiny warehouse written by hand, and the totals of every data set worked out by hand from it.

Awkward on purpose: two currencies, two designs sharing a name, locations and a counterparty with a NULL district,
and orders and payments with several versions (one whose newer version has a later date but an earlier time of
day). Only the latest version of each counts: the comments give the latest state that every expected total below
is summed from.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pg8000.native

from lambdas.load.schema import ensure_schema

D = Decimal

DIMENSIONS_SQL = (
    """INSERT INTO dim_date
       SELECT d, extract(year FROM d), extract(month FROM d), extract(day FROM d), extract(isodow FROM d),
              trim(to_char(d, 'Day')), trim(to_char(d, 'Month')), extract(quarter FROM d)
       FROM generate_series(date '2025-12-01', date '2026-03-31', interval '1 day') AS g(d)""",
    """INSERT INTO dim_staff VALUES
       (1, 'Ann', 'Lee', 'Sales', 'Leeds', 'ann@example.com'),
       (2, 'Bob', 'Ray', 'Sales', 'Leeds', 'bob@example.com'),
       (3, 'Cy', 'Dee', 'Finance', NULL, 'cy@example.com')""",
    """INSERT INTO dim_location VALUES
       (1, '1 High St', NULL, NULL, 'London', 'E1 1AA', 'United Kingdom', '0200'),
       (2, '2 Low St', NULL, 'West Yorkshire', 'Leeds', 'LS1 1AA', 'United Kingdom', '0113'),
       (3, '3 Rue', NULL, NULL, 'Paris', '75001', 'France', '0033')""",
    "INSERT INTO dim_currency VALUES (1, 'GBP', 'British pound'), (2, 'EUR', 'Euro')",
    """INSERT INTO dim_design VALUES
       (1, 'Wooden', '/w', 'w.json'), (2, 'Steel', '/s', 's.json'), (3, 'Wooden', '/w', 'w2.json')""",
    """INSERT INTO dim_counterparty VALUES
       (1, 'Acme Ltd', '1 High St', NULL, NULL, 'London', 'E1 1AA', 'United Kingdom', '0200'),
       (2, 'Globex', '3 Rue', NULL, NULL, 'Paris', '75001', 'France', '0033')""",
    "INSERT INTO dim_payment_type VALUES (1, 'SALES_RECEIPT'), (2, 'PURCHASE_PAYMENT')",
    "INSERT INTO dim_transaction VALUES (1, 'SALE', 1, NULL), (2, 'PURCHASE', NULL, 1), (3, 'PURCHASE', NULL, 2)",
)

SALES = (
    # id, created, last updated (date, time), staff, units, price, currency, design, delivery location
    # order 1 changed: latest = Bob, 4 x 3.00 GBP of Steel to Paris, created in January
    (1, "2026-01-05", "2026-01-05", "10:00", 1, 10, "2.50", 1, 1, 1),
    (1, "2026-01-05", "2026-02-01", "09:00", 2, 4, "3.00", 1, 2, 3),
    # order 2: Ann, 5 x 10.00 EUR of Wooden to London, January
    (2, "2026-01-20", "2026-01-20", "12:00", 1, 5, "10.00", 2, 1, 1),
    # order 3: Cy, 7 x 1.25 GBP of the other Wooden (design 3, same name) to Leeds (a district), February
    (3, "2026-02-03", "2026-02-03", "08:00", 3, 7, "1.25", 1, 3, 2),
    # order 4 changed across midnight: latest = Ann, 1 x 100.00 GBP of Wooden to London, February
    (4, "2026-02-10", "2026-02-10", "23:00", 1, 100, "1.00", 1, 1, 1),
    (4, "2026-02-10", "2026-02-11", "01:00", 1, 1, "100.00", 1, 1, 1),
)

PURCHASES = (
    # id, last updated (date, time), supplier, quantity, price, currency
    # purchase 1 changed: latest = Acme, 20 x 5.00 GBP
    (1, "2026-01-06", "10:00", 1, 10, "5.00", 1),
    (1, "2026-01-07", "10:00", 1, 20, "5.00", 1),
    (2, "2026-01-08", "10:00", 2, 3, "7.50", 2),
    (3, "2026-03-02", "16:45", 1, 1, "0.99", 1),
)

PAYMENTS = (
    # id, last updated (date, time), transaction, amount, currency, type, paid
    # payment 1 changed: latest = paid
    (1, "2026-01-10", "10:00", 1, "12.00", 1, 1, False),
    (1, "2026-01-11", "10:00", 1, "12.00", 1, 1, True),
    (2, "2026-01-21", "10:00", 1, "50.00", 2, 1, False),
    (3, "2026-01-12", "10:00", 2, "100.99", 1, 2, True),
    # payment 4 changed: latest amount 22.50, unpaid
    (4, "2026-01-09", "10:00", 3, "20.00", 2, 2, False),
    (4, "2026-03-05", "07:15", 3, "22.50", 2, 2, False),
)

EXPECTED: dict[str, list[dict]] = {
    "sales_by_month": [
        {"month": datetime(2026, 1, 1), "currency_code": "EUR", "sales_value": D("50.00"), "units_sold": 5},
        {"month": datetime(2026, 1, 1), "currency_code": "GBP", "sales_value": D("12.00"), "units_sold": 4},
        # 7 x 1.25 + 1 x 100.00
        {"month": datetime(2026, 2, 1), "currency_code": "GBP", "sales_value": D("108.75"), "units_sold": 8},
    ],
    "sales_by_delivery_city": [
        {"country": "France", "city": "Paris", "currency_code": "GBP", "sales_value": D("12.00"), "units_sold": 4},
        {"country": "United Kingdom", "city": "Leeds", "currency_code": "GBP", "sales_value": D("8.75"),
         "units_sold": 7},
        {"country": "United Kingdom", "city": "London", "currency_code": "EUR", "sales_value": D("50.00"),
         "units_sold": 5},
        {"country": "United Kingdom", "city": "London", "currency_code": "GBP", "sales_value": D("100.00"),
         "units_sold": 1},
    ],
    "top_designs": [
        {"design_id": 3, "design": "Wooden #3", "units_sold": 7, "orders": 1},
        {"design_id": 1, "design": "Wooden #1", "units_sold": 6, "orders": 2},
        {"design_id": 2, "design": "Steel #2", "units_sold": 4, "orders": 1},
    ],
    "sales_by_staff": [
        {"department_name": "Finance", "staff_name": "Cy Dee", "currency_code": "GBP", "sales_value": D("8.75"),
         "units_sold": 7},
        {"department_name": "Sales", "staff_name": "Ann Lee", "currency_code": "EUR", "sales_value": D("50.00"),
         "units_sold": 5},
        {"department_name": "Sales", "staff_name": "Ann Lee", "currency_code": "GBP", "sales_value": D("100.00"),
         "units_sold": 1},
        {"department_name": "Sales", "staff_name": "Bob Ray", "currency_code": "GBP", "sales_value": D("12.00"),
         "units_sold": 4},
    ],
    "purchases_by_supplier": [
        # 20 x 5.00 + 1 x 0.99
        {"supplier": "Acme Ltd", "currency_code": "GBP", "purchase_value": D("100.99"), "purchase_orders": 2},
        {"supplier": "Globex", "currency_code": "EUR", "purchase_value": D("22.50"), "purchase_orders": 1},
    ],
    "payments_by_type": [
        {"payment_type_name": "PURCHASE_PAYMENT", "currency_code": "EUR", "payments": 1,
         "payment_amount": D("22.50"), "paid_amount": D("0")},
        {"payment_type_name": "PURCHASE_PAYMENT", "currency_code": "GBP", "payments": 1,
         "payment_amount": D("100.99"), "paid_amount": D("100.99")},
        {"payment_type_name": "SALES_RECEIPT", "currency_code": "EUR", "payments": 1,
         "payment_amount": D("50.00"), "paid_amount": D("0")},
        {"payment_type_name": "SALES_RECEIPT", "currency_code": "GBP", "payments": 1,
         "payment_amount": D("12.00"), "paid_amount": D("12.00")},
    ],
}  # fmt: skip

# The newest version of each fact, whatever version counts in the totals.
NEWEST: dict[str, datetime] = {
    "fact_payment": datetime(2026, 3, 5, 7, 15),
    "fact_purchase_order": datetime(2026, 3, 2, 16, 45),
    "fact_sales_order": datetime(2026, 2, 11, 1, 0),
}


def build(con: pg8000.native.Connection) -> None:
    """Create the contract's tables in an empty warehouse and fill them with the rows above."""
    ensure_schema(con)
    for statement in DIMENSIONS_SQL:
        con.run(statement)
    for sid, created, date, time, staff, units, price, currency, design, location in SALES:
        con.run(
            "INSERT INTO fact_sales_order (sales_order_id, created_date, created_time, last_updated_date, "
            "last_updated_time, sales_staff_id, counterparty_id, units_sold, unit_price, currency_id, design_id, "
            "agreed_payment_date, agreed_delivery_date, agreed_delivery_location_id) "
            "VALUES (:sid, CAST(:created AS date), '09:00', CAST(:date AS date), CAST(:time AS time), :staff, 1, "
            ":units, CAST(:price AS numeric), :currency, :design, CAST(:created AS date), CAST(:created AS date), "
            ":location)",
            sid=sid, created=created, date=date, time=time, staff=staff, units=units, price=price,
            currency=currency, design=design, location=location,
        )  # fmt: skip
    for pid, date, time, supplier, quantity, price, currency in PURCHASES:
        con.run(
            "INSERT INTO fact_purchase_order (purchase_order_id, created_date, created_time, last_updated_date, "
            "last_updated_time, staff_id, counterparty_id, item_code, item_quantity, item_unit_price, currency_id, "
            "agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id) "
            "VALUES (:pid, '2026-01-06', '09:00', CAST(:date AS date), CAST(:time AS time), 3, :supplier, 'X1', "
            ":quantity, CAST(:price AS numeric), :currency, '2026-01-06', '2026-01-06', 1)",
            pid=pid, date=date, time=time, supplier=supplier, quantity=quantity, price=price, currency=currency,
        )  # fmt: skip
    for pid, date, time, transaction, amount, currency, payment_type, paid in PAYMENTS:
        con.run(
            "INSERT INTO fact_payment (payment_id, created_date, created_time, last_updated_date, last_updated_time, "
            "transaction_id, counterparty_id, payment_amount, currency_id, payment_type_id, paid, payment_date) "
            "VALUES (:pid, '2026-01-09', '09:00', CAST(:date AS date), CAST(:time AS time), :transaction, 1, "
            "CAST(:amount AS numeric), :currency, :payment_type, :paid, '2026-01-09')",
            pid=pid, date=date, time=time, transaction=transaction, amount=amount, currency=currency,
            payment_type=payment_type, paid=paid,
        )  # fmt: skip
