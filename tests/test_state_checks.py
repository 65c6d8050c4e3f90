"""State that cannot be believed fails loudly, naming the object and the repair; the repair makes the warehouse
right. Each test plays one way the lake's state gets lost, altered, or pointed at another database (issue 10);
none may end in a SUCCEEDED run with rows missing."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pg8000.native
import pytest

from lambdas.common.db import connect
from lambdas.common.tables import SOURCE_TABLES
from lambdas.transform import handler as transform_handler
from statemachine.local import postgres, runner, sample_data
from tests import expected
from tests.conftest import Databases, as_admin
from tests.test_incremental_safety import crash_once, fact_versions


@pytest.fixture
def small(databases: Databases) -> Databases:
    db = databases.seed(scale=0.05)
    assert db.run().succeeded
    return db


def ingestion(db: Databases) -> Path:
    return db.lake / runner.INGESTION_BUCKET


def processed(db: Databases) -> Path:
    return db.lake / runner.PROCESSED_BUCKET


def failures(outcome: runner.RunOutcome) -> dict[tuple[str, str], str]:
    return {(i.stage, i.table): i.result["errorMessage"] for i in outcome.invocations if not i.ok}


def rerun_input(outcome: runner.RunOutcome) -> dict[str, Any]:
    return json.loads(outcome.cause or "{}")["rerun_input"]


def change_sales_orders(db: Databases, count: int) -> None:
    db.source_sql("UPDATE sales_order SET units_sold = units_sold + 1, last_updated = now() "
                  "WHERE sales_order_id <= :n", n=count)  # fmt: skip


def batch_not_yet_transformed(db: Databases, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run once with the transform of fact_sales_order crashing: the new sales_order batch is committed, unread."""
    with monkeypatch.context() as patch:
        crash_once(patch, transform_handler, "transform_table", lambda _i, _p, table, **_: table == "fact_sales_order")
        assert not db.run().succeeded
    head = json.loads((ingestion(db) / "_state/extract/sales_order.json").read_text())
    return ingestion(db) / "sales_order" / f"{head['seq']:010d}"


def assert_fails_naming(db: Databases, where: tuple[str, str], *fragments: str) -> runner.RunOutcome:
    """The run fails, the table's error names every fragment, and nothing reached the warehouse's facts."""
    before = fact_versions(db)
    outcome = db.run()
    assert not outcome.succeeded
    message = failures(outcome).get(where, "")
    for fragment in fragments:
        assert fragment in message, message
    assert "Nothing was changed" in message and "python -m statemachine.local repair --tables" in message
    assert rerun_input(outcome)["repair"] is True
    assert fact_versions(db) == before
    return outcome


def test_a_lost_extract_head_fails_every_run_naming_it_and_the_repair_brings_every_change(
    small: Databases,
) -> None:
    before = fact_versions(small)
    (ingestion(small) / "_state/extract/sales_order.json").unlink()
    change_sales_orders(small, 50)

    for _ in range(2):  # never "nothing new", however often it runs
        outcome = assert_fails_naming(small, ("extract", "sales_order"), "_state/extract/sales_order.json is missing",
                                      "the log has batches")  # fmt: skip
    assert rerun_input(outcome) == {"tables": ["sales_order"], "repair": True}

    assert small.run(**rerun_input(outcome)).succeeded
    assert fact_versions(small) == before + 50
    assert small.differences() == {}
    change_sales_orders(small, 2)
    assert small.run().succeeded  # and the incremental runs go on from the repaired log
    assert fact_versions(small) == before + 52
    assert small.differences() == {}


def test_a_head_restored_from_an_older_copy_is_caught_by_the_next_reader(small: Databases) -> None:
    head = ingestion(small) / "_state/extract/sales_order.json"
    old = head.read_text()
    change_sales_orders(small, 5)
    assert small.run().succeeded
    before = fact_versions(small)
    head.write_text(old)  # e.g. a bucket restored from yesterday's copy, or the object version rolled back
    change_sales_orders(small, 7)

    outcome = assert_fails_naming(small, ("transform", "fact_sales_order"), "was replaced")

    assert small.run(**rerun_input(outcome)).succeeded
    assert fact_versions(small) == before + 7
    assert small.differences() == {}


