"""One load: every processed batch of a table that the warehouse has not taken yet, in one transaction.

The load cursor is written to S3 only after the warehouse transaction commits. If the cursor write is
lost, the same batches are merged again, which changes nothing: facts ignore versions they hold,
dimensions are rewritten with the same values. So the warehouse takes each batch exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pg8000.native

from lambdas.common.events import SUCCEEDED
from lambdas.common.lake import BatchLog, Bucket
from lambdas.common.tables import require_warehouse_table
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

    def as_dict(self) -> dict[str, object]:
        return {"table": self.table, "stage": STAGE, "status": SUCCEEDED, "batches": self.batches,
                "rows_staged": self.staged, "rows_written": self.written}  # fmt: skip


def load_table(con: pg8000.native.Connection, processed: Bucket, table: str) -> LoadResult:
    """Merge the table's new processed batches into the warehouse and move its load cursor."""
    table = require_warehouse_table(table)
    ensure_schema(con)
    source = BatchLog(processed, TRANSFORM_STAGE, table)
    cursor = BatchLog(processed, STAGE, table)
    done = int(cursor.head()["seq"])
    batches = list(source.batches(done, int(source.head()["seq"])))
    if not batches:
        return LoadResult(table, 0, 0, 0)
    counts = MergeCounts()
    con.run("START TRANSACTION")
    try:
        for batch in batches:
            counts += merge_batch(con, table, source.read(batch))
        con.run("COMMIT")
    except BaseException:
        con.run("ROLLBACK")
        raise
    cursor.commit({"seq": batches[-1].seq})
    return LoadResult(table, len(batches), counts.staged, counts.written, counts.newest_change)
