"""The lake's side of a reconciliation: a ledger of what the lake has taken, and its per-key-range figures.

A ledger has one entry per key, for the lake's latest version of it: (key, row hash, last_updated, the batch that
holds the row), 32 bytes a key, so comparing a table never holds the table. The extract keeps it between
reconciliations (its checkpoint), so the next one only adds the batches since.

Hashing a row (lambdas/common/digest.py) is the lake side's one real cost, so a ledger hashes lazily: a hash may be
null until the row's range is first in a content share or differs in the census; then `fill` reads that row again
from the batch the entry names, hashes it, and the ledger keeps the hash. The census needs no hash (key and
last_updated are in every entry).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from lambdas.common.catalog import Column, arrow_schema
from lambdas.common.digest import (
    DEFAULT_RANGE_SIZE,
    ContentShare,
    RangeFigures,
    arrow_figures,
    check_range_size,
    fill_hashes,
    hashes_in_share,
    range_numbers,
    stamp_micros,
    unique_keys,
)
from lambdas.extract.source import WATERMARK_COLUMN
from lambdas.transform.columns import keep_last

WHOLE = ContentShare()
LEDGER_SCHEMA = pa.schema(
    [("key", pa.int64()), ("hash", pa.int64()), ("stamp", pa.timestamp("us")), ("seq", pa.int64())]
)


def conform(rows: pa.Table, columns: list[Column]) -> pa.Table:
    """The lake's rows in the source's column order and types; a column the lake never saw is all NULL."""
    arrays = [
        pc.cast(rows[c.name], c.arrow_type) if c.name in rows.column_names else pa.nulls(rows.num_rows, c.arrow_type)
        for c in columns
    ]
    return pa.Table.from_arrays(arrays, schema=arrow_schema(columns))


def latest_rows(rows: pa.Table, columns: list[Column], primary_key: str) -> pa.Table:
    """The last version of each key in these rows, in the source's columns; one version a key is the common case."""
    if rows.num_rows == 0:  # an empty lake may not even have the columns
        return arrow_schema(columns).empty_table()
    if not unique_keys(rows[primary_key]):
        rows = keep_last(rows, primary_key)
    return conform(rows, columns)


def ledger(
    rows: pa.Table,
    columns: list[Column],
    primary_key: str,
    *,
    seq: int,
    share: ContentShare | None = WHOLE,
    range_size: int = DEFAULT_RANGE_SIZE,
) -> pa.Table:
    """The ledger entries of these rows (of batch `seq`), in the rows' order, hashed in the share's ranges (by
    default all; None: none), the others left null until they are needed."""
    if rows.num_rows == 0:
        return LEDGER_SCHEMA.empty_table()
    rows = conform(rows, columns)
    keys = pc.cast(rows[primary_key], pa.int64())
    stamps = (
        pc.cast(rows[WATERMARK_COLUMN], pa.timestamp("us"))
        if WATERMARK_COLUMN in rows.column_names
        else pa.nulls(rows.num_rows, pa.timestamp("us"))
    )
    return pa.table(
        {
            "key": keys,
            "hash": hashes_in_share(rows, columns, range_numbers(keys, range_size), share),
            "stamp": stamps,
            "seq": pa.array([seq] * rows.num_rows, pa.int64()),
        },
        schema=LEDGER_SCHEMA,
    )


def latest_entries(ledgers: Iterable[pa.Table]) -> pa.Table:
    """The last entry of each key over ledgers given oldest first (later versions win)."""
    collected = [t for t in ledgers if t.num_rows]
    if not collected:
        return LEDGER_SCHEMA.empty_table()
    combined = pa.concat_tables(collected)
    if not unique_keys(combined["key"]):
        combined = keep_last(combined, "key")
    return combined


def fill(
    entries: pa.Table, needed: pa.Array | pa.ChunkedArray, batch_rows: Callable[[int], pa.Table] | None,
    columns: list[Column], primary_key: str,
) -> pa.Table:  # fmt: skip
    """The ledger with the hashes `needed` filled, the rows read again by `batch_rows(seq)` (a batch's rows)."""

    def hashed(seq: int, keys: pa.Table) -> pa.Table:
        if batch_rows is None:
            raise ValueError("the ledger has unhashed entries and no batches to hash them from")
        rows = latest_rows(batch_rows(seq), columns, primary_key)
        wanted = pc.is_in(pc.cast(rows[primary_key], pa.int64()), value_set=keys["key"].combine_chunks())
        return ledger(rows.filter(wanted), columns, primary_key, seq=seq)

    return fill_hashes(entries, ["key"], needed, hashed, hash_column="hash", seq_column="seq")


def ledger_figures(
    entries: pa.Table, range_size: int, share: ContentShare | None, *, stamped: bool = True
) -> dict[int, RangeFigures]:
    """The same figures as `source_ranges.source_figures`, from a ledger with one entry per key (hashed wherever
    the share needs it; no share: the census alone); `stamped`: the table has last_updated, which the census sums."""
    check_range_size(range_size)
    if entries.num_rows == 0:
        return {}
    sums = [entries["key"]] + ([stamp_micros(entries["stamp"])] if stamped else [])
    return arrow_figures(range_numbers(entries["key"], range_size), sums, entries["hash"], share)


def lake_digests(
    lake_rows: pa.Table, columns: list[Column], primary_key: str, range_size: int
) -> dict[int, RangeFigures]:
    """Every range's census and content digest from the lake's rows (every version; the last one of a key counts)."""
    check_range_size(range_size)
    entries = ledger(latest_rows(lake_rows, columns, primary_key), columns, primary_key, seq=0)
    stamped = WATERMARK_COLUMN in {c.name for c in columns}
    return ledger_figures(entries, range_size, ContentShare(), stamped=stamped)
