"""The source's side of a reconciliation: per-key-range figures computed inside PostgreSQL, and the rows of the
ranges that differ read again.

Only small aggregates cross the wire: one `GROUP BY` over the table gives every range's census (count, sum of keys,
sum of `last_updated` in microseconds) and, for the ranges in the content share, the sum of the rows' MD5-based
hashes (lambdas/common/digest.py says how a row is hashed identically here and in Arrow). A `CASE` keeps the rows
outside the share from being hashed at all, which is where the time goes. Call these inside one
`source.snapshot(con)`, so the figures and the rows re-read agree.
"""

from __future__ import annotations

from collections.abc import Iterable

import pg8000.native
import pyarrow as pa

from lambdas.common.catalog import Column, arrow_schema
from lambdas.common.db import identifier
from lambdas.common.digest import (
    HASH_BITS,
    ContentShare,
    RangeFigures,
    check_range_size,
    figures_from_sql,
    figures_sql,
    row_text_sql,
    stamp_sql,
)
from lambdas.common.errors import PipelineError
from lambdas.extract.source import WATERMARK_COLUMN, KeyIntervals, changed_rows

_INTEGER_KEYS = ("int2", "int4", "int8")


def key_column(table: str, columns: list[Column], primary_key: str) -> Column:
    """The table's key column, refused unless it is an integer (ranges are integer divisions of it)."""
    for column in columns:
        if column.name == primary_key:
            if column.pg_type not in _INTEGER_KEYS:
                raise PipelineError(f"{table}: key {primary_key!r} is {column.pg_type}; ranges need an integer key")
            return column
    raise PipelineError(f"{table}: primary key column {primary_key!r} is missing from the source")


def census_columns(columns: list[Column], primary_key: str) -> list[str]:
    """The columns the census sums: the key, and last_updated where the table has it."""
    return [primary_key] + ([WATERMARK_COLUMN] if WATERMARK_COLUMN in {c.name for c in columns} else [])


def source_figures(
    con: pg8000.native.Connection,
    table: str,
    columns: list[Column],
    primary_key: str,
    range_size: int,
    share: ContentShare,
) -> dict[int, RangeFigures]:
    """Every key range's census, and the content digest of the ranges in `share`, in one aggregate query."""
    key_column(table, columns, primary_key)
    check_range_size(range_size)
    text = row_text_sql(columns)
    [[encoding]] = con.run("SELECT current_setting('server_encoding')")
    utf8 = text if encoding == "UTF8" else f"convert_to({text}, 'UTF8')"
    row_hash = f"('x' || substr(md5({utf8}), 1, {HASH_BITS // 4}))::bit({HASH_BITS})::int8"
    key = identifier(primary_key)
    sums = [f"{key}::int8"] + [stamp_sql(identifier(c)) for c in census_columns(columns, primary_key)[1:]]
    range_number = f"({key} / CAST(:range_size AS int8))"
    rows = con.run(
        # S608: identifiers quoted by identifier(), values bound or validated integers (ContentShare)
        f"SELECT {figures_sql(range_number, sums, row_hash, share)} FROM {identifier(table)} GROUP BY 1",  # noqa: S608
        range_size=range_size,
    )
    return figures_from_sql(rows)


def source_digests(
    con: pg8000.native.Connection, table: str, columns: list[Column], primary_key: str, range_size: int
) -> dict[int, RangeFigures]:
    """Every range's census and content digest: `source_figures` over the whole table."""
    return source_figures(con, table, columns, primary_key, range_size, ContentShare())


def range_intervals(ranges: Iterable[int], range_size: int) -> tuple[tuple[int, int], ...]:
    """The inclusive key intervals of these ranges, adjacent ones merged (ranges truncate towards zero)."""
    check_range_size(range_size)
    intervals: list[tuple[int, int]] = []
    for key_range in sorted(set(ranges)):
        low = key_range * range_size if key_range > 0 else key_range * range_size - range_size + 1
        high = key_range * range_size if key_range < 0 else key_range * range_size + range_size - 1
        if intervals and intervals[-1][1] + 1 == low:
            intervals[-1] = (intervals[-1][0], high)
        else:
            intervals.append((low, high))
    return tuple(intervals)


def source_rows(
    con: pg8000.native.Connection,
    table: str,
    columns: list[Column],
    primary_key: str,
    ranges: Iterable[int],
    range_size: int,
) -> pa.Table:
    """The source's current rows in these key ranges, typed exactly as the extract's batches are."""
    key_column(table, columns, primary_key)
    intervals = range_intervals(ranges, range_size)
    if not intervals:
        return arrow_schema(columns).empty_table()
    with changed_rows(con, table, columns, None, within=KeyIntervals(primary_key, intervals)) as batches:
        return pa.Table.from_batches(list(batches), schema=arrow_schema(columns))
