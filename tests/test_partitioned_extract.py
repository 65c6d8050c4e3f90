"""A table larger than one Lambda: its whole-table read split into key ranges, committed as one batch, exactly once.

The threshold is forced small through the CDK context (`extract_partition_rows`), so the deployment these tests
run is the synthesized stack with that setting, as it would be deployed: sales_order, payment, transaction and the
other tables above the threshold are read in key ranges by the inner Map of pipeline.asl.json; the small ones as
usual.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lambdas.common.db import connect
from lambdas.common.errors import TransientError
from lambdas.common.keys import head_key, manifest_key
from lambdas.common.lake import BatchLog, Bucket
from lambdas.extract import handler as extract
from lambdas.extract.extractor import extract_table
from lambdas.extract.partitioned import ACTION_COMMIT, ACTION_RANGE, key_quantiles, key_ranges
from statemachine import definition
from statemachine.local import runner
from statemachine.local.deployment import Deployment, synthesized_deployment
from tests.conftest import Databases, as_admin

TABLE = "sales_order"
PARTITION_ROWS = 200  # sales_order at scale 0.05 has about 600 rows: three ranges or more
Handler = Callable[[dict[str, Any], Any], dict[str, object]]


@pytest.fixture(scope="module")
def partitioning() -> Deployment:
    return synthesized_deployment(context={"extract_partition_rows": PARTITION_ROWS})


@pytest.fixture
def small(reader: Databases, partitioning: Deployment) -> Databases:
    """Sample data at scale 0.05, read through a role that may only SELECT (the estimate and the quantiles too)."""
    reader.deployment = partitioning
    return reader


def run_with(db: Databases, handler: Handler | None = None, **execution_input: Any) -> runner.RunOutcome:
    return runner.run(source=db.source, warehouse=db.warehouse, lake_dir=db.lake, execution_input=execution_input,
                      deployment=db.deployment, handlers={"totesys-extract": handler} if handler else None)  # fmt: skip


def calls(outcome: runner.RunOutcome, table: str = TABLE) -> list[runner.Invocation]:
    return [i for i in outcome.invocations if i.stage == "extract" and i.table == table]


def lake_object(db: Databases, key: str) -> Any:
    path = db.lake / runner.INGESTION_BUCKET / key
    return json.loads(path.read_text()) if path.exists() else None


def extracted_versions(db: Databases, table: str = TABLE) -> list[tuple[int, Any]]:
    """Every (key, last_updated) the committed extract batches of `table` hold, one entry per row."""
    head = lake_object(db, head_key("extract", table))
    found: list[tuple[int, Any]] = []
    for seq in range(head["base"], head["seq"] + 1):
        for part in lake_object(db, manifest_key(table, seq))["parts"]:
            rows = pq.read_table(db.lake / runner.INGESTION_BUCKET / part)
            found += list(zip(rows[f"{table}_id"].to_pylist(), rows["last_updated"].to_pylist(), strict=True))
    return found


def warehouse_snapshot(db: Databases) -> dict[str, int]:
    tables = ("fact_sales_order", "fact_payment", "dim_transaction", "dim_location")
    return {t: db.warehouse_sql(f"SELECT count(*) FROM {t}")[0][0] for t in tables}


def failing(when: Callable[[dict[str, Any]], bool], error: Exception, *, after: bool = False) -> Handler:
    """The extract function, raising `error` for the invocations `when` picks: before its work, or after it (the
    process died once the range had written everything, before it could answer)."""

    def handler(event: dict[str, Any], context: Any) -> dict[str, object]:
        if not when(event):
            return extract.handler(event, context)
        if after:
            extract.handler(event, context)
        raise error

    return handler


def is_range(part: int, table: str = TABLE) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("table") == table and e.get("action") == ACTION_RANGE and e["range"]["range"] == part


def lambda_error(name: str) -> Exception:
    return type(name, (Exception,), {})(f"{name} injected for {TABLE}")


def test_key_ranges_hold_every_int8_key_once() -> None:
    ranges = key_ranges(1, 1000, 4)
    assert ranges[0][0] == -(2**63) and ranges[-1][1] == 2**63 - 1
    assert all(high + 1 == low for (_, high), (low, _) in itertools.pairwise(ranges))
    assert [r[1] for r in ranges[:-1]] == [250, 500, 750]
    assert key_ranges(5, 6, 10) == [(-(2**63), 5), (6, 2**63 - 1)]  # never more ranges than keys


def test_ranges_cut_at_the_key_quantiles_hold_about_as_many_rows_each_however_the_keys_cluster(
    databases: Databases,
) -> None:
    con = databases.source_con()
    try:
        con.run("CREATE TABLE skewed (id int8 PRIMARY KEY)")
        con.run("INSERT INTO skewed SELECT g FROM generate_series(1, 1000) g UNION ALL SELECT 1000000000000")
        con.run("ANALYZE skewed")
        low, high = con.run("SELECT min(id), max(id) FROM skewed")[0]
        ranges = key_ranges(low, high, 4, key_quantiles(con, "skewed", "id"))
        held = [
            con.run("SELECT count(*) FROM skewed WHERE id BETWEEN :lo AND :hi", lo=lo, hi=hi)[0][0] for lo, hi in ranges
        ]
    finally:
        con.close()
    assert sum(held) == 1001 and len(held) == 4
    assert max(held) <= 300, held  # equal widths would put 1,000 of the 1,001 keys in the first range
    assert key_ranges(low, high, 4)[0][1] > 1000  # which is what they do


def test_the_commit_counts_a_part_s_rows_from_its_parquet_footer_alone() -> None:
    from moto import mock_aws

    with mock_aws():
        import boto3

        s3 = boto3.client("s3", region_name="eu-west-2")
        s3.create_bucket(Bucket="footer-test", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        bucket = Bucket("footer-test", s3)
        bucket.put_parquet("t.parquet", pa.table({"x": list(range(12345)), "y": ["z" * 20] * 12345}))
        assert bucket.parquet_rows("t.parquet") == 12345
        assert bucket.parquet_rows("t.parquet", tail=64) == 12345  # a footer longer than the first read


def test_a_partitioned_first_extract_loads_exactly_what_the_source_holds(small: Databases) -> None:
    outcome = run_with(small)

    assert outcome.succeeded, outcome
    plan, result = calls(outcome)[0].result, calls(outcome)[-1].result
    rows = small.source_sql(f"SELECT count(*) FROM {TABLE}")[0][0]
    assert plan["status"] == "partitioned" and len(plan["ranges"]) == -(-rows // PARTITION_ROWS) >= 3
    steps = [i.step for i in calls(outcome)]
    assert steps[0] == "" and steps[-1] == ACTION_COMMIT
    assert sorted(steps[1:-1]) == [f"range {n}" for n in range(len(plan["ranges"]))]
    assert result["status"] == "succeeded" and result["rows"] == rows and result["ranges"] == len(plan["ranges"])
    assert [i.step for i in calls(outcome, "currency")] == [""]  # a small table is read as usual
    assert small.differences() == {}
    versions = extracted_versions(small)
    assert len(versions) == len(set(versions)) == rows

    second = run_with(small)

    assert second.succeeded, second
    assert {i.table: i.result["rows"] for i in second.invocations if i.stage == "extract"}[TABLE] == 0
    assert [i.step for i in calls(second)] == [""]  # an incremental window is never partitioned
    assert small.differences() == {}


def test_a_process_that_dies_after_some_ranges_wrote_leaves_no_batch_and_the_rerun_is_exact(small: Databases) -> None:
    crashed = run_with(small, failing(is_range(1), lambda_error("Runtime.ExitError"), after=True))

    assert crashed.status == "FAILED", crashed
    failed = json.loads(crashed.cause)["failed_tables"]
    assert ("extract", TABLE, "failed") in [(f["stage"], f["table"], f["status"]) for f in failed]
    head = lake_object(small, head_key("extract", TABLE))
    assert head["seq"] == 0 and not head.get("watermark")  # the plan created the log's head, nothing more
    assert lake_object(small, manifest_key(TABLE, 1)) is None  # ranges wrote parts, no manifest names them
    assert any((small.lake / runner.INGESTION_BUCKET / TABLE / f"{1:010d}").glob("part-*.parquet"))
    assert small.warehouse_sql("SELECT count(*) FROM fact_sales_order") == [[0]]
    rerun_input = json.loads(crashed.cause)["rerun_input"]
    assert TABLE in rerun_input["tables"]

    rerun = run_with(small, **rerun_input)

    assert rerun.succeeded, rerun
    rows = small.source_sql(f"SELECT count(*) FROM {TABLE}")[0][0]
    versions = extracted_versions(small)
    assert len(versions) == len(set(versions)) == rows  # the dead plan's parts are in no batch
    assert small.differences() == {}


def test_a_range_and_a_commit_retried_after_their_work_was_done_take_each_row_once(small: Databases) -> None:
    """Their answers are lost (Lambda.ServiceException, retried): range 1 is read again into new parts and only the
    second attempt's are in the batch; the commit finds its own head and says the same again."""
    lost = {"range 1": 1, ACTION_COMMIT: 1}
    lock = threading.Lock()

    def handler(event: dict[str, Any], context: Any) -> dict[str, object]:
        result = extract.handler(event, context)
        step = runner.step_of(event) if event.get("table") == TABLE else ""
        with lock:
            if lost.get(step):
                lost[step] -= 1
                raise lambda_error("Lambda.ServiceException")
        return result

    outcome = run_with(small, handler)

    assert outcome.succeeded, outcome
    assert [i.ok for i in calls(outcome) if i.step in ("range 1", ACTION_COMMIT)].count(False) == 2
    rows = small.source_sql(f"SELECT count(*) FROM {TABLE}")[0][0]
    versions = extracted_versions(small)
    assert len(versions) == len(set(versions)) == rows
    batch = small.lake / runner.INGESTION_BUCKET / TABLE / f"{1:010d}"
    attempts = {p.name.split("-")[3] for p in batch.glob("part-*-r0001-*.parquet")}
    named = {
        p.split("/")[-1].split("-")[3] for p in lake_object(small, manifest_key(TABLE, 1))["parts"] if "-r0001-" in p
    }
    assert len(attempts) == 2 and len(named) == 1  # the first attempt's parts are left, in no manifest
    assert calls(outcome)[-1].result == {**calls(outcome)[-1].result, "batch": 1, "rows": rows}
    assert lake_object(small, head_key("extract", TABLE))["seq"] == 1
    assert small.differences() == {}


