"""One transform: the new ingestion batches of a warehouse table's sources, remodelled, as a new batch.

Each warehouse table keeps its own cursors (the last ingestion batch it consumed per source table) in its
head, written after its output. A crash before the head is written redoes the same batch from the same
inputs; nothing downstream has seen it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from botocore.exceptions import ClientError

from lambdas.common.errors import StateError
from lambdas.common.events import SUCCEEDED
from lambdas.common.keys import current_key
from lambdas.common.lake import BatchLog, Bucket, Head, concat
from lambdas.common.tables import PRIMARY_KEYS, TRANSFORM_INPUTS, require_warehouse_table
from lambdas.transform import dates, dimensions, facts
from lambdas.transform.columns import keep_last
from lambdas.transform.currency import unknown_codes

STAGE = "transform"
EXTRACT_STAGE = "extract"

FACT_BUILDERS: dict[str, Callable[[pa.Table], pa.Table]] = {
    "fact_sales_order": facts.fact_sales_order,
    "fact_purchase_order": facts.fact_purchase_order,
    "fact_payment": facts.fact_payment,
}
COPIED_DIMENSIONS: dict[str, Callable[[pa.Table], pa.Table]] = {
    "dim_location": dimensions.dim_location,
    "dim_design": dimensions.dim_design,
    "dim_currency": dimensions.dim_currency,
    "dim_payment_type": dimensions.dim_payment_type,
    "dim_transaction": dimensions.dim_transaction,
}
JOINED_DIMENSIONS: dict[str, Callable[[pa.Table, pa.Table, pa.Array, pa.Array], pa.Table]] = {
    "dim_staff": dimensions.dim_staff,
    "dim_counterparty": dimensions.dim_counterparty,
}


@dataclass(frozen=True)
class TransformResult:
    table: str
    rows: int
    batch: int | None
    inputs: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"table": self.table, "stage": STAGE, "status": SUCCEEDED, "rows": self.rows, "batch": self.batch,
                "source_rows": self.inputs, "warnings": self.warnings}  # fmt: skip


class NewInput:
    """The ingestion batches of one source table that this warehouse table has not consumed yet."""

    def __init__(self, ingestion: Bucket, source: str, cursor: Any) -> None:
        self.log = BatchLog(ingestion, EXTRACT_STAGE, source)
        self.source = source
        reading = self.log.follow(cursor)
        self.batches, self.cursor, self.restarted = reading.batches, reading.cursor, reading.restarted
        self.rows = sum(b.rows for b in self.batches)

    def span(self) -> list[int]:
        return [self.batches[0].seq, self.batches[-1].seq] if self.batches else []

    def parts(self, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
        for batch in self.batches:
            yield from self.log.read(batch, columns)

    def table(self) -> pa.Table | None:
        return concat(self.parts())

    def parts_newest_first(self) -> Iterator[pa.Table]:
        """The parts in the reverse of the order they were written, one at a time."""
        for batch in reversed(self.batches):
            for key, rows in reversed(list(zip(batch.parts, batch.part_rows, strict=True))):
                yield from self.log.read(replace(batch, parts=(key,), part_rows=(rows,)))


def _own_head(log: BatchLog, *, repair: bool) -> Head:
    """The transform's head; a repair replaces one that cannot be believed with a new epoch read from scratch."""
    try:
        return log.head()
    except StateError:
        if not repair:
            raise
        return log.start_epoch({})


def transform_table(ingestion: Bucket, processed: Bucket, table: str, *, repair: bool = False) -> TransformResult:
    """Transform whatever is new for `table` and commit it as the next batch of its processed log.

    When an input was rebuilt (a repair started a new epoch of its log), this table's output starts a new epoch
    too, holding the whole table, so the load never needs a batch written before the repair.
    """
    table = require_warehouse_table(table)
    log = BatchLog(processed, STAGE, table, lineage=TRANSFORM_INPUTS[table])
    head = _own_head(log, repair=repair)
    cursors: dict[str, Any] = head.state.get("cursors", {})
    state: dict[str, Any] = {k: v for k, v in head.state.items() if k != "cursors"}
    inputs = {src: NewInput(ingestion, src, cursors.get(src)) for src in TRANSFORM_INPUTS[table]}
    restarted = sorted(src for src, i in inputs.items() if i.restarted)
    if restarted and head.stored:
        head = log.start_epoch(head.state)
    whole = head.rebuilt and not head.stored  # this batch starts a new epoch, so it holds the whole table
    if not whole and not any(i.batches for i in inputs.values()):
        return TransformResult(table, 0, None)

    seq = head.seq + 1
    warnings: list[str] = []
    if table in FACT_BUILDERS:
        (only,) = inputs.values()
        parts: Iterator[pa.Table] = map(FACT_BUILDERS[table], only.parts())
    elif table in COPIED_DIMENSIONS:
        (only,) = inputs.values()
        parts = _copied(table, only, warnings)
    elif table in JOINED_DIMENSIONS:
        parts = iter([_joined_dimension(processed, log, seq, inputs, state, whole=whole)])
    else:
        parts = iter(_dates(inputs, state, whole=whole))

    meta = {"inputs": {s: i.span() for s, i in inputs.items()}, **({"rebuilt_from": restarted} if restarted else {})}
    batch = log.write(head, parts, meta)
    log.commit(head, batch, {"cursors": {s: i.cursor for s, i in inputs.items()}, **state})
    return TransformResult(table, batch.rows if batch else 0, batch.seq if batch else None,
                           {s: i.rows for s, i in inputs.items()}, warnings)  # fmt: skip


