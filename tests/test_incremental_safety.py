"""Incremental runs never lose or duplicate a row version: ties, late commits, crashes, refreshes, drift."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lambdas.common import lake
from lambdas.load import loader
from tests.conftest import Databases

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def small(databases: Databases) -> Databases:
    return databases.seed(scale=0.05)


def fact_versions(db: Databases) -> int:
    return db.warehouse_sql("SELECT count(*) FROM fact_sales_order")[0][0]


def test_rows_sharing_the_watermark_timestamp_across_two_runs_arrive_once_each(small: Databases) -> None:
    assert small.run().succeeded
    top = small.source_sql("SELECT max(last_updated) FROM sales_order")[0][0]
    before = fact_versions(small)
    small.source_sql(
        "INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, units_sold, "
        "unit_price, currency_id, agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id) "
        "SELECT :t, :t, design_id, staff_id, counterparty_id, 1, 1.5, currency_id, agreed_delivery_date, "
        "agreed_payment_date, agreed_delivery_location_id FROM sales_order ORDER BY sales_order_id LIMIT 3",
        t=top,
    )

    assert small.run().succeeded
    assert small.run().succeeded

    assert fact_versions(small) == before + 3
    assert small.differences() == {}


def test_a_row_whose_transaction_commits_after_a_run_read_past_its_timestamp_still_arrives(small: Databases) -> None:
    assert small.run().succeeded
    late = small.source_con()
    late.run("START TRANSACTION")
    late.run("UPDATE sales_order SET units_sold = 424242, last_updated = now() WHERE sales_order_id = 1")
    time.sleep(0.05)
    small.source_sql("UPDATE sales_order SET units_sold = 7, last_updated = now() WHERE sales_order_id = 2")
    assert small.run().succeeded  # reads sales_order 2, whose timestamp is later than the open update's
    late.run("COMMIT")
    late.close()

    assert small.run().succeeded

    latest = "SELECT units_sold FROM fact_sales_order WHERE sales_order_id = 1 ORDER BY sales_record_id DESC LIMIT 1"
    assert small.warehouse_sql(latest) == [[424242]]
    assert small.differences() == {}


def crash_once(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, when: Callable[..., bool],
               *, after: bool = False) -> None:  # fmt: skip
    """Make owner.name raise once, before (or after) doing its work, where `when(*args)` holds."""
    original = getattr(owner, name)
    fired: list[bool] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if fired or not when(*args, **kwargs):
            return original(*args, **kwargs)
        fired.append(True)
        if after:
            original(*args, **kwargs)
        raise RuntimeError(f"injected crash in {name}")

    monkeypatch.setattr(owner, name, wrapper)


CRASH_POINTS = {
    "extract: parts and manifest written, watermark not": (
        lake.BatchLog, "commit", lambda log, *_: log.stage == "extract" and log.table == "sales_order", False),
    "extract: only the first part written": (
        lake.Bucket, "put_parquet", lambda b, key, *_: key.startswith("sales_order/"), True),
    "transform: output written, cursor not": (
        lake.BatchLog, "commit", lambda log, *_: log.stage == "transform" and log.table == "fact_sales_order", False),
    "transform: joined dimension's current state written, cursor not": (
        lake.BatchLog, "commit", lambda log, *_: log.stage == "transform" and log.table == "dim_staff", False),
    "load: merged, warehouse transaction not committed": (
        loader, "merge_batch", lambda con, table, *_, **__: table == "fact_sales_order", True),
    "load: warehouse committed, load cursor not": (
        lake.ReaderState, "commit", lambda state, *_: state.table == "fact_sales_order", False),
    "load: dimension committed, its cursor not": (
        lake.ReaderState, "commit", lambda state, *_: state.table == "dim_staff", False),
}  # fmt: skip


@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_a_crash_at_any_boundary_is_repaired_by_the_next_run_without_duplicates(
    small: Databases, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    assert small.run().succeeded
    before = fact_versions(small)
    small.source_sql(
        "UPDATE sales_order SET units_sold = units_sold + 1, last_updated = now() WHERE sales_order_id <= 3"
    )
    small.source_sql(
        "UPDATE department SET department_name = department_name || ' (renamed)', last_updated = now() "
        "WHERE department_id = 1"
    )
    owner, name, when, after = CRASH_POINTS[point]
    with monkeypatch.context() as patch:
        crash_once(patch, owner, name, when, after=after)
        crashed = small.run()
    assert not crashed.succeeded

    assert small.run().succeeded

    assert fact_versions(small) == before + 3
    assert small.differences() == {}


def committed(head: Path) -> bool:
    """A head that names a batch (a log's head is created at seq 0 before its first batch); cursors have no seq."""
    try:
        return json.loads(head.read_text()).get("seq", 1) >= 1
    except (OSError, ValueError):
        return False


def test_a_process_killed_mid_run_loses_and_duplicates_nothing(small: Databases) -> None:
    """SIGKILL the real command at three points of three runs, changing the source in between."""

    def dsn(c: dict) -> str:
        return f"postgresql://{c['username']}@/{c['dbname']}?host={c['host']}&port={c['port']}"

    command = [sys.executable, "-m", "statemachine.local", "run", "--source-dsn", dsn(small.source),
               "--warehouse-dsn", dsn(small.warehouse), "--lake-dir", str(small.lake)]  # fmt: skip
    heads = small.lake / "totesys-local-ingestion" / "_state", small.lake / "totesys-local-processed" / "_state"
    kill_when_written = [
        heads[0] / "extract" / "sales_order.json",  # mid-extract: other tables still in flight
        heads[1] / "transform" / "fact_sales_order.json",  # mid-transform
        heads[1] / "load" / "dim_date.json",  # mid-load: dimensions in, facts not
    ]
    for trigger in kill_when_written:
        started = time.time()
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)  # fmt: skip
        while not (trigger.exists() and trigger.stat().st_mtime >= started and committed(trigger)):
            assert process.poll() is None, "the run ended before reaching its kill point"
            assert time.time() - started < 120
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        small.source_sql(
            "UPDATE sales_order SET units_sold = units_sold + 1, last_updated = now() WHERE sales_order_id = 1"
        )
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout[-3000:]

    # Every killed run got past extracting sales_order, so each of the three changes was observed once.
    assert fact_versions(small) == small.source_sql("SELECT count(*) FROM sales_order")[0][0] + 3
    assert small.differences() == {}


