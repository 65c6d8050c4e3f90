"""A run in which a table did not change does not read it, and the change signal never costs a change (issue 14).

Everything runs against the real server through the role that may only SELECT. Whether a run read a table is
asked of the server itself: the table's `seq_scan`, `seq_tup_read` and `idx_scan` must not move. Each writer
here flushes its statistics deliberately (`pg_stat_force_next_flush()`), or writes with `track_counts` off so
that they are never counted: the signal is then stale or lying on purpose, never by timing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pg8000.native
import pyarrow as pa
import pytest
from moto import mock_aws

from lambdas.common.db import connect
from lambdas.common.errors import StateError
from lambdas.common.keys import head_key
from lambdas.common.lake import BatchLog, Bucket
from lambdas.common.tables import SOURCE_TABLES
from lambdas.extract import extractor
from lambdas.extract.extractor import STAGE, ExtractResult, extract_table
from lambdas.extract.signal import SIGNAL, MissingPrivilegeError, read_token
from statemachine.local import postgres, sample_data
from statemachine.local.report import progress_line, signal_hint
from statemachine.local.runner import Invocation
from tests.conftest import Databases, as_admin

HOUR = timedelta(hours=1)


@pytest.fixture
def bucket() -> Iterator[Bucket]:
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-2")
        client.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        yield Bucket("lake", client)


def extract(db: Databases, bucket: Bucket, table: str, **options: Any) -> ExtractResult:
    """One extract through the read-only role; its session's statistics are flushed before it closes."""
    return extract_from(db.source, bucket, table, **options)


def extract_from(source: dict[str, Any], bucket: Bucket, table: str, **options: Any) -> ExtractResult:
    options.setdefault("signal_max_age", HOUR)
    con = connect(source)
    try:
        result = extract_table(con, BatchLog(bucket, STAGE, table), **options)
        con.run("SELECT pg_stat_force_next_flush()")
        return result
    finally:
        con.close()


def admin_con(db: Databases) -> pg8000.native.Connection:
    return pg8000.native.Connection(
        db.admin["username"], unix_sock=f"{db.admin['host']}/.s.PGSQL.{db.admin['port']}", database=db.source["dbname"]
    )


def counted(db: Databases, *statements: str) -> None:
    """A writer whose changes reach the statistics before it returns."""
    con = admin_con(db)
    try:
        for statement in statements:
            con.run(statement)
        con.run("SELECT pg_stat_force_next_flush()")
    finally:
        con.close()


def uncounted(db: Databases, *statements: str) -> None:
    """A writer the statistics never see (a superuser may switch counting off for its own session)."""
    con = admin_con(db)
    try:
        con.run("SET track_counts = off")
        for statement in statements:
            con.run(statement)
    finally:
        con.close()


def reads(db: Databases, table: str) -> tuple[int, int, int]:
    """How often the server has read the table: sequential scans, rows they read, index scans."""
    row = as_admin(db, "SELECT seq_scan, seq_tup_read, coalesce(idx_scan, 0) FROM pg_stat_user_tables "
                       "WHERE relname = :t", t=table)  # fmt: skip
    return tuple(row[0])


def head(bucket: Bucket, table: str) -> dict[str, Any]:
    found = bucket.get_json(head_key(STAGE, table))
    assert found is not None
    return found


def versions(bucket: Bucket, table: str, key: str) -> list[tuple[int, Any]]:
    """Every (key, last_updated) the table's log holds, with repeats."""
    log = BatchLog(bucket, STAGE, table)
    parts = [part for batch in log.follow(None).batches for part in log.read(batch)]
    both = pa.concat_tables(parts) if parts else pa.table({key: [], "last_updated": []})
    return sorted(zip(both[key].to_pylist(), both["last_updated"].to_pylist(), strict=True))


def touch(table: str, key: str, ids: str) -> str:
    return f"UPDATE {table} SET last_updated = clock_timestamp() WHERE {key} IN ({ids})"


