"""Reconciliation: what the source holds now against what the lake has taken, range by range of the key.

The incremental extract trusts `last_updated` and its own state; this module checks both without
re-reading the source. Rows are grouped into key ranges (`key / range_size`, PostgreSQL's integer division,
which truncates towards zero; Arrow's does the same). For each range both sides compute (row count,
digest) and only ranges that disagree are read again, through the same COPY as the extract.

How a row is hashed, and a range's digest summed, on both sides: `lambdas.common.digest`.

A lake that holds exactly the source therefore reconciles to no differing range; anything else (a lost or
altered extract state, a change that did not move `last_updated`, an insert with an old `last_updated`, a
row deleted upstream) shows up as a differing range, and `diff` says which rows.

Call the source-side functions inside one `source.snapshot(con)`, so the digests and the rows re-read agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pg8000.native
import pyarrow as pa
import pyarrow.compute as pc

from lambdas.common.catalog import Column, arrow_schema
from lambdas.common.db import identifier
from lambdas.common.digest import (
    DEFAULT_RANGE_SIZE,
    HASH_BITS,
    RangeDigest,
    check_range_size,
    differing_ranges,
    ledger_digests,
    range_numbers,
    row_hashes,
    row_text_sql,
)
from lambdas.common.errors import PipelineError
from lambdas.extract.source import WATERMARK_COLUMN, KeyIntervals, changed_rows
from lambdas.transform.columns import keep_last

_INTEGER_KEYS = ("int2", "int4", "int8")
_DELETED_SAMPLE = 20  # deleted keys named in the JSON result; the full list stays in Drift


@dataclass(frozen=True)
class Drift:
    """What the lake lacks: source rows to write as a new ingestion batch, and keys deleted upstream."""

    rows: pa.Table  # the source's current versions, schema as changed_rows produces
    deleted_keys: pa.Array
    changed: int  # in the lake with another value
    missing: int  # not in the lake at all
    # Changed rows whose last_updated equals the lake's version's: a version the warehouse already holds
    # under the same (key, last_updated), so an insert-only fact table ignores it when loaded as new.
    quiet_keys: pa.Array

    @property
    def deleted(self) -> int:
        return len(self.deleted_keys)


@dataclass(frozen=True)
class ReconcileResult:
    """What one table's reconciliation found, for the stage's JSON result, the run report and a metric."""

    table: str
    ranges_compared: int
    ranges_differing: int
    source_rows_read: int
    rows_changed: int
    rows_changed_quietly: int
    rows_missing: int
    rows_deleted: int
    deleted_keys_sample: tuple[int, ...] = ()

    @property
    def drifted(self) -> bool:
        return self.ranges_differing > 0

    def as_dict(self) -> dict[str, object]:
        return {
            "table": self.table,
            "ranges_compared": self.ranges_compared,
            "ranges_differing": self.ranges_differing,
            "source_rows_read": self.source_rows_read,
            "rows_changed": self.rows_changed,
            "rows_changed_quietly": self.rows_changed_quietly,
            "rows_missing": self.rows_missing,
            "rows_deleted": self.rows_deleted,
            "deleted_keys_sample": list(self.deleted_keys_sample),
        }


@dataclass(frozen=True)
class Reconciliation:
    """The rows to feed through the stages, and the counts to report."""

    drift: Drift
    result: ReconcileResult


# --- the source side ----------------------------------------------------------------------------------------


def _key_column(table: str, columns: list[Column], primary_key: str) -> Column:
    for column in columns:
        if column.name == primary_key:
            if column.pg_type not in _INTEGER_KEYS:
                raise PipelineError(f"{table}: key {primary_key!r} is {column.pg_type}; ranges need an integer key")
            return column
    raise PipelineError(f"{table}: primary key column {primary_key!r} is missing from the source")


def source_digests(
    con: pg8000.native.Connection, table: str, columns: list[Column], primary_key: str, range_size: int
) -> dict[int, RangeDigest]:
    """Every key range's digest, computed inside the source in one read-only aggregate query."""
    _key_column(table, columns, primary_key)
    check_range_size(range_size)
    text = row_text_sql(columns)
    [[encoding]] = con.run("SELECT current_setting('server_encoding')")
    utf8 = text if encoding == "UTF8" else f"convert_to({text}, 'UTF8')"
    row_hash = f"('x' || substr(md5({utf8}), 1, {HASH_BITS // 4}))::bit({HASH_BITS})::int8"
    rows = con.run(
        # S608: identifiers quoted by identifier(), values bound
        f"SELECT {identifier(primary_key)} / CAST(:range_size AS int8), count(*), sum({row_hash})::text "  # noqa: S608
        f"FROM {identifier(table)} GROUP BY 1",
        range_size=range_size,
    )
    return {int(key_range): RangeDigest(int(count), int(digest)) for key_range, count, digest in rows}


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
    _key_column(table, columns, primary_key)
    intervals = range_intervals(ranges, range_size)
    if not intervals:
        return arrow_schema(columns).empty_table()
    with changed_rows(con, table, columns, None, within=KeyIntervals(primary_key, intervals)) as batches:
        return pa.Table.from_batches(list(batches), schema=arrow_schema(columns))


