"""One extract: the changed rows of one source table, written as a new batch, then the watermark.

The order of writes is the safety argument: Parquet parts, then the manifest, then the head that holds
the watermark. Until the head is written nothing downstream sees the batch, and a retry re-reads the
same window, so a crash anywhere loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pg8000.native
import pyarrow as pa

from lambdas.common.errors import PipelineError
from lambdas.common.events import SUCCEEDED
from lambdas.common.lake import BatchLog
from lambdas.common.tables import PRIMARY_KEYS, require_source_table
from lambdas.extract.source import changed_rows, snapshot, table_columns
from lambdas.extract.watermark import Watermark, advance, drop_seen, version_keys

STAGE = "extract"


@dataclass(frozen=True)
class ExtractResult:
    table: str
    rows: int
    batch: int | None
    watermark: str | None

    def as_dict(self) -> dict[str, object]:
        return {"table": self.table, "stage": STAGE, "status": SUCCEEDED, "rows": self.rows, "batch": self.batch,
                "watermark": self.watermark}  # fmt: skip


def extract_table(
    con: pg8000.native.Connection,
    log: BatchLog,
    *,
    full_refresh: bool = False,
    lookback: timedelta = timedelta(minutes=15),
    part_rows: int = 500_000,
) -> ExtractResult:
    """Extract one table's new row versions into its batch log and advance its watermark."""
    table = require_source_table(log.table)
    primary_key = PRIMARY_KEYS[table]
    head = log.head()
    previous = Watermark.from_state(head)
    since = None if full_refresh else previous.window_start(lookback)
    window_keys: list[pa.Table] = []

    def parts(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.Table]:
        pending: list[pa.Table] = []
        pending_rows = 0
        for record_batch in batches:
            chunk = pa.Table.from_batches([record_batch])
            window_keys.append(version_keys(chunk, primary_key))
            if not full_refresh:
                chunk = drop_seen(chunk, primary_key, previous.seen)
            pending.append(chunk)
            pending_rows += chunk.num_rows
            if pending_rows >= part_rows:
                yield pa.concat_tables(pending)
                pending, pending_rows = [], 0
        if pending:
            yield pa.concat_tables(pending)

    with snapshot(con):
        columns = table_columns(con, table)
        if primary_key not in {c.name for c in columns}:
            raise PipelineError(f"{table}: primary key column {primary_key!r} is missing from the source")
        with changed_rows(con, table, columns, since) as batches:
            batch = log.write(head["seq"] + 1, parts(batches), {"since": since.isoformat() if since else None})

    if batch is None:
        return ExtractResult(table, 0, None, head.get("watermark"))
    keys = pa.concat_tables(window_keys)
    watermark = advance(previous, keys, lookback)
    log.commit({"seq": batch.seq, **watermark.to_state(), "lookback_seconds": lookback.total_seconds()})
    return ExtractResult(table, batch.rows, batch.seq, watermark.to_state()["watermark"])
