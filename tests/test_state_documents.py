"""State documents carry a format version: what an earlier release wrote is read and upgraded, never refused and never
in need of a repair; what a newer release wrote is refused, naming the object and both formats; a damaged one fails
with the error its readers always raised (the state machine's Catch rules and the report match the name), naming
the object and the field.

The format-1 documents in tests/fixtures/state_v1/ are real bytes: captured from a local run of the code before
formats existed (partitioned extracts, held rows, a repair and a reconciliation), not written by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from lambdas.common.documents import (
    CURRENT_FORMAT,
    CheckpointDocument,
    Document,
    HeadDocument,
    LoadCursorDocument,
    ManifestDocument,
    NewerFormatError,
)
from lambdas.common.errors import PipelineError, StateError
from lambdas.common.keys import head_key, manifest_key
from lambdas.common.lake import BatchLog, Bucket, Head, ReaderState
from lambdas.extract.extractor import checked_head
from lambdas.extract.partitioned import read_plan
from lambdas.extract.plan import Plan, PlanResult, RangeManifest
from lambdas.extract.watermark import Watermark
from lambdas.load import held
from statemachine.local import runner
from tests.conftest import Databases

FIXTURES = Path(__file__).parent / "fixtures" / "state_v1"
# fixture -> (its model, where a reader finds it: bucket-relative key, or None for a nested entry)
DOCUMENTS: dict[str, type[Document]] = {
    "extract_head": HeadDocument,
    "extract_head_repaired": HeadDocument,
    "transform_head": HeadDocument,
    "manifest_partitioned": ManifestDocument,
    "manifest_incremental": ManifestDocument,
    "load_cursor_held": LoadCursorDocument,
    "load_cursor_dimension": LoadCursorDocument,
    "reconcile_checkpoint": CheckpointDocument,
    "verify_checkpoint": CheckpointDocument,
    "plan": Plan,
    "range_manifest": RangeManifest,
}


def written_by_main(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def refuse(problem: str) -> StateError:
    return StateError(problem, tables=["sales_order"])


@pytest.fixture
def bucket() -> Iterator[Bucket]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-2")
        s3.create_bucket(Bucket="documents", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        yield Bucket("documents", s3)


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_every_document_main_writes_today_is_read_as_format_1_and_written_back_as_the_current_format_losing_nothing(
    name: str,
) -> None:
    raw = written_by_main(name)
    assert "format" not in raw  # what main writes: no format, i.e. format 1

    document = DOCUMENTS[name].load(raw, where=name, fail=refuse)
    written = document.dump()

    assert written["format"] == CURRENT_FORMAT == 2
    assert {k: v for k, v in written.items() if k != "format"} == raw
    assert DOCUMENTS[name].load(json.loads(json.dumps(written)), where=name, fail=refuse) == document


def test_the_readers_take_main_s_heads_manifests_and_cursors_as_they_are(bucket: Bucket) -> None:
    head = written_by_main("extract_head")
    bucket.put_json(head_key("extract", "sales_order"), head)
    bucket.put_json(manifest_key("sales_order", 1), written_by_main("manifest_partitioned"))
    log = BatchLog(bucket, "extract", "sales_order")

    found = log.head()
    batch = log.manifest(1, head["log"])
    watermark = Watermark.from_state(found.state)

    assert (found.seq, found.log, found.base, found.last, found.rebuilt) == (2, head["log"], 1, head["last"], False)
    assert found.state["signal"] == head["signal"] and found.state["source"] == head["source"]
    assert "format" not in found.state  # the change signal's digest of the state is the same as before
    assert (batch.rows, batch.part_rows, batch.prev) == (560, (187, 186, 187), None)
    assert watermark.value is not None and watermark.value.isoformat() == head["watermark"]
    assert watermark.to_state() == {"watermark": head["watermark"], "seen": head["seen"]}

    log.commit(found, None, found.state)  # the next write upgrades it
    stored = bucket.get_json(head_key("extract", "sales_order"))
    assert stored == {**head, "format": CURRENT_FORMAT}


def test_the_load_cursor_with_held_rows_and_the_checkpoints_main_wrote_are_read_as_before(bucket: Bucket) -> None:
    for stage, table, name in (("load", "fact_sales_order", "load_cursor_held"),
                               ("reconcile", "sales_order", "reconcile_checkpoint"),
                               ("verify", "fact_sales_order", "verify_checkpoint")):  # fmt: skip
        bucket.put_json(head_key(stage, table), written_by_main(name))
        state = ReaderState(bucket, stage, table)

        assert state.read() == written_by_main(name)

        state.commit(written_by_main(name))
        assert bucket.get_json(head_key(stage, table)) == {**written_by_main(name), "format": CURRENT_FORMAT}

    entry = held.entry(written_by_main("load_cursor_held"))
    assert entry is not None and entry.format == held.FORMAT and held.is_typed(written_by_main("load_cursor_held"))
    earlier = {"held": {"key": "_held/fact_sales_order/0000000001-aaaa.parquet", "rows": 2}}  # before issue 20
    assert not held.is_typed(earlier)  # the load migrates its rows (test_held_text.py)


def test_main_s_plan_is_read_by_the_partitioned_extract(bucket: Bucket) -> None:
    raw = written_by_main("plan")
    key = f"sales_order/0000000001/_plan-{raw['token']}.json"
    bucket.put_json(key, raw)

    plan = read_plan(BatchLog(bucket, "extract", "sales_order"), key)

    assert plan.object_key == key and plan.ranges[0] == (-(2**63), 187) and plan.ranges[-1][1] == 2**63 - 1
    assert plan.clock.isoformat() == raw["clock"] and plan.prev is None and plan.lookback_seconds == 900.0


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_a_document_from_a_newer_release_is_refused_naming_it_and_both_formats(name: str) -> None:
    newer = {**written_by_main(name), "format": CURRENT_FORMAT + 1}

    with pytest.raises(NewerFormatError) as refused:
        DOCUMENTS[name].load(newer, where=f"s3://lake/{name}.json", fail=refuse)

    message = str(refused.value)
    assert "\n" not in message
    assert f"s3://lake/{name}.json is in format {CURRENT_FORMAT + 1}" in message
    assert f"reads formats up to {CURRENT_FORMAT}" in message
    assert not isinstance(refused.value, StateError)  # not damaged: a repair is not the fix, and none is suggested


def test_the_readers_refuse_a_newer_head_manifest_load_cursor_checkpoint_and_plan(bucket: Bucket) -> None:
    def newer(name: str) -> dict[str, Any]:
        return {**written_by_main(name), "format": CURRENT_FORMAT + 1}

    log = BatchLog(bucket, "extract", "sales_order")
    bucket.put_json(head_key("extract", "sales_order"), newer("extract_head"))
    with pytest.raises(NewerFormatError, match=r"_state/extract/sales_order\.json is in format 3"):
        log.head()
    bucket.put_json(head_key("extract", "sales_order"), written_by_main("extract_head"))
    bucket.put_json(manifest_key("sales_order", 1), newer("manifest_partitioned"))
    with pytest.raises(NewerFormatError, match=r"sales_order/0000000001/_manifest\.json is in format 3"):
        log.manifest(1, written_by_main("extract_head")["log"])
    for stage, name in (("load", "load_cursor_held"), ("reconcile", "reconcile_checkpoint")):
        bucket.put_json(head_key(stage, "sales_order"), newer(name))
        with pytest.raises(NewerFormatError, match=rf"_state/{stage}/sales_order\.json is in format 3"):
            ReaderState(bucket, stage, "sales_order").read()  # a checkpoint too: never ignored, then overwritten
    plan = newer("plan")
    key = f"sales_order/0000000001/_plan-{plan['token']}.json"
    bucket.put_json(key, plan)
    with pytest.raises(NewerFormatError, match="is in format 3"):
        read_plan(log, key)
    with pytest.raises(NewerFormatError, match=r"the held set _held/x\.parquet is in format 3"):
        held.entry({"held": {"key": "_held/x.parquet", "rows": 1, "format": 3}})


def test_a_damaged_head_or_manifest_fails_as_a_state_error_naming_the_object_and_the_field(bucket: Bucket) -> None:
    log = BatchLog(bucket, "extract", "sales_order")
    head = written_by_main("extract_head")
    for damaged, field in (({**head, "seq": "2"}, "'seq'"), ({**head, "base": 7}, "epoch starts at batch 7"),
                           ({k: v for k, v in head.items() if k != "log"}, "field 'log' is missing"),
                           ({**head, "format": "2"}, "field 'format'")):  # fmt: skip
        bucket.put_json(head_key("extract", "sales_order"), damaged)
        with pytest.raises(StateError) as failed:
            log.head()
        message = str(failed.value)
        assert f"s3://documents/{head_key('extract', 'sales_order')}" in message and field in message, message
        assert "\n" not in message and "repair --tables sales_order" in message

    bucket.put_json(head_key("extract", "sales_order"), head)
    manifest = written_by_main("manifest_partitioned")
    bucket.put_json(manifest_key("sales_order", 1), {k: v for k, v in manifest.items() if k != "part_rows"})
    with pytest.raises(StateError, match=r"_manifest\.json: field 'part_rows' is missing"):
        log.manifest(1, head["log"])

    bucket.put_json(head_key("extract", "sales_order"), {**head, "seen": {"key": ["x"], "last_updated": [None]}})
    unreadable = r"_state/extract/sales_order\.json is unreadable \(ValueError\(\"field 'seen.key.0'"
    with pytest.raises(StateError, match=unreadable):
        checked_head(log, head["source"])


def test_a_damaged_load_cursor_fails_naming_the_field_and_a_damaged_checkpoint_is_ignored(bucket: Bucket) -> None:
    cursor = written_by_main("load_cursor_held")
    bucket.put_json(head_key("load", "fact_sales_order"), {**cursor, "held": {"key": 7}})
    with pytest.raises(StateError, match=r"_state/load/fact_sales_order\.json: field 'held.key'"):
        ReaderState(bucket, "load", "fact_sales_order").read()
    bucket.put_json(head_key("load", "fact_sales_order"), {**cursor, "cursor": {"seq": "2", "log": "x"}})
    with pytest.raises(StateError, match=r"field 'cursor.seq'"):
        ReaderState(bucket, "load", "fact_sales_order").read()

    bucket.put_json(head_key("verify", "fact_sales_order"), {**written_by_main("verify_checkpoint"), "cursor": 3})
    assert ReaderState(bucket, "verify", "fact_sales_order").read() is None  # it only saved hashing


def test_a_damaged_plan_fails_as_a_pipeline_error_naming_the_object_and_the_field(bucket: Bucket) -> None:
    raw = written_by_main("plan")
    key = f"sales_order/0000000001/_plan-{raw['token']}.json"
    bucket.put_json(key, {**raw, "clock": "yesterday"})

    with pytest.raises(PipelineError, match=rf"the plan s3://documents/{key}: field 'clock'"):
        read_plan(BatchLog(bucket, "extract", "sales_order"), key)


def test_a_plan_result_shows_every_range_with_its_bounds() -> None:
    plan = "sales_order/0000000001/_plan-1ff78bc1d3c04cf5.json"
    shown = PlanResult(table="t", stage="extract", plan=plan, batch=1, rows_estimated=9, ranges=[{"range": 0}])
    assert shown.model_dump()["ranges"] == [{"range": 0, "low": None, "high": None}]


def test_a_new_log_s_head_is_written_in_the_current_format(bucket: Bucket) -> None:
    log = BatchLog(bucket, "transform", "dim_location")
    log.create(Head())
    assert bucket.get_json(head_key("transform", "dim_location"))["format"] == CURRENT_FORMAT


def strip_formats(lake: Path) -> int:
    """Every state document of the lake made as main writes it: no format field (format 1)."""
    count = 0
    for path in lake.rglob("*.json"):
        raw = json.loads(path.read_text())
        if isinstance(raw, dict) and "format" in raw:
            raw.pop("format")
            path.write_text(json.dumps(raw, indent=1, sort_keys=True))
            count += 1
    return count


def test_a_lake_written_before_formats_existed_runs_on_without_a_repair_and_is_upgraded_as_it_is_written(
    databases: Databases,
) -> None:
    db = databases.seed(scale=0.05)
    assert db.run().succeeded
    assert strip_formats(db.lake) > 40  # heads, manifests, cursors of 11 source and 11 warehouse tables
    db.source_sql("UPDATE sales_order SET units_sold = units_sold + 1, last_updated = now() WHERE sales_order_id <= 3")

    outcome = db.run()

    assert outcome.succeeded, outcome
    assert db.differences() == {}
    for bucket, key in ((runner.INGESTION_BUCKET, head_key("extract", "sales_order")),
                        (runner.PROCESSED_BUCKET, head_key("transform", "fact_sales_order")),
                        (runner.PROCESSED_BUCKET, head_key("load", "fact_sales_order"))):  # fmt: skip
        assert json.loads((db.lake / bucket / key).read_text())["format"] == CURRENT_FORMAT, key
    assert db.run(reconcile=True).succeeded


def test_the_run_lease_main_writes_is_read_and_a_newer_one_refused() -> None:
    from lambdas.lease.lease import Lease

    # main's _lease_body, byte for byte: json.dumps of the holder and two isoformat() times
    body = (b'{"holder": "arn:aws:states:eu-west-2:123456789012:execution:totesys:run-1", "acquired_at": '
            b'"2026-12-01T17:32:16.202525+00:00", "expires_at": "2026-12-01T18:32:16.202525+00:00"}')  # fmt: skip

    lease = Lease.parse(body, "lake")

    assert lease.holder.endswith(":run-1") and lease.expires_at.isoformat() == "2026-12-01T18:32:16.202525+00:00"
    assert Lease.parse(json.dumps(lease.dump()).encode(), "lake") == lease
    with pytest.raises(NewerFormatError, match=r"the run lease s3://lake/_state/run-lease\.json is in format 3"):
        Lease.parse(json.dumps({**lease.dump(), "format": 3}).encode(), "lake")
    with pytest.raises(PipelineError, match="field 'expires_at' is missing"):
        Lease.parse(b'{"holder": "x", "acquired_at": "2026-12-01T17:32:16+00:00"}', "lake")