# --- the lake side ------------------------------------------------------------------------------------------


def _latest(rows: pa.Table, columns: list[Column], primary_key: str) -> pa.Table:
    """The lake's last version of each key, in the source's columns; one version a key is the common case."""
    if rows.num_rows == 0:  # an empty lake may not even have the columns
        return arrow_schema(columns).empty_table()
    if pc.count_distinct(rows[primary_key]).as_py() != rows.num_rows:
        rows = keep_last(rows, primary_key)
    return _conform(rows, columns)


def _conform(rows: pa.Table, columns: list[Column]) -> pa.Table:
    """The lake's rows in the source's column order and types; a column the lake never saw is all NULL."""
    arrays = [
        pc.cast(rows[c.name], c.arrow_type) if c.name in rows.column_names else pa.nulls(rows.num_rows, c.arrow_type)
        for c in columns
    ]
    return pa.Table.from_arrays(arrays, schema=arrow_schema(columns))


LEDGER_SCHEMA = pa.schema([("key", pa.int64()), ("hash", pa.int64()), ("stamp", pa.timestamp("us"))])


def ledger(rows: pa.Table, columns: list[Column], primary_key: str) -> pa.Table:
    """What the lake has taken, small: (key, row hash, last_updated) of each row, in the rows' order.

    A reconciliation keeps the ledger of the latest version of every key instead of the rows themselves: 24
    bytes a row, so comparing a table never holds the table, and the next one hashes only the rows since."""
    if rows.num_rows == 0:
        return LEDGER_SCHEMA.empty_table()
    rows = _conform(rows, columns)
    return pa.table(
        {
            "key": pc.cast(rows[primary_key], pa.int64()),
            "hash": row_hashes(rows, columns),
            "stamp": pc.cast(rows[WATERMARK_COLUMN], pa.timestamp("us")),
        },
        schema=LEDGER_SCHEMA,
    )


def latest_entries(ledgers: Iterable[pa.Table]) -> pa.Table:
    """The last entry of each key over ledgers given oldest first (later versions win)."""
    collected = [t for t in ledgers if t.num_rows]
    if not collected:
        return LEDGER_SCHEMA.empty_table()
    combined = pa.concat_tables(collected)
    if pc.count_distinct(combined["key"]).as_py() != combined.num_rows:
        combined = keep_last(combined, "key")
    return combined


def lake_digests(
    lake_rows: pa.Table, columns: list[Column], primary_key: str, range_size: int
) -> dict[int, RangeDigest]:
    """The same digests as `source_digests`, from the lake's rows (every version; the last one of a key counts)."""
    check_range_size(range_size)
    return ledger_digests(ledger(_latest(lake_rows, columns, primary_key), columns, primary_key), range_size)


# --- comparing ----------------------------------------------------------------------------------------------


def diff(
    source: pa.Table,
    lake_rows: pa.Table,
    columns: list[Column],
    primary_key: str,
    ranges: Iterable[int],
    range_size: int,
) -> Drift:
    """The source rows the lake lacks or holds otherwise, and the lake's keys the source no longer has."""
    entries = ledger(_latest(lake_rows, columns, primary_key), columns, primary_key)
    return diff_ledger(source, entries, columns, primary_key, ranges, range_size)


