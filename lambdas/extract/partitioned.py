"""Tables larger than one Lambda: a whole-table read split into key ranges, committed as one batch.

Here are the three steps and why they extract every version exactly once. What they store and receive (the plan,
the range manifests, the events) is lambdas/extract/plan.py; how a table is cut into ranges of about equal rows is
lambdas/extract/ranges.py.

One invocation must finish inside Lambda's 15 minutes. A whole-table read (a table's first extract, a
`full_refresh`, a `repair`) of a table whose estimated rows exceed `EXTRACT_PARTITION_ROWS` is therefore done in
three steps, each its own invocation of the extract function (statemachine/pipeline.asl.json):

1. **plan** (the usual "Extract table" task): fixes the batch it will become (seq = head.seq + 1, or the first
   batch of a new epoch for a repair), a random plan token, the source's clock P and columns, and the primary-key
   ranges, and writes them as `_plan-<token>.json` inside that batch. It returns the ranges, never rows. Incremental
   windows are never partitioned: they hold the rows changed since the watermark, minutes of the application's
   writes, far below one invocation's capacity.
2. **extract_range** (an inner Map, one iteration per range): reads its key interval, with every column, in its own
   REPEATABLE READ snapshot with clock C_i, and writes parts named by the plan token, the range and a new attempt id,
   then the versions it read near the watermark-to-be, and last its range manifest. A retry writes new parts and
   replaces only its own range manifest, which names exactly one attempt's objects.
3. **commit**: checks that the head is still where the plan found it and that every range manifest exists and its
   parts hold the rows it says, then writes the batch manifest over all ranges' parts and, last, the head with the
   watermark. Until then nothing downstream can see any of it; a plan that never commits leaves objects that no
   manifest names (a later plan uses another token); the table's lifecycle rule expires them only where data
   expires (`data_expiration_days`), so they cost storage until then (docs/operations.md).

Exactly once, across ranges read in different snapshots. The commit takes the watermark
W = min(newest last_updated read by any range, min_i C_i) and remembers as seen every version read with
last_updated >= W - lookback. The next incremental window reads last_updated >= W - lookback and drops the seen
versions. Take any version v (key k, last_updated t) whose transaction commits at c, with c - t <= lookback (the
lookback guarantee, lambdas/extract/watermark.py), and let i be the range holding k (the ranges cover every key,
from the smallest int8 to the largest, so rows inserted during the read have a range too):
- v visible to range i's snapshot: v is in this batch. If t >= W - lookback it is in the seen set, so the next
  window, which re-reads it, drops it; if t < W - lookback the next window does not read it. Once.
- v not visible to range i's snapshot: it committed after that snapshot began, so c > C_i >= min_j C_j >= W, hence
  t >= c - lookback > W - lookback: the next window reads it, and it is not in the seen set (only versions read
  are). Once, in the next incremental run.
W is never later than the newest row read, which the incremental check (extractor.check_window) relies on, and
never later than any range's clock (extractor.check_watermark). Each range does not know W, only a lower bound:
W >= min(its own newest last_updated, P) since every C_i >= P; it keeps the versions from that bound minus the
lookback, a superset the commit filters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pg8000.native
import pyarrow as pa
import pyarrow.compute as pc
from botocore.exceptions import ClientError

from lambdas.common.db import database_identity
from lambdas.common.documents import ManifestDocument
from lambdas.common.errors import PipelineError, StateError
from lambdas.common.keys import (
    batch_prefix,
    manifest_key,
    new_id,
    range_manifest_key,
    range_part_key,
    range_versions_key,
    table_prefix,
)
from lambdas.common.lake import BatchLog, Head
from lambdas.common.settings import ExtractTuning
from lambdas.common.tables import PRIMARY_KEYS, require_source_table
from lambdas.extract.extractor import STAGE, ExtractResult, in_parts, starting_head
from lambdas.extract.plan import (
    ACTION_COMMIT,
    ACTION_RANGE,
    INT8,
    PARTITIONED,
    RANGE_EXTRACTED,
    Plan,
    PlanResult,
    RangeBounds,
    RangeManifest,
)
from lambdas.extract.ranges import estimate_rows, key_quantiles, key_ranges
from lambdas.extract.source import KeyIntervals, changed_rows, snapshot, source_clock, table_columns
from lambdas.extract.watermark import TS, Watermark, advance

# The plan's names, importable from here as before plan.py held them (the handler, the tests).
__all__ = ["ACTION_COMMIT", "ACTION_RANGE", "PARTITIONED", "RANGE_EXTRACTED", "Plan", "PlanResult", "commit_plan",
           "extract_range", "key_quantiles", "key_ranges", "plan_extract"]  # fmt: skip

# Rows one range reads, and its variable: lambdas/common/settings.py ExtractTuning says how it was chosen.
PARTITION_ROWS_ENV = ExtractTuning.variable("partition_rows")
DEFAULT_PARTITION_ROWS = ExtractTuning.default("partition_rows")
# The ranges travel in the state machine's payload (256 KiB at most): a larger table gets wider ranges, not more.
MAX_RANGES = 64


def read_plan(log: BatchLog, key: str) -> Plan:
    """The plan the state machine names, validated, and checked to be this table's plan."""
    if not key.startswith(table_prefix(log.table)) or "/_plan-" not in key:
        raise PipelineError(f"{key!r} is not a plan of {log.table}'s partitioned extract")
    where = f"the plan {log.bucket.uri(key)}"
    raw = log.bucket.get_json(key)
    if raw is None:
        raise PipelineError(f"{where} of {log.table}'s partitioned extract is missing")
    plan = Plan.load(raw, where=where, fail=PipelineError)
    if plan.table != log.table or plan.object_key != key:
        raise PipelineError(f"{where} describes {plan.table!r} batch {plan.seq}")
    return plan