def test_a_range_that_keeps_failing_leaves_the_head_and_warehouse_as_they_were(small: Databases) -> None:
    assert run_with(small).succeeded
    head_before = lake_object(small, head_key("extract", TABLE))
    warehouse_before = warehouse_snapshot(small)

    failed = run_with(small, failing(is_range(0), TransientError("totesys: connection lost")), tables=[TABLE],
                      full_refresh=True)  # fmt: skip

    assert failed.status == "FAILED" and failed.error == "TablesFailed", failed
    ranges = definition.load(name=definition.STAGES)["States"]["Extract source tables"]["ItemProcessor"]["States"][
        "Extract key ranges"
    ]
    retry = next(r for r in ranges["ItemProcessor"]["States"]["Extract key range"]["Retry"]
                 if "TransientError" in r["ErrorEquals"])  # fmt: skip
    attempts = [i for i in calls(failed) if i.step == "range 0"]
    assert [i.ok for i in attempts] == [False] * (1 + retry["MaxAttempts"])
    assert not [i for i in calls(failed) if i.step == ACTION_COMMIT]
    cause = json.loads(failed.cause)
    extracts = [f for f in cause["failed_tables"] if f["stage"] == "extract"]
    assert [(f["table"], f["status"]) for f in extracts] == [(TABLE, "failed")]
    assert "connection lost" in extracts[0]["message"]
    assert TABLE in cause["rerun_input"]["tables"] and cause["rerun_input"]["full_refresh"] is True
    assert lake_object(small, head_key("extract", TABLE)) == head_before
    assert warehouse_snapshot(small) == warehouse_before

    rerun = run_with(small, tables=[TABLE], full_refresh=True)

    assert rerun.succeeded, rerun
    assert small.differences() == {}
    refreshed = lake_object(small, manifest_key(TABLE, head_before["seq"] + 1))
    assert refreshed["rows"] == small.source_sql(f"SELECT count(*) FROM {TABLE}")[0][0]