def diff_ledger(
    source: pa.Table,
    entries: pa.Table,
    columns: list[Column],
    primary_key: str,
    ranges: Iterable[int],
    range_size: int,
) -> Drift:
    """The source rows the ledger lacks or holds otherwise, and the ledger's keys the source no longer has.

    `source` holds the source's rows in `ranges` (source_rows); the ledger's keys outside those ranges are not
    looked at, so keys the source never re-read are not mistaken for deleted ones.
    """
    if WATERMARK_COLUMN not in {c.name for c in columns}:
        raise PipelineError(f"column {WATERMARK_COLUMN!r} is missing, so versions cannot be told apart")
    wanted = pa.array(sorted(set(ranges)), pa.int64())
    entries = entries.filter(pc.is_in(range_numbers(entries["key"], range_size), value_set=wanted))
    source = _conform(source, columns)
    ours = pa.table(
        {
            "key": pc.cast(source[primary_key], pa.int64()),
            "source_hash": row_hashes(source, columns),
            "source_stamp": pc.cast(source[WATERMARK_COLUMN], pa.timestamp("us")),
            "row": pa.array(range(source.num_rows), pa.int64()),
        }
    )
    theirs = entries.rename_columns(["key", "lake_hash", "lake_stamp"])
    joined = ours.join(theirs, "key", join_type="left outer", use_threads=False).sort_by("row")
    absent = pc.is_null(joined["lake_hash"])
    different = pc.fill_null(pc.not_equal(joined["source_hash"], joined["lake_hash"]), False)
    quiet = pc.and_(different, pc.fill_null(pc.equal(joined["source_stamp"], joined["lake_stamp"]), False))
    deleted = pc.filter(theirs["key"], pc.invert(pc.is_in(theirs["key"], value_set=ours["key"])))
    return Drift(
        rows=source.take(pc.filter(joined["row"], pc.or_(absent, different))),
        deleted_keys=_sorted(deleted),
        changed=pc.sum(different).as_py() or 0,
        missing=pc.sum(absent).as_py() or 0,
        quiet_keys=_sorted(pc.filter(joined["key"], quiet)),
    )


def _sorted(keys: pa.Array | pa.ChunkedArray) -> pa.Array:
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    return keys.take(pc.sort_indices(keys))


def reconcile(
    con: pg8000.native.Connection,
    table: str,
    columns: list[Column],
    primary_key: str,
    lake_rows: pa.Table,
    *,
    range_size: int = DEFAULT_RANGE_SIZE,
) -> Reconciliation:
    """One table end to end: digests on both sides, the differing ranges re-read, and what differs in them."""
    entries = ledger(_latest(lake_rows, columns, primary_key), columns, primary_key)
    return reconcile_ledger(con, table, columns, primary_key, entries, range_size=range_size)


def reconcile_ledger(
    con: pg8000.native.Connection,
    table: str,
    columns: list[Column],
    primary_key: str,
    entries: pa.Table,
    *,
    range_size: int = DEFAULT_RANGE_SIZE,
) -> Reconciliation:
    """`reconcile` against a ledger with one entry per key (what the extract keeps between reconciliations)."""
    source = source_digests(con, table, columns, primary_key, range_size)
    lake = ledger_digests(entries, range_size)
    ranges = differing_ranges(source, lake)
    reread = source_rows(con, table, columns, primary_key, ranges, range_size)
    drift = diff_ledger(reread, entries, columns, primary_key, ranges, range_size)
    result = ReconcileResult(
        table=table,
        ranges_compared=len(source.keys() | lake.keys()),
        ranges_differing=len(ranges),
        source_rows_read=reread.num_rows,
        rows_changed=drift.changed,
        rows_changed_quietly=len(drift.quiet_keys),
        rows_missing=drift.missing,
        rows_deleted=drift.deleted,
        deleted_keys_sample=tuple(drift.deleted_keys[:_DELETED_SAMPLE].to_pylist()),
    )
    return Reconciliation(drift, result)