def epoch_head(plan: Plan) -> Head:
    """A repair's new epoch, as the plan started it (stored by the commit, with its first batch)."""
    return Head(plan.seq - 1, plan.log, plan.seq, None, True, {"source": plan.identity})


def plan_extract(
    con: pg8000.native.Connection,
    log: BatchLog,
    *,
    full_refresh: bool = False,
    repair: bool = False,
    lookback: timedelta = timedelta(minutes=15),
    rows_per_range: int = DEFAULT_PARTITION_ROWS,
) -> dict[str, Any] | None:
    """The plan of a partitioned whole-table read, or None when the table is read in one invocation as usual (an
    incremental window, a threshold of 0, or a table estimated at no more than one range)."""
    if rows_per_range <= 0:
        return None
    table = require_source_table(log.table)
    key = PRIMARY_KEYS[table]
    head, previous, identity = starting_head(con, log, repair=repair)
    if previous.value is not None and not full_refresh:
        return None  # an incremental window
    if not repair:
        log.check_not_behind(head)
    with snapshot(con):
        clock = source_clock(con)
        columns = table_columns(con, table)
        if key not in {c.name for c in columns}:
            return None  # extract_table names the missing key
        estimate, low, high = estimate_rows(con, table, key)
        quantiles = key_quantiles(con, table, key)
    if low is None or high is None or estimate <= rows_per_range:
        return None
    ranges = key_ranges(low, high, min(MAX_RANGES, math.ceil(estimate / rows_per_range)), quantiles)
    if len(ranges) < 2:
        return None
    if not head.rebuilt:
        log.create(head)  # a log's head exists before any of its batches' objects (lake.py)
    signature = [[c.name, c.pg_type] for c in columns]
    plan = Plan(table=table, seq=head.seq + 1, token=new_id(), log=head.log, base=head.base, prev=head.last,
                rebuilt=head.rebuilt, full_refresh=full_refresh, clock=clock, key=key, columns=signature,
                ranges=ranges, identity=identity, lookback_seconds=lookback.total_seconds(),
                rows_estimated=estimate)  # fmt: skip
    log.bucket.put_json(plan.object_key, plan.dump())
    # the bounds are for the console (None: open); each range reads its bounds from the plan object
    shown = [RangeBounds(range=n, low=None if lo == INT8[0] else lo, high=None if hi == INT8[1] else hi)
             for n, (lo, hi) in enumerate(ranges)]  # fmt: skip
    return PlanResult(table=table, stage=STAGE, plan=plan.object_key, batch=plan.seq, rows_estimated=estimate,
                      ranges=shown).model_dump()  # fmt: skip