def test_a_watermark_later_than_the_sources_clock_fails_instead_of_skipping_every_change(small: Databases) -> None:
    before = fact_versions(small)
    head = ingestion(small) / "_state/extract/sales_order.json"
    state = json.loads(head.read_text())
    head.write_text(json.dumps({**state, "watermark": "2031-01-01T00:00:00"}))
    change_sales_orders(small, 20)

    outcome = assert_fails_naming(small, ("extract", "sales_order"), "2031-01-01T00:00:00",
                                  "later than the source's clock")  # fmt: skip

    assert small.run(**rerun_input(outcome)).succeeded
    assert fact_versions(small) == before + 20
    assert small.differences() == {}


def test_a_watermark_later_than_the_newest_row_fails(small: Databases) -> None:
    newest, clock = small.source_sql("SELECT max(last_updated), localtimestamp FROM staff")[0]
    watermark = newest + timedelta(hours=1)
    assert watermark < clock, "the sample data must be older than the test's clock"
    head = ingestion(small) / "_state/extract/staff.json"
    head.write_text(json.dumps({**json.loads(head.read_text()), "watermark": watermark.isoformat()}))

    outcome = small.run()

    assert not outcome.succeeded
    assert "later than the newest row" in failures(outcome)[("extract", "staff")]
    assert small.run(**rerun_input(outcome)).succeeded