def test_full_refresh_rereads_a_table_and_adds_no_duplicate_versions(small: Databases) -> None:
    assert small.run().succeeded
    before = fact_versions(small)

    refreshed = small.run(tables=["sales_order", "staff"], full_refresh=True)

    assert refreshed.succeeded
    extracted = {i.table: i.result["rows"] for i in refreshed.invocations if i.stage == "extract"}
    assert extracted == {"sales_order": before, "staff": small.source_sql("SELECT count(*) FROM staff")[0][0]}
    assert fact_versions(small) == before
    assert small.differences() == {}


def test_a_new_nullable_source_column_does_not_break_the_run(small: Databases) -> None:
    assert small.run().succeeded
    small.source_sql("ALTER TABLE sales_order ADD COLUMN discount_code varchar")
    small.source_sql("UPDATE sales_order SET discount_code = 'X', last_updated = now() WHERE sales_order_id = 1")

    assert small.run().succeeded
    assert small.differences() == {}


def test_a_dropped_column_the_warehouse_needs_fails_that_table_naming_table_and_column(small: Databases) -> None:
    assert small.run().succeeded
    small.source_sql("ALTER TABLE sales_order RENAME COLUMN units_sold TO quantity")
    small.source_sql("UPDATE sales_order SET last_updated = now() WHERE sales_order_id = 1")

    outcome = small.run()

    assert not outcome.succeeded
    failures = [i.result["errorMessage"] for i in outcome.invocations if not i.ok]
    assert any("sales_order: column units_sold is missing" in m for m in failures), failures


def test_a_runs_reads_grow_with_what_changed_not_with_the_number_of_earlier_runs(
    small: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    for method in ("get_json", "get_parquet"):
        original = getattr(lake.Bucket, method)

        def counted(self: lake.Bucket, key: str, *args: Any, _original: Callable[..., Any] = original) -> Any:
            reads.append(key)
            return _original(self, key, *args)

        monkeypatch.setattr(lake.Bucket, method, counted)

    def reads_of_one_run(change: bool) -> list[str]:
        if change:
            small.source_sql(
                "UPDATE sales_order SET units_sold = units_sold + 1, last_updated = now() WHERE sales_order_id = 1"
            )
        reads.clear()
        assert small.run().succeeded
        return sorted(reads)

    reads_of_one_run(change=True)  # the first change brings today's date into dim_date, which later ones don't
    early_idle, early_change = reads_of_one_run(change=False), reads_of_one_run(change=True)
    for _ in range(4):
        reads_of_one_run(change=True)
    late_idle, late_change = reads_of_one_run(change=False), reads_of_one_run(change=True)

    assert len(late_idle) == len(early_idle)
    assert len(late_change) == len(early_change)
    assert sum(key.endswith(".parquet") for key in late_idle) == 0
    assert not hasattr(lake.Bucket, "list"), "no stage lists a bucket"
