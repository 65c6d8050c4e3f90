"""A held fact row keeps every text value exactly: nothing that reads like NULL becomes NULL.

The held rows are taken from the Arrow parts the load staged, never parsed back from text, and a held set
written by an earlier release (format 1, read back through CSV with the reader's default null markers) is
made exact from the processed log when it is first read.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lambdas.common import keys
from lambdas.load import held
from statemachine.local import runner
from tests.conftest import Databases, as_admin
from tests.test_held_facts import differences, grant, load_result, revoke

# Every text the source's varchar allows that a reader could take for NULL or mangle (PostgreSQL text holds no NUL).
AWKWARD_ITEM_CODES = [
    "", " ", "  \t ", "NA", "N/A", "n/a", "#N/A", "nan", "NaN", "-nan", "NULL", "null", "Null", "\\N", "None",
    "1.#IND", "true", "f", "0", '"quoted"', "'single'", "a,b", "a;b", "line one\nline two", "cr\r\nlf", "\r",
    "back\\slash\\", "\\", "Zoë Ångström €", "日本語", "emoji 🙂", "x" * 100_000,
]  # fmt: skip
FACT = "fact_purchase_order"


def hold_awkward_orders(db: Databases) -> list[int]:
    """Purchase orders with every awkward item_code, all by a staff member the warehouse cannot have yet."""
    staff = as_admin(db, "INSERT INTO staff (first_name, last_name, department_id, email_address) "
                         "SELECT 'New', 'Starter', min(department_id), 'new@example.com' FROM department "
                         "RETURNING staff_id")[0][0]  # fmt: skip
    orders = []
    for n, code in enumerate(AWKWARD_ITEM_CODES, start=1):  # one bound parameter each: an array literal has a NULL
        orders += as_admin(
            db,
            "INSERT INTO purchase_order (staff_id, counterparty_id, item_code, item_quantity, item_unit_price, "
            "currency_id, agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id) "
            "SELECT :staff, counterparty_id, CAST(:code AS text), 1, 2.5, currency_id, agreed_delivery_date, "
            "agreed_payment_date, agreed_delivery_location_id FROM purchase_order WHERE purchase_order_id = :n "
            "RETURNING purchase_order_id",
            staff=staff,
            code=code,
            n=n,
        )
    revoke(db, "staff")
    return [r[0] for r in orders]


def warehouse_codes(db: Databases, orders: list[int]) -> list[Any]:
    rows = db.warehouse_sql(f"SELECT purchase_order_id, item_code FROM {FACT} WHERE purchase_order_id = ANY(:o) "
                            "ORDER BY purchase_order_id", o=orders)  # fmt: skip
    return [code for _, code in rows]


def head_path(db: Databases) -> Any:
    return db.lake / runner.PROCESSED_BUCKET / keys.head_key("load", FACT)


def test_held_rows_keep_every_awkward_text_value_through_hold_and_release(reader: Databases) -> None:
    assert reader.run().succeeded
    orders = hold_awkward_orders(reader)

    holding = reader.run()

    assert load_result(holding, FACT)["rows_held"] == len(AWKWARD_ITEM_CODES)
    assert warehouse_codes(reader, orders) == []
    entry = json.loads(head_path(reader).read_text())["held"]
    assert entry["format"] == held.FORMAT
    kept = pq.read_table(reader.lake / runner.PROCESSED_BUCKET / entry["key"])
    assert kept.sort_by("purchase_order_id")["item_code"].to_pylist() == AWKWARD_ITEM_CODES

    again = reader.run()  # a load that stages the held set again and holds it again keeps it exact
    assert load_result(again, FACT)["rows_held"] == len(AWKWARD_ITEM_CODES)

    grant(reader, "staff")
    released = reader.run(tables=["staff"])

    assert released.succeeded, released.cause
    assert load_result(released, FACT)["rows_released"] == len(AWKWARD_ITEM_CODES)
    assert warehouse_codes(reader, orders) == AWKWARD_ITEM_CODES
    assert differences(reader) == {}


# What the earlier release's CSV reader (pyarrow's default null markers) read as NULL.
_FORMAT_1_NULLS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                   "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]  # fmt: skip


def as_format_1(db: Databases) -> int:
    """Rewrite the committed held set as the earlier release wrote it: those texts NULL, no format in the head."""
    head = json.loads(head_path(db).read_text())
    path = db.lake / runner.PROCESSED_BUCKET / head["held"]["key"]
    kept = pq.read_table(path)
    lost = pc.is_in(kept["item_code"], value_set=pa.array(_FORMAT_1_NULLS))
    codes = pc.if_else(lost, pa.scalar(None, pa.string()), kept["item_code"])
    pq.write_table(kept.set_column(kept.schema.get_field_index("item_code"), "item_code", codes), path)
    del head["held"]["format"]
    head_path(db).write_text(json.dumps(head))
    return pc.sum(lost).as_py()


def test_a_held_set_written_by_the_earlier_release_is_made_exact_from_the_processed_log(reader: Databases) -> None:
    assert reader.run().succeeded
    orders = hold_awkward_orders(reader)
    assert load_result(reader.run(), FACT)["rows_held"] == len(AWKWARD_ITEM_CODES)
    assert as_format_1(reader) >= 10, "the earlier release's held set lost these texts"

    still_held = reader.run()  # the staff row is still missing: the migrated set is written in the new format

    assert load_result(still_held, FACT)["rows_held"] == len(AWKWARD_ITEM_CODES)
    entry = json.loads(head_path(reader).read_text())["held"]
    assert entry["format"] == held.FORMAT
    kept = pq.read_table(reader.lake / runner.PROCESSED_BUCKET / entry["key"]).sort_by("purchase_order_id")
    assert kept["item_code"].to_pylist() == AWKWARD_ITEM_CODES

    grant(reader, "staff")
    released = reader.run(tables=["staff"])

    assert released.succeeded, released.cause
    assert warehouse_codes(reader, orders) == AWKWARD_ITEM_CODES
    assert differences(reader) == {}


def test_a_format_1_held_set_keeps_its_reasons_and_times_and_names_what_the_log_no_longer_has() -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    previous = pa.table({
        "purchase_order_id": pa.array([1, 2, 3], pa.int32()),
        "item_code": ["kept", None, None],
        held.REASON: ["staff_id=9 not in dim_staff"] * 3,
        held.SINCE: pa.array([since] * 3, pa.timestamp("us", tz="UTC")),
    })  # fmt: skip
    log = [pa.table({"purchase_order_id": pa.array([2, 7], pa.int32()), "item_code": ["NA", "other"]}),
           pa.table({"purchase_order_id": pa.array([2], pa.int32()), "item_code": ["NULL"]})]  # fmt: skip

    migrated = held.migrate(previous, ["purchase_order_id"], lambda: log)

    assert migrated.held.to_pylist() == [
        {"purchase_order_id": 1, "item_code": "kept", held.REASON: "staff_id=9 not in dim_staff", held.SINCE: since},
        {"purchase_order_id": 2, "item_code": "NULL", held.REASON: "staff_id=9 not in dim_staff", held.SINCE: since},
    ]
    assert migrated.lost["purchase_order_id"].to_pylist() == [3]
    assert migrated.restored == 1
