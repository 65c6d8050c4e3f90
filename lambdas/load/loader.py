"""One load: every processed batch of a table that the warehouse has not taken yet, in one transaction.

The load cursor is written to S3 only after the warehouse transaction commits; for a fact it also names
the rows held back for a missing dimension row (lambdas/load/held.py), which every load stages again.
If the cursor write is lost, the same batches are merged again, which changes nothing: facts ignore versions they hold,
dimensions are rewritten with the same values. So the warehouse takes each batch exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pg8000.native

from lambdas.common.events import SUCCEEDED
from lambdas.common.lake import BatchLog, Bucket
from lambdas.common.tables import FACTS, require_warehouse_table
from lambdas.load import held
from lambdas.load.schema import ensure_schema
from lambdas.load.warehouse import MergeCounts, merge_batch

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

    def as_dict(self) -> dict[str, object]:
        result: dict[str, object] = {"table": self.table, "stage": STAGE, "status": SUCCEEDED, "batches": self.batches,
                                     "rows_staged": self.staged, "rows_written": self.written}  # fmt: skip
        if self.table in FACTS:
            result |= {"rows_held": self.kept.rows, "rows_released": self.kept.released,
                       "rows_stuck": self.kept.stuck, "held_sample": self.kept.sample,
                       "stuck_sample": self.kept.stuck_sample}  # fmt: skip
        return result


def load_table(
    con: pg8000.native.Connection, processed: Bucket, table: str, *, now: datetime | None = None
) -> LoadResult:
    """Merge the table's new processed batches (and a fact's held rows) into the warehouse; move its cursor."""
    table = require_warehouse_table(table)
    stuck_after = held.stuck_after()  # a bad setting fails before any work, not between commit and head
    ensure_schema(con)
    source = BatchLog(processed, TRANSFORM_STAGE, table)
    cursor = BatchLog(processed, STAGE, table)
    head = cursor.head()
    done = int(head["seq"])
    batches = list(source.batches(done, int(source.head()["seq"])))
    previous = held.read(processed, head)
    if not batches and previous is None:
        return LoadResult(table, 0, 0, 0)
    holding = held.Holding(table) if table in FACTS else None
    counts = MergeCounts()
    con.run("START TRANSACTION")
    try:
        if previous is not None:
            counts += merge_batch(con, table, [held.as_staged(previous)], hold=holding)
        for batch in batches:
            counts += merge_batch(con, table, source.read(batch), hold=holding)
        still_held = holding.collect(con) if holding is not None else None
        key = held.version_key(con, table) if holding is not None else []
        con.run("COMMIT")
    except BaseException:
        con.run("ROLLBACK")
        raise
    settled = held.settle(still_held, previous, key, now=now or datetime.now(UTC), stuck_after=stuck_after)
    if batches or settled.released:  # held rows that merely stay held change nothing: no new objects
        seq = batches[-1].seq if batches else done
        entry = held.write(processed, table, seq, settled)
        new_head: dict[str, object] = {"seq": seq}
        if entry:
            new_head["held"] = entry
        cursor.commit(new_head)
    return LoadResult(table, len(batches), counts.staged, counts.written, counts.newest_change, settled)