def test_changes_committed_while_the_ranges_run_are_extracted_exactly_once(small: Databases) -> None:
    """Without a lookback, so that only the watermark's bound by the ranges' clocks can save the first change: it
    commits after range 0 has read, and is older than the second change, which the last range reads."""
    small.deployment = small.deployment.with_environment("extract", EXTRACT_LOOKBACK_SECONDS="0")
    first, last = small.source_sql(f"SELECT min({TABLE}_id), max({TABLE}_id) FROM {TABLE}")[0]
    changed = threading.Event()

    def change(key: int) -> None:
        as_admin(small, f"UPDATE {TABLE} SET units_sold = units_sold + 1, last_updated = clock_timestamp() "
                 f"WHERE {TABLE}_id = :key", key=key)  # fmt: skip

    def handler(event: dict[str, Any], context: Any) -> dict[str, object]:
        if event.get("action") == ACTION_RANGE and event["range"]["high"] is None:
            assert changed.wait(60)  # the last range reads after both changes
        result = extract.handler(event, context)
        if is_range(0)(event):  # range 0 has read: the first change is behind it, the second ahead of the last
            change(first)
            change(last)
            changed.set()
        return result

    during = run_with(small, handler)

    assert during.succeeded, during
    in_batch = set(extracted_versions(small))
    stamps = dict(small.source_sql(f"SELECT {TABLE}_id, last_updated FROM {TABLE} WHERE {TABLE}_id IN (:a, :b)",
                                   a=first, b=last))  # fmt: skip
    assert (first, stamps[first]) not in in_batch and (last, stamps[last]) in in_batch

    after = run_with(small)

    assert after.succeeded, after
    versions = extracted_versions(small)
    assert len(versions) == len(set(versions)), "a version was extracted twice"
    assert (first, stamps[first]) in versions, "a change committed during the partitioned read was lost"
    assert small.differences() == {}
    # nothing is left to extract: the plan skips the table, or its extract finds no row
    assert sum(i.result["rows"] for i in run_with(small).invocations if i.stage == "extract" and i.table == TABLE) == 0


