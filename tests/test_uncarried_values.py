"""Instants the warehouse cannot hold are refused at extract, naming table, key and column; nothing of that read is
kept and the watermark does not move. Once the source row is fixed, the next ordinary run is exact, whatever
last_updated the row is fixed with.

PostgreSQL stores 'infinity', '-infinity', BC dates and years up to 294276 (timestamps); the bulk reader decodes
some of them into numbers that mean nothing, and no later stage could carry the rest. The source's timestamp
columns are created_at and last_updated, in every table (its dates are text, which the transform checks).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from lambdas.common import keys
from lambdas.common.tables import PRIMARY_KEYS, SOURCE_TABLES, TEXT_DATE_COLUMNS
from lambdas.extract.source import UncarriedValues, changed_rows, snapshot, table_columns
from statemachine.local import runner
from tests.conftest import Databases, as_admin

OUTSIDE = ["infinity", "-infinity", "10000-01-01 00:00:00", "294276-12-31 23:59:59", "0001-12-31 23:59:59 BC",
           "4713-01-01 00:00:00 BC"]  # fmt: skip
EDGES = [datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999)]


@pytest.mark.parametrize("value", OUTSIDE)
def test_an_instant_outside_the_years_1_to_9999_refuses_the_read_naming_key_and_column(
    databases: Databases, value: str
) -> None:
    databases.seed(scale=0.01)
    databases.source_sql("UPDATE staff SET created_at = CAST(:v AS timestamp) WHERE staff_id = 3", v=value)
    databases.source_sql("UPDATE staff SET last_updated = CAST(:v AS timestamp) WHERE staff_id IN (5, 7)", v=value)
    con = databases.source_con()
    try:
        reading = changed_rows(con, "staff", table_columns(con, "staff"), None)
        with snapshot(con), reading as rows, pytest.raises(UncarriedValues) as refused:
            list(rows)
    finally:
        con.close()
    assert refused.value.keys == [3, 5, 7]
    named = "staff: staff_id=3 staff.created_at; staff_id=5 staff.last_updated; staff_id=7 staff.last_updated"
    assert str(refused.value).startswith(f"{named}: a value outside the years 1 to 9999")


def test_the_first_and_last_instants_of_years_1_to_9999_are_carried_exactly(databases: Databases) -> None:
    databases.seed(scale=0.01)
    for staff_id, edge in enumerate(EDGES, start=1):
        databases.source_sql("UPDATE staff SET created_at = :v WHERE staff_id = :id", v=edge, id=staff_id)
    con = databases.source_con()
    try:
        with snapshot(con), changed_rows(con, "staff", table_columns(con, "staff"), None) as batches:
            rows = {r["staff_id"]: r["created_at"] for b in batches for r in b.to_pylist()}
    finally:
        con.close()
    assert [rows[1], rows[2]] == EDGES


def bad_row(db: Databases, table: str) -> tuple[int, datetime]:
    key = PRIMARY_KEYS[table]
    return tuple(as_admin(db, f"SELECT {key}, last_updated FROM {table} ORDER BY {key} LIMIT 1")[0])  # type: ignore[return-value]


def extract_failures(outcome: runner.RunOutcome) -> dict[str, str]:
    return {i.table: json.dumps(i.result) for i in outcome.invocations if i.stage == "extract" and not i.ok}


def extract_head(db: Databases, table: str) -> dict[str, Any]:
    return json.loads((db.lake / runner.INGESTION_BUCKET / keys.head_key("extract", table)).read_text())


@pytest.mark.parametrize("column", ["created_at", "last_updated"])
def test_infinity_in_a_timestamp_column_of_every_table_fails_that_table_keeps_nothing_and_the_fix_arrives(
    reader: Databases, column: str
) -> None:
    assert reader.run().succeeded
    bad = {table: bad_row(reader, table) for table in SOURCE_TABLES}
    heads = {table: extract_head(reader, table) for table in SOURCE_TABLES}
    stamp = ", last_updated = now()" if column != "last_updated" else ""  # as the application does
    for table, (key, _) in bad.items():
        as_admin(reader, f"UPDATE {table} SET {column} = 'infinity'{stamp} WHERE {PRIMARY_KEYS[table]} = :k", k=key)

    refused = reader.run()

    assert refused.status == "FAILED"
    failures = extract_failures(refused)
    assert set(failures) == set(SOURCE_TABLES)
    for table, (key, _) in bad.items():
        named = f"{table}: {PRIMARY_KEYS[table]}={key} {table}.{column}: a value outside the years 1 to 9999"
        assert named in failures[table]
        head = extract_head(reader, table)
        assert (head["seq"], head["watermark"]) == (heads[table]["seq"], heads[table]["watermark"]), "nothing kept"
        assert head["refused"] == [key]
    assert reader.run().status == "FAILED", "refused again while the rows are not fixed"
    assert reader.run(tables=["staff"], full_refresh=True).status == "FAILED", "a full refresh is refused too"
    assert extract_head(reader, "staff")["refused"] == [bad["staff"][0]]

    # Fixed by hand, last_updated set a second after the old one: far older than the window the next run reads.
    for table, (key, old) in bad.items():
        as_admin(reader, f"UPDATE {table} SET created_at = :t, last_updated = :t WHERE {PRIMARY_KEYS[table]} = :k",
                 t=old + timedelta(seconds=1), k=key)  # fmt: skip

    fixed = reader.run()

    assert fixed.succeeded, fixed.cause
    assert reader.differences() == {}
    assert all("refused" not in extract_head(reader, table) for table in SOURCE_TABLES)
    order, old = bad["sales_order"]
    versions = reader.warehouse_sql("SELECT last_updated_date + last_updated_time FROM fact_sales_order "
                                    "WHERE sales_order_id = :k ORDER BY 1", k=order)  # fmt: skip
    assert [v[0] for v in versions][-1] == old + timedelta(seconds=1), "the fixed version arrived"
    assert reader.run().succeeded


TEXT_DATES = [(table, column) for table, columns in TEXT_DATE_COLUMNS.items() for column in columns]


@pytest.mark.parametrize("value", ["infinity", "10000-01-01", "2023-02-30"])
def test_a_text_date_that_is_not_a_day_of_the_years_1_to_9999_fails_its_table_and_the_fixed_row_arrives(
    reader: Databases, value: str
) -> None:
    assert reader.run().succeeded
    bad: dict[tuple[str, str], tuple[int, str]] = {}
    for n, (table, column) in enumerate(TEXT_DATES):  # a row of its own for each column
        key = PRIMARY_KEYS[table]
        bad[table, column] = tuple(as_admin(reader, f"SELECT {key}, {column} FROM {table} ORDER BY {key} "  # type: ignore[assignment]
                                                    "OFFSET :n LIMIT 1", n=n)[0])  # fmt: skip
        as_admin(reader, f"UPDATE {table} SET {column} = :v, last_updated = now() WHERE {key} = :k",
                 v=value, k=bad[table, column][0])  # fmt: skip

    refused = reader.run()

    assert refused.status == "FAILED"
    failures = extract_failures(refused)
    assert set(failures) == set(TEXT_DATE_COLUMNS)
    for (table, column), (key, _) in bad.items():
        assert f"{PRIMARY_KEYS[table]}={key} {table}.{column} = {value!r}" in failures[table]

    for (table, column), (key, old) in bad.items():  # fixed without touching last_updated
        as_admin(reader, f"UPDATE {table} SET {column} = :v WHERE {PRIMARY_KEYS[table]} = :k", v=old, k=key)

    fixed = reader.run()

    assert fixed.succeeded, fixed.cause
    assert reader.differences() == {}
