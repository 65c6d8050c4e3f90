"""Small, hand-made totesys databases with the contents that break naive pipelines.

Every insert goes through parameters, so the awkward strings arrive in the source exactly as written here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pg8000.native

from statemachine.local import sample_data

AWKWARD_TEXT = [
    "O'Connor & Sons",
    'The "Quoted" Co',
    "Comma, Separated, Ltd",
    "Line one\nline two",
    "Semi;colon; DROP TABLE staff;--",
    "Back\\slash\\",
    "Zoë Ångström-Øre, Łódź",
    "",
]
T0 = datetime(2023, 3, 1, 9, 30, 15, 123000)


def insert(con: pg8000.native.Connection, table: str, row: dict[str, Any]) -> None:
    names = list(row)
    placeholders = ", ".join(f":{n}" for n in names)
    columns = ", ".join(pg8000.native.identifier(n) for n in names)
    con.run(f"INSERT INTO {pg8000.native.identifier(table)} ({columns}) VALUES ({placeholders})", **row)


def build_awkward(con: pg8000.native.Connection) -> None:
    """Every item of the reference README's "Legal contents that break naive pipelines" that one database can hold."""
    sample_data.create_schema(con)
    stamp = {"created_at": T0, "last_updated": T0}
    for n, text in enumerate(AWKWARD_TEXT, start=1):
        insert(
            con,
            "address",
            {
                "address_id": n,
                "address_line_1": text or "x",
                "address_line_2": None if n % 2 else text,
                "district": "" if n % 3 == 0 else None,
                "city": text,
                "postal_code": "",
                "country": text,
                "phone": f"+44 {n}",
                **stamp,
            },
        )
    insert(
        con,
        "department",
        {"department_id": 1, "department_name": "Sales; 'R&D'", "location": None, "manager": None, **stamp},
    )
    insert(con, "department", {"department_id": 2, "department_name": "", "location": "", "manager": "", **stamp})
    for n, text in enumerate(AWKWARD_TEXT, start=1):
        insert(
            con,
            "staff",
            {
                "staff_id": n,
                "first_name": text,
                "last_name": text[::-1],
                "department_id": 1 + n % 2,
                "email_address": f"user{n}@example.com",
                **stamp,
            },
        )
        insert(
            con,
            "counterparty",
            {
                "counterparty_id": n,
                "counterparty_legal_name": text,
                "legal_address_id": n,
                "commercial_contact": None,
                "delivery_contact": text,
                **stamp,
            },
        )
        insert(
            con,
            "design",
            {"design_id": n, "design_name": text, "file_location": f"/{text}", "file_name": f"{n}.json", **stamp},
        )
    for n, code in enumerate(["GBP", "USD", "EUR", "XYZ"], start=1):
        insert(con, "currency", {"currency_id": n, "currency_code": code, **stamp})
    for n, name in enumerate(["SALES_RECEIPT", "SALES_REFUND", "PURCHASE_PAYMENT", "PURCHASE_REFUND"], start=1):
        insert(con, "payment_type", {"payment_type_id": n, "payment_type_name": name, **stamp})
    prices = ["3", "2.5", "2.99", "0", "99999999.99", "12.10"]
    for n, price in enumerate(prices, start=1):
        # five rows share one last_updated to the millisecond; agreed dates run years ahead
        tied = T0 + timedelta(hours=1) if n <= 5 else T0 + timedelta(hours=2)
        insert(
            con,
            "sales_order",
            {
                "sales_order_id": n,
                "created_at": T0,
                "last_updated": tied,
                "design_id": n,
                "staff_id": n,
                "counterparty_id": n,
                "units_sold": n * 1000,
                "unit_price": price,
                "currency_id": 1 + n % 4,
                "agreed_delivery_date": "2099-12-31" if n == 1 else "2023-03-05",
                "agreed_payment_date": "1999-01-01" if n == 2 else "2023-03-10",
                "agreed_delivery_location_id": n,
            },
        )
        insert(
            con,
            "transaction",
            {"transaction_id": n, "transaction_type": "SALE", "sales_order_id": n, "purchase_order_id": None, **stamp},
        )
        insert(
            con,
            "payment",
            {
                "payment_id": n,
                "transaction_id": n,
                "counterparty_id": n,
                "payment_amount": price,
                "currency_id": 1,
                "payment_type_id": 1 + n % 2,
                "paid": n % 2 == 0,
                "payment_date": "2023-04-01",
                "company_ac_number": 1,
                "counterparty_ac_number": n,
                **stamp,
            },
        )
    # purchase_order stays empty: an empty table must pass through every stage.
    for table in (
        "address",
        "department",
        "staff",
        "counterparty",
        "design",
        "currency",
        "payment_type",
        "sales_order",
        "transaction",
        "payment",
    ):
        ident = pg8000.native.identifier(table)
        con.run(
            f"SELECT setval(pg_get_serial_sequence('{table}', '{table}_id'), (SELECT max({table}_id) FROM {ident}))"
        )