def extract_range(
    con: pg8000.native.Connection, log: BatchLog, plan_object: str, part: int, *, part_rows: int = 500_000
) -> dict[str, Any]:
    """Read one key range of a plan in its own snapshot and write its parts, its versions and its range manifest."""
    plan = read_plan(log, plan_object)
    if not 0 <= part < len(plan.ranges):
        raise PipelineError(f"the plan {log.bucket.uri(plan_object)} has ranges 0 to {len(plan.ranges) - 1}, "
                            f"not {part}")  # fmt: skip
    identity = database_identity(con)
    if identity != plan.identity:
        raise PipelineError(f"the source is not the database the plan {log.bucket.uri(plan_object)} was made on")
    low, high = plan.ranges[part]
    attempt = new_id()
    keys: list[str] = []
    counts: list[int] = []
    versions: list[pa.Table] = []
    with snapshot(con):
        clock = source_clock(con)
        columns = table_columns(con, plan.table)
        if [[c.name, c.pg_type] for c in columns] != plan.columns:
            raise PipelineError(f"{plan.table}: the source's columns changed since the plan "
                                f"{log.bucket.uri(plan_object)} was made; re-run the table for a new plan")  # fmt: skip
        with changed_rows(con, plan.table, columns, None, within=KeyIntervals(plan.key, ((low, high),))) as batches:
            for table in in_parts(batches, part_rows, plan.key, versions):
                key = range_part_key(plan.table, plan.seq, plan.token, part, attempt, len(keys))
                log.bucket.put_parquet(key, table)
                keys.append(key)
                counts.append(table.num_rows)
    read = pa.concat_tables(versions) if versions else Watermark.empty().seen
    newest = pc.max(read["last_updated"]).as_py() if read.num_rows else None
    # W >= min(newest, P): every version the commit may need is at or after that bound less the lookback
    bound = min(newest, plan.clock) - timedelta(seconds=plan.lookback_seconds) if newest else None
    near = read.filter(pc.greater_equal(read["last_updated"], pa.scalar(bound, TS))) if bound else read
    versions_object = range_versions_key(plan.table, plan.seq, plan.token, part, attempt)
    log.bucket.put_parquet(versions_object, near)
    written = RangeManifest(plan=plan.token, range=part, low=low, high=high, clock=clock, newest=newest, parts=keys,
                            part_rows=counts, rows=sum(counts), versions=versions_object,
                            versions_rows=near.num_rows)  # fmt: skip
    log.bucket.put_json(range_manifest_key(plan.table, plan.seq, plan.token, part), written.dump())
    return {"table": plan.table, "stage": STAGE, "status": RANGE_EXTRACTED, "range": part, "rows": sum(counts)}


@dataclass(frozen=True)
class _RangeOutput:
    clock: datetime
    newest: datetime | None
    parts: list[str]
    part_rows: list[int]
    versions: pa.Table


def _range_output(log: BatchLog, plan: Plan, part: int) -> _RangeOutput:
    """A range's manifest and what it names, checked: the rows its parts hold are counted from their footers."""
    key = range_manifest_key(plan.table, plan.seq, plan.token, part)
    where = log.bucket.uri(key)
    raw = log.bucket.get_json(key)
    if raw is None:
        raise PipelineError(f"{plan.table}: key range {part} of the plan {log.bucket.uri(plan.object_key)} has no "
                            f"range manifest ({where}): it never finished; re-run the table")  # fmt: skip
    stored = RangeManifest.load(raw, where=f"{plan.table}: the range manifest {where}", fail=PipelineError)
    prefix = f"{batch_prefix(plan.table, plan.seq)}part-{plan.token}-r{part:04d}-"
    try:
        versions = log.bucket.get_parquet(stored.versions)
    except (ClientError, pa.ArrowException, OSError) as exc:
        raise PipelineError(f"{plan.table}: the range manifest {where} cannot be read ({exc!r})") from exc
    output = _RangeOutput(stored.clock, stored.newest, stored.parts, stored.part_rows, versions)
    fits = (stored.plan == plan.token and stored.range == part and (stored.low, stored.high) == plan.ranges[part]
            and len(output.parts) == len(output.part_rows) and sum(output.part_rows) == stored.rows
            and output.versions.num_rows == stored.versions_rows
            and all(p.startswith(prefix) and p.endswith(".parquet") for p in output.parts))  # fmt: skip
    if not fits:
        raise PipelineError(f"{plan.table}: the range manifest {where} does not describe range {part} of the "
                            f"plan {log.bucket.uri(plan.object_key)} (its plan, bounds, parts or counts "
                            "differ)")  # fmt: skip
    for part_key, rows in zip(output.parts, output.part_rows, strict=True):
        try:
            found = log.bucket.parquet_rows(part_key)
        except (ClientError, pa.ArrowException, OSError) as exc:
            raise PipelineError(f"{plan.table}: {log.bucket.uri(part_key)}, named by {where}, is missing or not "
                                f"Parquet ({exc!r:.200})") from exc  # fmt: skip
        if found != rows:
            raise PipelineError(f"{plan.table}: {log.bucket.uri(part_key)} holds {found} rows; {where} says {rows}")
    return output


