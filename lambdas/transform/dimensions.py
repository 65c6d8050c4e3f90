"""Dimension builders: source rows (already reduced to their latest version) to warehouse rows.

Pure functions on Arrow tables. The joined dimensions receive the current state of both sides and the
ids that changed on each side, because a change to a department must reach every staff member in it.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from lambdas.common.errors import PipelineError
from lambdas.transform.columns import require
from lambdas.transform.currency import currency_name

ADDRESS_COLUMNS = ["address_line_1", "address_line_2", "district", "city", "postal_code", "country", "phone"]


def _copy(source: pa.Table, source_name: str, target: str, columns: dict[str, str]) -> pa.Table:
    """Select and rename columns ({warehouse column: source column})."""
    require(source, source_name, list(columns.values()), target)
    return pa.table({out: source[src] for out, src in columns.items()})


def dim_location(address: pa.Table) -> pa.Table:
    return _copy(address, "address", "dim_location", {"location_id": "address_id", **{c: c for c in ADDRESS_COLUMNS}})


def dim_design(design: pa.Table) -> pa.Table:
    columns = ["design_id", "design_name", "file_location", "file_name"]
    return _copy(design, "design", "dim_design", {c: c for c in columns})


def dim_payment_type(payment_type: pa.Table) -> pa.Table:
    columns = ["payment_type_id", "payment_type_name"]
    return _copy(payment_type, "payment_type", "dim_payment_type", {c: c for c in columns})


def dim_transaction(transaction: pa.Table) -> pa.Table:
    columns = ["transaction_id", "transaction_type", "sales_order_id", "purchase_order_id"]
    return _copy(transaction, "transaction", "dim_transaction", {c: c for c in columns})


def dim_currency(currency: pa.Table) -> pa.Table:
    table = _copy(
        currency, "currency", "dim_currency", {"currency_id": "currency_id", "currency_code": "currency_code"}
    )
    names = [currency_name(code) for code in table["currency_code"].to_pylist()]
    return table.append_column("currency_name", pa.array(names, pa.string()))


def _affected(table: pa.Table, own_key: str, changed_own: pa.Array, link: str, changed_linked: pa.Array) -> pa.Table:
    """Rows that changed themselves or whose linked row changed."""
    mask = pc.or_(pc.is_in(table[own_key], changed_own), pc.is_in(table[link], changed_linked))
    return table.filter(mask)


def _join_or_fail(left: pa.Table, right: pa.Table, left_key: str, right_key: str, what: str) -> pa.Table:
    joined = left.join(right, keys=left_key, right_keys=right_key, join_type="left outer", use_threads=False)
    orphans = joined.filter(pc.invert(pc.is_in(joined[left_key], right[right_key])))
    if orphans.num_rows:
        raise PipelineError(f"{what}: {left_key} {orphans[left_key][0].as_py()} has not been extracted yet")
    return joined


def dim_staff(
    staff: pa.Table, department: pa.Table, changed_staff: pa.Array, changed_departments: pa.Array
) -> pa.Table:
    require(staff, "staff", ["staff_id", "first_name", "last_name", "department_id", "email_address"], "dim_staff")
    require(department, "department", ["department_id", "department_name", "location"], "dim_staff")
    rows = _affected(staff, "staff_id", changed_staff, "department_id", changed_departments)
    departments = department.select(["department_id", "department_name", "location"])
    joined = _join_or_fail(
        rows.select(["staff_id", "first_name", "last_name", "department_id", "email_address"]),
        departments, "department_id", "department_id", "staff",
    )  # fmt: skip
    joined = joined.sort_by("staff_id")
    return joined.select(["staff_id", "first_name", "last_name", "department_name", "location", "email_address"])


def dim_counterparty(
    counterparty: pa.Table, address: pa.Table, changed_counterparties: pa.Array, changed_addresses: pa.Array
) -> pa.Table:
    require(counterparty, "counterparty", ["counterparty_id", "counterparty_legal_name", "legal_address_id"],
            "dim_counterparty")  # fmt: skip
    require(address, "address", ["address_id", *ADDRESS_COLUMNS], "dim_counterparty")
    rows = _affected(counterparty, "counterparty_id", changed_counterparties, "legal_address_id", changed_addresses)
    legal = address.select(["address_id", *ADDRESS_COLUMNS]).rename_columns(
        ["address_id", *[f"counterparty_legal_{c}" for c in ADDRESS_COLUMNS[:-1]], "counterparty_legal_phone_number"]
    )
    joined = _join_or_fail(
        rows.select(["counterparty_id", "counterparty_legal_name", "legal_address_id"]),
        legal, "legal_address_id", "address_id", "counterparty",
    )  # fmt: skip
    joined = joined.sort_by("counterparty_id")
    return joined.select(
        ["counterparty_id", "counterparty_legal_name"]
        + [f"counterparty_legal_{c}" for c in ADDRESS_COLUMNS[:-1]]
        + ["counterparty_legal_phone_number"]
    )
