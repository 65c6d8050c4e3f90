"""One load: every processed batch of a table that the warehouse has not taken yet, in one transaction.

The load cursor is written to S3 only after the warehouse transaction commits. If the cursor write is
lost, the same batches are merged again, which changes nothing: facts ignore versions they hold,
dimensions are rewritten with the same values. So the warehouse takes each batch exactly once.

The cursor names the warehouse it describes: pointed at another warehouse, a load refuses, because the
batches the cursor says were taken are not in it; a repair loads the current epoch into it from the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pg8000.native

from lambdas.common.db import database_identity, describe_identity
from lambdas.common.events import SUCCEEDED
from lambdas.common.lake import BatchLog, Bucket, ReaderState
from lambdas.common.tables import TRANSFORM_INPUTS, require_warehouse_table
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


def load_table(con: pg8000.native.Connection, processed: Bucket, table: str, *, repair: bool = False) -> LoadResult:
    """Merge the table's new processed batches into the warehouse and move its load cursor."""
    table = require_warehouse_table(table)
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
    if not reading.batches:
        if saved is not None and saved.get("cursor") != reading.cursor:
            taken.commit({"cursor": reading.cursor, "warehouse": identity})  # an empty new epoch was followed
        return LoadResult(table, 0, 0, 0)
    counts = MergeCounts()
    con.run("START TRANSACTION")
    try:
        for batch in reading.batches:
            counts += merge_batch(con, table, source.read(batch))
        con.run("COMMIT")
    except BaseException:
        con.run("ROLLBACK")
        raise
    taken.commit({"cursor": reading.cursor, "warehouse": identity})
    return LoadResult(table, len(reading.batches), counts.staged, counts.written, counts.newest_change)