def _committed(log: BatchLog, plan: Plan) -> ExtractResult | None:
    """The result of this plan's commit if it already happened (a retried commit must not fail on its own head)."""
    try:
        head = log.head()
    except StateError:
        if plan.rebuilt:
            return None  # the state a repair replaces: its commit writes a head that can be believed
        raise
    if not (head.stored and head.log == plan.log and head.seq == plan.seq and head.last is not None):
        return None
    batch = log.manifest(plan.seq, plan.log)
    if batch.id != head.last or (batch.meta.get(PARTITIONED) or {}).get("plan") != plan.object_key:
        return None
    return ExtractResult(plan.table, batch.rows, batch.seq, head.state.get("watermark"), plan.rebuilt,
                         ranges=len(plan.ranges))  # fmt: skip


def _plan_of(log: BatchLog, seq: int) -> str | None:
    """The plan whose commit wrote the manifest of batch ``seq`` (None: not a partitioned batch)."""
    key = manifest_key(log.table, seq)
    stored = ManifestDocument.load(log.bucket.get_json(key), where=f"the manifest {log.bucket.uri(key)}", fail=log.fail)
    found = (stored.meta or {}).get(PARTITIONED)
    return found.get("plan") if isinstance(found, dict) else None


def _unmoved_head(log: BatchLog, plan: Plan) -> Head:
    """The head the plan's batch follows. It must still be where the plan found it: anything else committed in
    between fails loudly (the plan's batch number would overwrite that batch)."""
    where = f"the plan {log.bucket.uri(plan.object_key)} (batch {plan.seq})"
    if plan.rebuilt:
        written = log.last_written()
        if written == plan.seq - 1:
            return epoch_head(plan)
        if written == plan.seq and _plan_of(log, plan.seq) == plan.object_key:
            return epoch_head(plan)  # this plan's own manifest, from a commit that stopped before the head
        raise PipelineError(f"{plan.table}: batch {written} of the log was written after {where} was made: another "
                            f"extract ran in between; its objects stay unreferenced; re-run the repair")  # fmt: skip
    head = log.head()
    if not head.stored or head.log != plan.log or head.seq != plan.seq - 1 or head.last != plan.prev:
        raise PipelineError(f"{plan.table}: the head {log.head_uri} moved since {where} was made (it was batch "
                            f"{plan.seq - 1} of log {plan.log}, now batch {head.seq} of log {head.log}): another "
                            "extract committed in between; the plan's objects stay unreferenced; re-run the "
                            "table")  # fmt: skip
    if head.state.get("source") != plan.identity:
        raise PipelineError(f"{plan.table}: the head {log.head_uri} now names another source than {where}")
    log.check_not_behind(head)
    return head


def commit_plan(log: BatchLog, plan_object: str) -> ExtractResult:
    """Validate every range's output, then write the batch manifest and, last, the head with the watermark."""
    plan = read_plan(log, plan_object)
    done = _committed(log, plan)
    if done is not None:
        return done
    head = _unmoved_head(log, plan)
    outputs = [_range_output(log, plan, n) for n in range(len(plan.ranges))]
    parts = [key for o in outputs for key in o.parts]
    counts = [n for o in outputs for n in o.part_rows]
    lookback = timedelta(seconds=plan.lookback_seconds)
    earliest = min(o.clock for o in outputs)
    read = pa.concat_tables([o.versions for o in outputs])
    watermark = advance(Watermark.empty(), read, lookback, earliest) if read.num_rows else Watermark.empty()
    state = {"source": plan.identity, **watermark.to_state(), "lookback_seconds": plan.lookback_seconds}
    if not parts:
        if not plan.rebuilt:
            return ExtractResult(plan.table, 0, None, None, ranges=len(plan.ranges))
        log.commit(head, None, state)
        return ExtractResult(plan.table, 0, None, watermark.to_state()["watermark"], True, ranges=len(plan.ranges))
    meta = {"since": None, PARTITIONED: {"plan": plan.object_key, "ranges": len(plan.ranges)},
            **({"repair": True} if plan.rebuilt else {})}  # fmt: skip
    batch = log.write_manifest(head, parts, counts, meta)
    log.commit(head, batch, state)
    return ExtractResult(plan.table, batch.rows, batch.seq, watermark.to_state()["watermark"], plan.rebuilt,
                         ranges=len(plan.ranges))  # fmt: skip
