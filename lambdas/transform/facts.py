"""Fact builders: every observed source version becomes one fact row.

Pure, row-wise functions on Arrow tables, so a large batch is transformed part by part.
"""

from __future__ import annotations

import pyarrow as pa

from lambdas.transform.columns import keep_first_version, money, require, split_timestamp, text_date


def _versioned(
    source: pa.Table, source_name: str, key: str, target: str, needed: list[str]
) -> tuple[pa.Table, dict[str, pa.ChunkedArray]]:
    """The distinct versions of the rows, and the version columns every fact starts with."""
    require(source, source_name, [key, "created_at", "last_updated", *needed], target)
    source = keep_first_version(source, key)
    created_date, created_time = split_timestamp(source, "created_at")
    updated_date, updated_time = split_timestamp(source, "last_updated")
    return source, {
        key: source[key],
        "created_date": created_date,
        "created_time": created_time,
        "last_updated_date": updated_date,
        "last_updated_time": updated_time,
    }


def fact_sales_order(sales_order: pa.Table) -> pa.Table:
    needed = ["staff_id", "counterparty_id", "units_sold", "unit_price", "currency_id", "design_id",
              "agreed_payment_date", "agreed_delivery_date", "agreed_delivery_location_id"]  # fmt: skip
    src, version = _versioned(sales_order, "sales_order", "sales_order_id", "fact_sales_order", needed)
    return pa.table(
        {
            **version,
            "sales_staff_id": src["staff_id"],
            "counterparty_id": src["counterparty_id"],
            "units_sold": src["units_sold"],
            "unit_price": money(src, "sales_order", "unit_price"),
            "currency_id": src["currency_id"],
            "design_id": src["design_id"],
            "agreed_payment_date": text_date(src, "sales_order", "agreed_payment_date"),
            "agreed_delivery_date": text_date(src, "sales_order", "agreed_delivery_date"),
            "agreed_delivery_location_id": src["agreed_delivery_location_id"],
        }
    )


def fact_purchase_order(purchase_order: pa.Table) -> pa.Table:
    needed = ["staff_id", "counterparty_id", "item_code", "item_quantity", "item_unit_price", "currency_id",
              "agreed_delivery_date", "agreed_payment_date", "agreed_delivery_location_id"]  # fmt: skip
    src, version = _versioned(purchase_order, "purchase_order", "purchase_order_id", "fact_purchase_order", needed)
    return pa.table(
        {
            **version,
            "staff_id": src["staff_id"],
            "counterparty_id": src["counterparty_id"],
            "item_code": src["item_code"],
            "item_quantity": src["item_quantity"],
            "item_unit_price": money(src, "purchase_order", "item_unit_price"),
            "currency_id": src["currency_id"],
            "agreed_delivery_date": text_date(src, "purchase_order", "agreed_delivery_date"),
            "agreed_payment_date": text_date(src, "purchase_order", "agreed_payment_date"),
            "agreed_delivery_location_id": src["agreed_delivery_location_id"],
        }
    )


def fact_payment(payment: pa.Table) -> pa.Table:
    needed = ["transaction_id", "counterparty_id", "payment_amount", "currency_id", "payment_type_id", "paid",
              "payment_date"]  # fmt: skip
    src, version = _versioned(payment, "payment", "payment_id", "fact_payment", needed)
    return pa.table(
        {
            **version,
            "transaction_id": src["transaction_id"],
            "counterparty_id": src["counterparty_id"],
            "payment_amount": money(src, "payment", "payment_amount"),
            "currency_id": src["currency_id"],
            "payment_type_id": src["payment_type_id"],
            "paid": src["paid"],
            "payment_date": text_date(src, "payment", "payment_date"),
        }
    )


# The date columns each fact source contributes to dim_date, as (column, is_text).
FACT_DATES: dict[str, list[tuple[str, bool]]] = {
    "sales_order": [("created_at", False), ("last_updated", False),
                    ("agreed_payment_date", True), ("agreed_delivery_date", True)],
    "purchase_order": [("created_at", False), ("last_updated", False),
                       ("agreed_payment_date", True), ("agreed_delivery_date", True)],
    "payment": [("created_at", False), ("last_updated", False), ("payment_date", True)],
}  # fmt: skip


def referenced_dates(source: pa.Table, source_name: str) -> list[pa.ChunkedArray]:
    """Every date a fact built from these rows will reference (so dim_date can cover it)."""
    columns = FACT_DATES[source_name]
    require(source, source_name, [c for c, _ in columns], "dim_date")
    return [
        text_date(source, source_name, column) if is_text else split_timestamp(source, column)[0]
        for column, is_text in columns
    ]
