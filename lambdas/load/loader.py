"""One load: every processed batch of a table that the warehouse has not taken yet, in one transaction.

The load cursor is written to S3 only after the warehouse transaction commits; for a fact it also names
the rows held back for a missing dimension row (lambdas/load/held.py), which every load stages again.
If the cursor write is lost, the same batches are merged again, which changes nothing: facts ignore
versions they hold, dimensions are rewritten with the same values. So the warehouse takes each batch exactly once.

The cursor names the warehouse it describes: pointed at another warehouse, a load refuses, because the
batches the cursor says were taken are not in it; a repair loads the current epoch into it from the start.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pg8000.native
import pyarrow as pa
from botocore.exceptions import ClientError

from lambdas.common.db import database_identity, describe_identity
from lambdas.common.errors import PipelineError
from lambdas.common.events import NEWEST_LOADED, SUCCEEDED
from lambdas.common.lake import Batch, BatchLog, Bucket, ReaderState
from lambdas.common.tables import FACTS, TRANSFORM_INPUTS, require_warehouse_table
from lambdas.load import held
from lambdas.load import warehouse as merging
from lambdas.load.schema import ensure_schema
from lambdas.load.warehouse import MergeCounts, merge_batch, newest_loaded_change

STAGE = "load"
TRANSFORM_STAGE = "transform"


@dataclass(frozen=True)
class LoadResult:
    table: str
    batches: int
    staged: int
    written: int
    newest_change: datetime | None = None
    kept: held.Settled = field(default_factory=lambda: held.Settled(None, 0, 0))  # a fact's held rows
    newest_loaded: datetime | None = None  # a fact's newest version in the warehouse, loaded now or before

    def as_dict(self) -> dict[str, object]:
        result: dict[str, object] = {"table": self.table, "stage": STAGE, "status": SUCCEEDED, "batches": self.batches,
                                     "rows_staged": self.staged, "rows_written": self.written}  # fmt: skip
        if self.table in FACTS:
            result |= {"rows_held": self.kept.rows, "rows_released": self.kept.released,
                       "rows_stuck": self.kept.stuck, "held_sample": self.kept.sample,
                       "stuck_sample": self.kept.stuck_sample,
                       NEWEST_LOADED: self.newest_loaded.isoformat() if self.newest_loaded else None}  # fmt: skip
        return result


def load_table(
    con: pg8000.native.Connection,
    processed: Bucket,
    table: str,
    *,
    repair: bool = False,
    now: datetime | None = None,
) -> LoadResult:
    """Merge the table's new processed batches (and a fact's held rows) into the warehouse; move its cursor."""
    table = require_warehouse_table(table)
    stuck_after = held.stuck_after()  # a bad setting fails before any work, not between commit and head
    lineage = TRANSFORM_INPUTS[table]
    source = BatchLog(processed, TRANSFORM_STAGE, table, lineage=lineage)
    taken = ReaderState(processed, STAGE, table, lineage=lineage)
    identity = database_identity(con)
    saved = taken.read()
    cursor = saved.get("cursor") if saved else None
    if saved is not None and saved.get("warehouse") != identity and not repair:
        raise source.fail(
            f"{processed.uri(taken.key)} says its batches were loaded into {describe_identity(saved.get('warehouse'))}"
            f", but the warehouse now is {describe_identity(identity)}: those rows are not in it. A repair loads "
            "the lake into this warehouse"
        )
    if saved is not None and saved.get("warehouse") != identity:
        cursor = None  # a repair: this warehouse takes the current epoch from its start
    ensure_schema(con)
    reading = source.follow(cursor)
    try:
        previous = held.read(processed, saved or {})
    except (PipelineError, ClientError, pa.ArrowException, OSError) as error:
        raise source.fail(f"the held rows named by {processed.uri(taken.key)} cannot be read ({error})") from error
    migrated = previous is not None and not held.is_typed(saved or {})
    if previous is not None and migrated:
        previous = _migrated(con, source, table, previous, repair=repair)
    batches = reading.batches
    known, remembered = _remembered_newest(saved, identity, table)
    if not batches and previous is None:
        newest = remembered if known else newest_loaded_change(con, table)
        if saved is not None and (saved.get("cursor") != reading.cursor or not known):
            # an empty new epoch was followed, or the newest loaded change was not remembered yet
            taken.commit({"cursor": reading.cursor, "warehouse": identity, **_newest_state(table, newest)})
        return LoadResult(table, 0, 0, 0, newest_loaded=newest)
    holding = held.Holding(table) if table in FACTS else None
    counts = MergeCounts()
    # A large fact load locks the dimensions before anything reads them (see lock_referenced): after staging its
    # first rows, which reads none, so that other fact loads keep the locks while this one copies its rows in.
    bulk = table in FACTS and sum(b.rows for b in batches) + (previous.num_rows if previous else 0) >= merging.BULK_ROWS
    con.run("START TRANSACTION")
    try:
        if previous is not None:
            counts += merge_batch(con, table, [held.as_staged(previous)], hold=holding, lock_first=bulk)
        for batch in batches:
            counts += merge_batch(con, table, source.read(batch), hold=holding, lock_first=bulk)
        staged = partial(_staged, source, previous, batches)  # the held rows are taken from what was staged
        still_held = holding.collect(con, staged) if holding is not None else None
        key = held.version_key(con, table) if holding is not None else []
        con.run("COMMIT")
    except BaseException:
        con.run("ROLLBACK")
        raise
    settled = held.settle(still_held, previous, key, now=now or datetime.now(UTC), stuck_after=stuck_after)
    if known:
        newest = max((c for c in (remembered, counts.newest_change) if c is not None), default=None)
    else:
        newest = newest_loaded_change(con, table)  # after the commit: this load's rows included
    if batches or settled.released or migrated or (saved or {}).get("cursor") != reading.cursor or not known:
        seq = batches[-1].seq if batches else reading.cursor["seq"] if reading.cursor else 0
        entry = held.write(processed, table, seq, settled)  # held rows that merely stay held write nothing new
        state: dict[str, object] = {"cursor": reading.cursor, "warehouse": identity, **_newest_state(table, newest)}
        if entry:
            state["held"] = entry
        taken.commit(state)
    return LoadResult(table, len(batches), counts.staged, counts.written, counts.newest_change, settled, newest)


def _staged(source: BatchLog, previous: pa.Table | None, batches: list[Batch]) -> Iterator[pa.Table]:
    """What a load stages, in its order: the previous held set, then each new batch's parts (read again)."""
    if previous is not None:
        yield held.as_staged(previous)
    for batch in batches:
        yield from source.read(batch)