def test_a_run_with_nothing_changed_does_not_read_the_table(reader: Databases, bucket: Bucket) -> None:
    first = extract(reader, bucket, "sales_order")
    assert first.rows > 0
    stored = json.dumps(head(bucket, "sales_order"))
    before = reads(reader, "sales_order")

    again = extract(reader, bucket, "sales_order")

    assert reads(reader, "sales_order") == before
    assert (again.rows, again.batch, again.watermark, again.scanned) == (0, None, first.watermark, False)
    assert again.as_dict()["scanned"] is False
    assert json.dumps(head(bucket, "sales_order")) == stored  # a skipped run writes nothing
    # the measure can fail: a run told to always scan moves the server's counters
    extract(reader, bucket, "sales_order", signal_max_age=timedelta(0))
    seq_scan, seq_tup_read, _ = reads(reader, "sales_order")
    assert seq_scan > before[0] and seq_tup_read >= before[1] + first.rows


def test_the_read_only_role_reads_a_trustworthy_signal(reader: Databases) -> None:
    con = reader.source_con()
    try:
        assert con.run("SELECT current_user")[0][0] == reader.source["username"]
        token = read_token(con, "sales_order")
    finally:
        con.close()
    assert token is not None and token.counters.counting
    assert token.counters.inserted > 0


def test_a_change_is_extracted_by_the_next_run_and_the_run_after_skips(reader: Databases, bucket: Bucket) -> None:
    extract(reader, bucket, "sales_order")
    counted(reader, touch("sales_order", "sales_order_id", "1, 2, 3"))

    changed = extract(reader, bucket, "sales_order")
    quiet = extract(reader, bucket, "sales_order")

    assert (changed.rows, changed.scanned) == (3, True)
    assert (quiet.rows, quiet.scanned) == (0, False)