def test_a_head_that_moved_between_plan_and_commit_fails_loudly_and_is_not_overwritten(small: Databases) -> None:
    interloper: dict[str, Any] = {}

    def handler(event: dict[str, Any], context: Any) -> dict[str, object]:
        if event.get("table") == TABLE and event.get("action") == ACTION_COMMIT:
            # another extract of the table commits between the plan and its commit (what the run lease prevents)
            con = connect(small.source)
            try:
                log = BatchLog(Bucket(runner.INGESTION_BUCKET), "extract", TABLE)
                interloper.update(extract_table(con, log).as_dict())
            finally:
                con.close()
        return extract.handler(event, context)

    outcome = run_with(small, handler)

    assert outcome.status == "FAILED", outcome
    failure = next(f for f in json.loads(outcome.cause)["failed_tables"] if f["table"] == TABLE)
    assert failure["stage"] == "extract"
    plan = calls(outcome)[0].result["plan"]
    assert "moved since the plan" in failure["message"]
    assert f"s3://{runner.INGESTION_BUCKET}/{head_key('extract', TABLE)}" in failure["message"]
    assert plan in failure["message"]
    head = lake_object(small, head_key("extract", TABLE))
    assert head["seq"] == interloper["batch"] == 1
    assert lake_object(small, manifest_key(TABLE, 1))["meta"].get("partitioned") is None  # the interloper's batch


def test_a_partitioned_repair_of_a_lost_head_starts_a_new_epoch_holding_the_whole_table(small: Databases) -> None:
    assert run_with(small).succeeded
    before = lake_object(small, head_key("extract", TABLE))
    (small.lake / runner.INGESTION_BUCKET / head_key("extract", TABLE)).unlink()  # state that cannot be believed

    repaired = run_with(small, tables=[TABLE], repair=True)

    assert repaired.succeeded, repaired
    assert [i.step for i in calls(repaired)][-1] == ACTION_COMMIT
    head = lake_object(small, head_key("extract", TABLE))
    assert head["log"] != before["log"] and head["rebuilt"] is True and head["base"] == head["seq"] == before["seq"] + 1
    rows = small.source_sql(f"SELECT count(*) FROM {TABLE}")[0][0]
    assert lake_object(small, manifest_key(TABLE, head["seq"]))["rows"] == rows
    assert small.differences() == {}