def _migrated(
    con: pg8000.native.Connection, source: BatchLog, table: str, previous: pa.Table, *, repair: bool
) -> pa.Table:
    """A held set written before issue 20 (format 1), with the rows whose text it may have turned into NULL taken
    again from the current epoch of the processed log. A row the log no longer has fails the load, naming it; the
    repair, which re-reads the whole source, leaves it out (its key's current version arrives with the repair)."""
    key = held.version_key(con, table)
    migrated = held.migrate(previous, key, lambda: (p for b in source.follow(None).batches for p in source.read(b)))
    if migrated.lost.num_rows and not repair:
        sample = migrated.lost.slice(0, held.SAMPLE_SIZE).to_pylist()
        raise source.fail(f"{migrated.lost.num_rows} held rows written by an earlier release may have lost their "
                          "text (NULL for 'NA', 'NULL', ''), and the processed log no longer has them "
                          f"(e.g. {sample})")  # fmt: skip
    return migrated.held


def _remembered_newest(
    saved: dict[str, Any] | None, identity: dict[str, Any], table: str
) -> tuple[bool, datetime | None]:
    """The newest fact version loaded, as the cursor remembers it: (known, value).

    The freshness metric needs it on every run, and reading it from the table is a scan of the whole fact table
    (no index on the version's time, and the schema is the contract's), about 0.5 s at 1 M rows. The cursor is
    written with each load, so it holds the newest version of what it says was loaded. A cursor of another
    warehouse, one without it (written by an earlier version) or an unreadable value is not believed: the table
    is read instead, and the cursor carries the value from then on.
    """
    if table not in FACTS:
        return True, None
    if saved is None or saved.get("warehouse") != identity or NEWEST_LOADED not in saved:
        return False, None
    raw = saved[NEWEST_LOADED]
    if raw is None:
        return True, None
    try:
        return True, datetime.fromisoformat(raw)
    except (TypeError, ValueError):
        return False, None


def _newest_state(table: str, newest: datetime | None) -> dict[str, object]:
    return {NEWEST_LOADED: newest.isoformat() if newest else None} if table in FACTS else {}