def test_a_change_committed_while_a_scan_runs_is_extracted_by_the_next_run(
    reader: Databases, bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order that makes skipping safe: the signal is read before the scan's snapshot, so a change that
    commits after the snapshot (not in this scan) moves the next run's signal and is read then."""
    extract(reader, bucket, "staff")
    counted(reader, touch("staff", "staff_id", "6"))
    snapshot_clock = extractor.source_clock

    def clock_then_change(con: pg8000.native.Connection) -> Any:
        clock = snapshot_clock(con)  # the snapshot is taken now
        counted(reader, touch("staff", "staff_id", "7"))
        return clock

    with monkeypatch.context() as patch:
        patch.setattr(extractor, "source_clock", clock_then_change)
        during = extract(reader, bucket, "staff")
    after = extract(reader, bucket, "staff")

    assert during.rows == 1  # staff 6; staff 7 committed after the snapshot
    assert (after.rows, after.scanned) == (1, True)


def test_a_change_not_counted_yet_is_delayed_never_lost(reader: Databases, bucket: Bucket) -> None:
    extract(reader, bucket, "staff")
    uncounted(reader, touch("staff", "staff_id", "1, 2"))  # stands for statistics not flushed yet

    stale = extract(reader, bucket, "staff")
    counted(reader, touch("staff", "staff_id", "3"))
    caught_up = extract(reader, bucket, "staff")
    quiet = extract(reader, bucket, "staff")

    assert (stale.rows, stale.scanned) == (0, False)
    assert caught_up.rows == 3  # the delayed change and the counted one, from the same watermark
    assert quiet.rows == 0
    taken = versions(bucket, "staff", "staff_id")
    assert len(taken) == len(set(taken))  # each version exactly once
    now = dict(reader.source_sql("SELECT staff_id, last_updated FROM staff WHERE staff_id IN (1, 2, 3)"))
    assert {(k, v) for k, v in now.items()} <= set(taken)


def test_a_signal_that_lies_forever_is_caught_by_the_max_age_scan(reader: Databases, bucket: Bucket) -> None:
    max_age = timedelta(seconds=1.5)
    extract(reader, bucket, "staff", signal_max_age=max_age)
    scanned_at = reader.source_sql("SELECT clock_timestamp()")[0][0]
    uncounted(reader, touch("staff", "staff_id", "4"))

    within = extract(reader, bucket, "staff", signal_max_age=max_age)
    time.sleep(max_age.total_seconds())
    after = extract(reader, bucket, "staff", signal_max_age=max_age)
    found_at = reader.source_sql("SELECT clock_timestamp()")[0][0]

    assert (within.rows, within.scanned) == (0, False)
    assert (after.rows, after.scanned) == (1, True)
    assert found_at - scanned_at < max_age + timedelta(seconds=5)  # the bound: max_age plus one run


@pytest.mark.parametrize(
    "reset",
    ["SELECT pg_stat_reset()", "SELECT pg_stat_reset_single_table_counters('currency'::regclass)"],
)
def test_a_statistics_reset_forces_a_scan_even_when_the_counters_come_back(
    reader: Databases, bucket: Bucket, reset: str
) -> None:
    extract(reader, bucket, "currency")
    stored = head(bucket, "currency")[SIGNAL]["counters"]
    assert stored["updated"] == stored["deleted"] == 0, "the seed only inserts"
    new_rows = stored["inserted"]
    assert 0 < new_rows < 100

    # after the reset, exactly as many inserts as the stored counters had: the counters are the stored ones
    as_admin(reader, reset)
    counted(reader, f"INSERT INTO currency (currency_code) SELECT 'X' || n FROM generate_series(1, {new_rows}) n")
    con = reader.source_con()
    try:
        token = read_token(con, "currency")
    finally:
        con.close()
    assert token is not None
    assert (token.counters.inserted, token.counters.updated, token.counters.deleted) == (new_rows, 0, 0)

    after = extract(reader, bucket, "currency")

    assert (after.rows, after.scanned) == (new_rows, True)


def test_when_the_server_counts_nothing_every_run_scans_also_the_first_after_counting_resumes(
    reader: Databases, bucket: Bucket
) -> None:
    # The setting for every session of the source database, writers and the pipeline alike.
    as_admin(reader, f"ALTER DATABASE {pg8000.native.identifier(reader.source['dbname'])} SET track_counts = off")
    extract(reader, bucket, "staff")
    counted(reader, touch("staff", "staff_id", "5"))  # counted by nothing, since counting is off

    after = extract(reader, bucket, "staff")
    quiet = extract(reader, bucket, "staff")

    assert (after.rows, after.scanned) == (1, True)
    assert (quiet.rows, quiet.scanned) == (0, True)

    # a change made while nothing counted, then counting back on: the counters still equal the stored ones
    counted(reader, touch("staff", "staff_id", "6"))
    as_admin(reader, f"ALTER DATABASE {pg8000.native.identifier(reader.source['dbname'])} RESET track_counts")
    back_on = extract(reader, bucket, "staff")
    assert (back_on.rows, back_on.scanned) == (1, True)


def test_a_head_without_a_signal_scans_then_stores_one(reader: Databases, bucket: Bucket) -> None:
    extract(reader, bucket, "sales_order")
    old = {k: v for k, v in head(bucket, "sales_order").items() if k != SIGNAL}  # as the previous version wrote it
    bucket.put_json(head_key(STAGE, "sales_order"), old)
    before = reads(reader, "sales_order")

    first = extract(reader, bucket, "sales_order")
    scanned = reads(reader, "sales_order")
    second = extract(reader, bucket, "sales_order")

    assert first.scanned and scanned[0] > before[0]
    assert {k: v for k, v in head(bucket, "sales_order").items() if k != SIGNAL} == old
    assert SIGNAL in head(bucket, "sales_order")
    assert not second.scanned and reads(reader, "sales_order") == scanned


def test_a_run_whose_scan_finds_nothing_new_still_records_the_signal(reader: Databases, bucket: Bucket) -> None:
    extract(reader, bucket, "department")
    before = head(bucket, "department")
    # counted, but nothing a window would extract: a rolled-back insert
    counted(reader, "BEGIN", "INSERT INTO department (department_name) VALUES ('never')", "ROLLBACK")

    nothing = extract(reader, bucket, "department")
    after = head(bucket, "department")
    quiet = extract(reader, bucket, "department")

    assert (nothing.rows, nothing.batch, nothing.scanned) == (0, None, True)
    assert {k: after[k] for k in ("seq", "log", "last", "base", "watermark", "seen")} == {
        k: before[k] for k in ("seq", "log", "last", "base", "watermark", "seen")
    }
    assert after[SIGNAL]["counters"]["inserted"] == before[SIGNAL]["counters"]["inserted"] + 1
    assert not quiet.scanned


def test_an_edited_head_is_checked_by_a_scan_not_skipped(reader: Databases, bucket: Bucket) -> None:
    extract(reader, bucket, "staff")
    newest = reader.source_sql("SELECT max(last_updated) FROM staff")[0][0]
    edited = {**head(bucket, "staff"), "watermark": (newest + timedelta(hours=1)).isoformat()}
    bucket.put_json(head_key(STAGE, "staff"), edited)

    with pytest.raises(StateError, match="later than the newest row"):
        extract(reader, bucket, "staff")


@pytest.mark.parametrize("mode", ["full_refresh", "repair"])
def test_a_full_refresh_or_repair_reads_the_whole_table_whatever_the_signal(
    reader: Databases, bucket: Bucket, mode: str
) -> None:
    whole = extract(reader, bucket, "department")

    again = extract(reader, bucket, "department", **{mode: True})

    assert (again.rows, again.scanned) == (whole.rows, True)


def test_a_scheduled_run_with_nothing_changed_scans_no_source_table(reader: Databases) -> None:
    assert reader.run().succeeded
    before = {table: reads(reader, table) for table in SOURCE_TABLES}

    quiet = reader.run()

    assert quiet.succeeded
    # the run's plan read every signal (lambdas/extract/run_plan.py): no table is extracted, none is read
    (plan,) = [i.result for i in quiet.invocations if i.stage == "plan"]
    assert plan["extract"] == [] and plan["work"] is False, plan
    assert [i for i in quiet.invocations if i.stage == "extract"] == []
    assert {table: reads(reader, table) for table in SOURCE_TABLES} == before


def updated(db: Databases, table: str) -> int:
    """The table's count of updated rows as another session sees it: what the change signal reads."""
    return as_admin(db, "SELECT n_tup_upd FROM pg_stat_all_tables WHERE relid = to_regclass(:t)", t=table)[0][0]


def pending_change(con: pg8000.native.Connection, db: Databases, statement: str) -> int:
    """Commit `statement` in the writer session `con` so that its count is not flushed yet, and return the staff
    table's update count before it. The writer flushes just before (its department update, forced), and a session
    flushes at most once a second, so the change's count waits for the writer to idle 10 s, to end, or to be
    told (pg_stat_force_next_flush())."""
    con.run(touch("department", "department_id", "1"))
    con.run("SELECT pg_stat_force_next_flush()")
    before = updated(db, "staff")
    con.run(statement)
    assert updated(db, "staff") == before, "the writer flushed at once: more than a second between two statements?"
    return before


def test_a_change_whose_writer_went_idle_waits_for_its_flush_then_is_extracted(
    reader: Databases, bucket: Bucket
) -> None:
    """A writer that goes idle flushes its counts within 10 s (at most once a second): until then the table is
    skipped, with a note that says so; once flushed, the next run reads the change."""
    extract(reader, bucket, "staff")
    con = admin_con(reader)
    try:
        pending_change(con, reader, touch("staff", "staff_id", "5"))
        waiting = extract(reader, bucket, "staff")
        con.run("SELECT pg_stat_force_next_flush()")  # what 10 s of idling does
        flushed = extract(reader, bucket, "staff")
    finally:
        con.close()

    assert (waiting.rows, waiting.scanned) == (0, False)
    assert "committed in the last seconds" in str(waiting.as_dict()["note"])
    assert (flushed.rows, flushed.scanned) == (1, True)


def test_a_change_whose_writer_stays_inside_a_transaction_waits_for_the_forced_scan(
    reader: Databases, bucket: Bucket
) -> None:
    """A session that commits a change and opens its next transaction at once never flushes while it stays in it,
    not after 10 s idle, not when asked: the change is counted when the session idles outside a transaction or
    ends. Until then only a scan finds it: the forced one (EXTRACT_SIGNAL_MAX_AGE_SECONDS after the last scan), or
    a run that ignores the signal. (Sleeps 11 s: the idle flush it shows does not happen has a 10 s timer.)"""
    extract(reader, bucket, "staff")
    con = admin_con(reader)
    try:
        before = pending_change(con, reader, touch("staff", "staff_id", "6"))
        con.run("START TRANSACTION")  # straight into the next transaction
        con.run("SELECT pg_stat_force_next_flush()")  # asked to flush: it cannot, inside a transaction
        time.sleep(11)  # longer than the idle flush's 10 s
        still_pending = updated(reader, "staff") == before

        skipped = extract(reader, bucket, "staff")
        anyway = extract(reader, bucket, "staff", trust_signal=False)
        con.run("COMMIT")  # idle outside a transaction: the flush it was asked for happens now
        counted_at_last = updated(reader, "staff") > before
    finally:
        con.close()

    assert still_pending
    assert (skipped.rows, skipped.scanned) == (0, False)
    assert (anyway.rows, anyway.scanned) == (1, True)  # read although the counters did not move
    assert counted_at_last


def test_the_forced_scan_bounds_the_wait_of_a_change_never_flushed(reader: Databases, bucket: Bucket) -> None:
    """The writer inside its transaction again, the change's count never flushed: the first run at least max_age
    after the last scan reads the table and finds it."""
    max_age = timedelta(seconds=1.5)
    extract(reader, bucket, "staff", signal_max_age=max_age)
    con = admin_con(reader)
    try:
        pending_change(con, reader, touch("staff", "staff_id", "7"))
        con.run("START TRANSACTION")
        within = extract(reader, bucket, "staff", signal_max_age=max_age)
        time.sleep(max_age.total_seconds())
        forced = extract(reader, bucket, "staff", signal_max_age=max_age)
        con.run("ROLLBACK")
    finally:
        con.close()

    assert (within.rows, within.scanned) == (0, False)
    assert (forced.rows, forced.scanned) == (1, True)


def test_a_run_that_ignores_the_change_signal_reads_every_asked_table_incrementally(reader: Databases) -> None:
    assert reader.run().succeeded
    quiet = reader.run(tables=["staff", "department"])
    con = admin_con(reader)
    try:
        pending_change(con, reader, touch("staff", "staff_id", "2"))  # the writer stays connected meanwhile
        asked = reader.run(tables=["staff", "department"], ignore_change_signal=True)
    finally:
        con.close()

    assert quiet.succeeded and asked.succeeded
    hint = signal_hint(quiet)
    assert hint.startswith("Not read, unchanged by their change signal: department, staff.")
    assert "--ignore-change-signal" in hint
    extracts = {i.table: i.result for i in asked.invocations if i.stage == "extract"}
    assert set(extracts) == {"staff", "department"}
    assert all(r.get("scanned", True) for r in extracts.values()), extracts
    # incremental, not a refresh: staff 2, and department 1 (the writer's flush before it)
    assert (extracts["staff"]["rows"], extracts["department"]["rows"]) == (1, 1)
    assert signal_hint(asked) == ""
    assert reader.differences() == {}


def test_a_revoked_grant_fails_an_unchanged_table_at_once_naming_the_grant(reader: Databases, bucket: Bucket) -> None:
    role = reader.source["username"]
    extract(reader, bucket, "staff")
    as_admin(reader, f"REVOKE SELECT ON staff FROM {role}")

    with pytest.raises(MissingPrivilegeError) as refused:
        extract(reader, bucket, "staff")
    as_admin(reader, f"GRANT SELECT ON staff TO {role}")
    regranted = extract(reader, bucket, "staff")

    assert str(refused.value) == f"permission denied for table staff: GRANT SELECT ON staff TO {role}"
    assert (regranted.rows, regranted.scanned) == (0, False)


def test_a_grant_on_some_columns_only_is_refused_naming_the_columns_it_lacks(reader: Databases, bucket: Bucket) -> None:
    role = reader.source["username"]
    extract(reader, bucket, "department")
    as_admin(reader, f"REVOKE SELECT ON department FROM {role}")
    as_admin(reader, f"GRANT SELECT (department_id, department_name, location) ON department TO {role}")

    with pytest.raises(MissingPrivilegeError) as refused:
        extract(reader, bucket, "department")

    assert str(refused.value) == (
        f"permission denied for table department: GRANT SELECT (manager, created_at, last_updated) ON department "
        f"TO {role}"
    )


def test_a_run_fails_the_table_whose_grant_was_revoked_and_the_others_go_on(reader: Databases) -> None:
    role = reader.source["username"]
    assert reader.run(tables=["staff", "currency"]).succeeded
    as_admin(reader, f"REVOKE SELECT ON currency FROM {role}")

    counted(reader, touch("staff", "staff_id", "1"))  # staff has work in the next run, currency none

    refused = reader.run(tables=["staff", "currency"])

    assert not refused.succeeded
    extracts = {i.table: i for i in refused.invocations if i.stage == "extract"}
    assert extracts["staff"].ok and extracts["staff"].result.get("scanned", True)
    assert not extracts["currency"].ok  # unchanged, yet planned: the plan's signal read found the grant missing
    assert f"permission denied for table currency: GRANT SELECT ON currency TO {role}" in str(
        extracts["currency"].result
    )


def test_an_extract_the_signal_skips_says_so_in_its_progress_line(reader: Databases, bucket: Bucket) -> None:
    assert extract(reader, bucket, "design").scanned
    skipped = extract(reader, bucket, "design")
    invocation = Invocation("local-1", "extract", "design", 0.0, 0.01, True, skipped.as_dict())

    assert not skipped.scanned
    assert "0 rows, not read: unchanged since its last scan" in progress_line(invocation)


@pytest.fixture
def private_server() -> Iterator[dict[str, Any]]:
    """A server of this test's own, with totesys's schema: the test crashes it."""
    data_dir = Path(tempfile.mkdtemp(prefix="totesys-crash-pg-"))
    server = postgres.start(data_dir, keep_running=False)
    try:
        postgres.ensure_database(server.admin, "totesys")
        source = {**server.admin, "dbname": "totesys"}
        con = connect(source)
        try:
            sample_data.create_schema(con)
        finally:
            con.close()
        yield source
    finally:
        server.release()
        shutil.rmtree(data_dir, ignore_errors=True)


def crash(source: dict[str, Any]) -> None:
    """Kill one backend: the postmaster stays up, but recovers from a crash and discards every counter."""
    victim = connect(source)
    os.kill(victim.run("SELECT pg_backend_pid()")[0][0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        time.sleep(0.2)
        try:
            connect(source).close()
            return
        except Exception:  # refused until the crash recovery has finished
            if time.monotonic() > deadline:
                raise


def test_a_crash_restart_forces_a_scan_even_when_the_counters_come_back(
    private_server: dict[str, Any], bucket: Bucket
) -> None:
    insert = "INSERT INTO currency (currency_code) VALUES ('GBP'), ('USD'), ('EUR')"

    def counted_here(statement: str) -> None:
        con = connect(private_server)
        try:
            con.run(statement)
            con.run("SELECT pg_stat_force_next_flush()")
        finally:
            con.close()

    counted_here(insert)
    extract_from(private_server, bucket, "currency")
    stored = head(bucket, "currency")[SIGNAL]["counters"]

    crash(private_server)
    counted_here(insert)  # the same three inserts, counted from zero again
    con = connect(private_server)
    try:
        token = read_token(con, "currency")
    finally:
        con.close()
    assert token is not None
    same = ("table_oid", "filenode", "inserted", "updated", "deleted", "database_reset", "server_started")
    assert {k: getattr(token.counters, k) for k in same} == {k: stored[k] for k in same}

    after = extract_from(private_server, bucket, "currency")

    assert (after.rows, after.scanned) == (3, True)