def test_a_manifest_listing_no_parts_fails_the_reader_instead_of_reading_it_as_empty(
    small: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = fact_versions(small)
    change_sales_orders(small, 70)
    batch = batch_not_yet_transformed(small, monkeypatch)
    manifest = json.loads((batch / "_manifest.json").read_text())
    (batch / "_manifest.json").write_text(json.dumps({**manifest, "parts": [], "part_rows": []}))

    outcome = assert_fails_naming(small, ("transform", "fact_sales_order"), "_manifest.json cannot be believed",
                                  "it lists no parts")  # fmt: skip

    assert small.run(**rerun_input(outcome)).succeeded
    assert fact_versions(small) == before + 70
    assert small.differences() == {}


def test_a_part_whose_row_count_differs_from_its_manifest_fails(
    small: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    change_sales_orders(small, 10)
    batch = batch_not_yet_transformed(small, monkeypatch)
    manifest = json.loads((batch / "_manifest.json").read_text())
    (batch / "_manifest.json").write_text(json.dumps({**manifest, "part_rows": [9], "rows": 9}))

    assert_fails_naming(small, ("transform", "fact_sales_order"), "holds 10 rows; its manifest says 9")


def test_a_corrupt_part_fails_naming_it_and_the_suggested_repair_skips_it(
    small: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = fact_versions(small)
    change_sales_orders(small, 30)
    batch = batch_not_yet_transformed(small, monkeypatch)
    (part,) = batch.glob("part-*.parquet")
    part.write_bytes(b"not parquet at all")

    outcome = assert_fails_naming(small, ("transform", "fact_sales_order"), f"{part.name} is not readable Parquet")
    refreshed = small.run(tables=["sales_order"], full_refresh=True)
    assert not refreshed.succeeded  # a full refresh appends; the corrupt batch still comes first

    assert small.run(**rerun_input(outcome)).succeeded
    assert fact_versions(small) == before + 30
    assert small.differences() == {}


def test_a_missing_current_snapshot_fails_the_joined_dimension_and_the_repair_rebuilds_it(small: Databases) -> None:
    shutil.rmtree(processed(small) / "_current" / "dim_staff" / "department")
    small.source_sql("UPDATE staff SET first_name = 'Renamed', last_updated = now() WHERE staff_id = 1")

    outcome = assert_fails_naming(small, ("transform", "dim_staff"), "_current/dim_staff/department/")
    assert rerun_input(outcome) == {"tables": ["department", "staff"], "repair": True}

    assert small.run(**rerun_input(outcome)).succeeded
    assert small.warehouse_sql("SELECT first_name FROM dim_staff WHERE staff_id = 1") == [["Renamed"]]
    assert small.differences() == {}


def test_a_lost_transform_head_fails_and_the_repair_rebuilds_the_processed_log(small: Databases) -> None:
    before = fact_versions(small)
    (processed(small) / "_state/transform/fact_sales_order.json").unlink()
    change_sales_orders(small, 4)

    outcome = assert_fails_naming(small, ("transform", "fact_sales_order"), "_state/transform/fact_sales_order.json")

    assert small.run(**rerun_input(outcome)).succeeded
    assert fact_versions(small) == before + 4
    assert small.differences() == {}


def test_a_lost_load_cursor_reloads_the_table_without_duplicating_a_version(small: Databases) -> None:
    before = fact_versions(small)
    (processed(small) / "_state/load/fact_sales_order.json").unlink()
    change_sales_orders(small, 3)

    assert small.run().succeeded

    assert fact_versions(small) == before + 3
    assert small.differences() == {}


@pytest.fixture
def another_database(small: Databases) -> Iterator[dict[str, Any]]:
    name = f"other_{uuid.uuid4().hex[:10]}"
    postgres.ensure_database(small.admin, name)
    yield {**small.admin, "dbname": name}
    con = connect({**small.admin, "dbname": "postgres"})
    try:
        con.run(f"DROP DATABASE IF EXISTS {pg8000.native.identifier(name)} WITH (FORCE)")
    finally:
        con.close()


def test_a_lake_pointed_at_another_source_refuses_every_table_naming_both_databases(
    small: Databases, another_database: dict[str, Any]
) -> None:
    con = connect(another_database)
    try:  # the same sample contents: only the identity tells them apart
        sample_data.create_schema(con)
        sample_data.seed(con, scale=0.05)
        con.run("UPDATE sales_order SET units_sold = 1, last_updated = now() WHERE sales_order_id <= 5")
    finally:
        con.close()
    before = fact_versions(small)

    outcome = runner.run(source=another_database, warehouse=small.warehouse, lake_dir=small.lake, execution_input={})

    assert not outcome.succeeded
    refused = failures(outcome)
    assert {table for stage, table in refused if stage == "extract"} == set(SOURCE_TABLES)
    message = refused[("extract", "sales_order")]
    assert f"database {small.source['dbname']!r}" in message and f"database {another_database['dbname']!r}" in message
    assert "A lake belongs to one source" in message
    assert fact_versions(small) == before


def test_a_lake_pointed_at_another_warehouse_refuses_and_the_repair_fills_it(
    small: Databases, another_database: dict[str, Any]
) -> None:
    # A run with nothing to do does not connect to the warehouse (docs/guarantees.md, "A run with nothing to do
    # touches no table"): the first run with a load to do refuses, at the latest when the hourly forced scan is due.
    quiet = runner.run(source=small.source, warehouse=another_database, lake_dir=small.lake, execution_input={})
    assert quiet.succeeded and not [i for i in quiet.invocations if i.stage == "load"], quiet
    as_admin(small, "UPDATE address SET last_updated = clock_timestamp() WHERE address_id = 1")

    outcome = runner.run(source=small.source, warehouse=another_database, lake_dir=small.lake, execution_input={})

    assert not outcome.succeeded
    message = failures(outcome)[("load", "dim_location")]
    assert f"loaded into database {small.warehouse['dbname']!r}" in message, message
    assert f"the warehouse now is database {another_database['dbname']!r}" in message

    repaired = runner.run(source=small.source, warehouse=another_database, lake_dir=small.lake,
                          execution_input=rerun_input(outcome))  # fmt: skip
    assert repaired.succeeded, repaired
    source, warehouse = small.source_con(), connect(another_database)
    try:
        assert expected.differences(source, warehouse) == {}
    finally:
        source.close()
        warehouse.close()
