"""One transform: the new ingestion batches of a warehouse table's sources, remodelled, as a new batch.

Each warehouse table keeps its own cursors (the last ingestion batch it consumed per source table) in its
head, written after its output. A crash before the head is written redoes the same batch from the same
inputs; nothing downstream has seen it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pyarrow as pa

from lambdas.common.events import SUCCEEDED
from lambdas.common.lake import CURRENT_PREFIX, BatchLog, Bucket, concat
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

    def __init__(self, ingestion: Bucket, source: str, after: int) -> None:
        self.log = BatchLog(ingestion, EXTRACT_STAGE, source)
        self.source, self.after = source, after
        self.upto = int(self.log.head()["seq"])
        self.batches = list(self.log.batches(after, self.upto))
        self.rows = sum(b.rows for b in self.batches)

    def parts(self) -> Iterator[pa.Table]:
        for batch in self.batches:
            yield from self.log.read(batch)

    def table(self) -> pa.Table | None:
        return concat(self.parts())


def transform_table(ingestion: Bucket, processed: Bucket, table: str) -> TransformResult:
    """Transform whatever is new for `table` and commit it as the next batch of its processed log."""
    table = require_warehouse_table(table)
    log = BatchLog(processed, STAGE, table)
    head = log.head()
    cursors: dict[str, int] = head.get("cursors", {})
    inputs = {src: NewInput(ingestion, src, int(cursors.get(src, 0))) for src in TRANSFORM_INPUTS[table]}
    if not any(i.batches for i in inputs.values()):
        return TransformResult(table, 0, None)

    seq = int(head["seq"]) + 1
    warnings: list[str] = []
    state: dict[str, Any] = {k: v for k, v in head.items() if k not in ("seq", "cursors")}
    if table in FACT_BUILDERS:
        (only,) = inputs.values()
        parts: Iterator[pa.Table] = map(FACT_BUILDERS[table], only.parts())
    elif table in COPIED_DIMENSIONS:
        (only,) = inputs.values()
        built = COPIED_DIMENSIONS[table](keep_last(only.table(), PRIMARY_KEYS[only.source]))
        if table == "dim_currency":
            warnings = [
                f"currency code {code!r} is not in ISO 4217; its name is the code" for code in unknown_codes(built)
            ]
        parts = iter([built])
    elif table in JOINED_DIMENSIONS:
        parts = iter([_joined_dimension(processed, table, seq, inputs, state)])
    else:
        parts = iter(_dates(inputs, state))

    batch = log.write(seq, parts, {"inputs": {s: [i.after + 1, i.upto] for s, i in inputs.items()}})
    log.commit({"seq": batch.seq if batch else head["seq"], "cursors": {s: i.upto for s, i in inputs.items()}, **state})
    return TransformResult(table, batch.rows if batch else 0, batch.seq if batch else None,
                           {s: i.rows for s, i in inputs.items()}, warnings)  # fmt: skip


def _joined_dimension(
    processed: Bucket, table: str, seq: int, inputs: dict[str, NewInput], state: dict[str, Any]
) -> pa.Table:
    """Bring the current state of both sides up to date, then rebuild the rows either side touched."""
    main, linked = TRANSFORM_INPUTS[table]
    current_keys: dict[str, str] = dict(state.get("current", {}))
    current: dict[str, pa.Table] = {}
    changed: dict[str, pa.Array] = {}
    for source in (main, linked):
        key = PRIMARY_KEYS[source]
        new = inputs[source].table()
        before = processed.get_parquet(current_keys[source]) if source in current_keys else None
        changed[source] = new[key].combine_chunks() if new is not None else pa.array([], pa.int32())
        merged = concat([t for t in (before, new) if t is not None])
        current[source] = keep_last(merged, key) if merged is not None else pa.table({key: pa.array([], pa.int32())})
        if new is not None:
            current_keys[source] = f"{CURRENT_PREFIX}/{table}/{source}/{seq:010d}.parquet"
            processed.put_parquet(current_keys[source], current[source])
    state["current"] = current_keys
    if linked not in current_keys or main not in current_keys:
        return pa.table({})  # one side has never been extracted: nothing can be joined yet
    return JOINED_DIMENSIONS[table](current[main], current[linked], changed[main], changed[linked])


def _dates(inputs: dict[str, NewInput], state: dict[str, Any]) -> list[pa.Table]:
    """Grow the covered range of dim_date to the dates the new fact rows reference."""
    columns = [col for i in inputs.values() for part in i.parts() for col in facts.referenced_dates(part, i.source)]
    known = state.get("date_range")
    covered, added = dates.grow(tuple(date.fromisoformat(d) for d in known) if known else None, dates.span(columns))
    if covered is not None:
        state["date_range"] = [covered[0].isoformat(), covered[1].isoformat()]
    return [dates.calendar(first, last) for first, last in added]