def _copied(table: str, only: NewInput, warnings: list[str]) -> Iterator[pa.Table]:
    """A copied dimension, one part of the input at a time, so memory stays that of one part, not the table's.

    A dimension holds the latest version of each key. Reading the parts newest first and keeping each key's
    first appearance (the last row of a key within a part) gives the same rows as keeping the last version of
    the whole input, and every key in at most one output part, as the load's upsert needs; only the keys
    already written are remembered.
    """
    key = PRIMARY_KEYS[only.source]
    written: pa.Array | None = None
    for part in only.parts_newest_first():
        latest = keep_last(part, key)
        if written is not None:
            latest = latest.filter(pc.invert(pc.is_in(latest[key], value_set=written)))
        if latest.num_rows == 0:
            continue
        keys = latest[key].combine_chunks()
        written = keys if written is None else pa.concat_arrays([written, keys])
        built = COPIED_DIMENSIONS[table](latest)
        if table == "dim_currency":
            warnings += [f"currency code {c!r} is not in ISO 4217; its name is the code" for c in unknown_codes(built)]
        yield built


def _current(processed: Bucket, log: BatchLog, key: str) -> pa.Table:
    try:
        return processed.get_parquet(key)
    except (ClientError, pa.ArrowException, OSError) as error:
        raise log.fail(f"its current snapshot {processed.uri(key)} cannot be read ({error})") from error


def _joined_dimension(
    processed: Bucket, log: BatchLog, seq: int, inputs: dict[str, NewInput], state: dict[str, Any], *, whole: bool
) -> pa.Table:
    """Bring the current state of both sides up to date, then rebuild the rows either side touched (all of them
    when the output starts a new epoch). A side whose log was rebuilt is replaced, not merged."""
    table = log.table
    main, linked = TRANSFORM_INPUTS[table]
    current_keys: dict[str, str] = dict(state.get("current", {}))
    current: dict[str, pa.Table] = {}
    changed: dict[str, pa.Array] = {}
    for source in (main, linked):
        key = PRIMARY_KEYS[source]
        new = inputs[source].table()
        keep = source in current_keys and not inputs[source].restarted
        before = _current(processed, log, current_keys[source]) if keep else None
        changed[source] = new[key].combine_chunks() if new is not None else pa.array([], pa.int32())
        merged = concat([t for t in (before, new) if t is not None])
        current[source] = keep_last(merged, key) if merged is not None else pa.table({key: pa.array([], pa.int32())})
        if new is not None or inputs[source].restarted:
            current_keys[source] = current_key(table, source, seq)
            processed.put_parquet(current_keys[source], current[source])
    state["current"] = current_keys
    if linked not in current_keys or main not in current_keys:
        return pa.table({})  # one side has never been extracted: nothing can be joined yet
    if whole:
        changed[main] = current[main][PRIMARY_KEYS[main]].combine_chunks()
    return JOINED_DIMENSIONS[table](current[main], current[linked], changed[main], changed[linked])


def _dates(inputs: dict[str, NewInput], state: dict[str, Any], *, whole: bool) -> list[pa.Table]:
    """Grow the covered range of dim_date to the dates the new fact rows reference (all of it in a new epoch)."""
    # one part at a time: only each part's earliest and latest date is kept
    spans = [dates.span(facts.referenced_dates(part, i.source))
             for i in inputs.values() for part in i.parts([c for c, _ in facts.FACT_DATES[i.source]])]  # fmt: skip
    bounds = [bound for found in spans if found is not None for bound in found]
    seen = (min(bounds), max(bounds)) if bounds else None
    known = state.get("date_range")
    covered, added = dates.grow(tuple(date.fromisoformat(d) for d in known) if known else None, seen)
    if covered is not None:
        state["date_range"] = [covered[0].isoformat(), covered[1].isoformat()]
    if whole and covered is not None:
        return [dates.calendar(*covered)]
    return [dates.calendar(first, last) for first, last in added]
