"""Reading totesys: which columns a table has, and its changed rows as Arrow, through the bulk reader.

The role the pipeline uses may only SELECT, so nothing here writes to totesys. Values never enter SQL
text: the lower bound (and any key intervals) travel through `set_config(..., $1)` as bind parameters,
because the bulk reader's COPY cannot take parameters itself; table and column names come from the catalogue
and are quoted as identifiers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import pg8000.native
import pyarrow as pa
import pyarrow.compute as pc

from lambdas.common.catalog import ARROW_TYPES, Column, arrow_schema
from lambdas.common.db import Connection, identifier
from lambdas.common.errors import PipelineError, UnknownTableError, truncated
from lambdas.common.tables import PRIMARY_KEYS, TEXT_DATE_COLUMNS
from lambdas.extract.bulk import record_batches

WATERMARK_COLUMN = "last_updated"
_SINCE_SETTING = "totesys_etl.since"
_LOW_SETTING = "totesys_etl.key_low"
_HIGH_SETTING = "totesys_etl.key_high"


def table_columns(con: pg8000.native.Connection, table: str) -> list[Column]:
    """The table's columns from the catalogue; an unknown table is an error that names it."""
    rows = con.run(
        "SELECT a.attname, t.typname FROM pg_catalog.pg_attribute a "
        "JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = to_regclass(quote_ident(:table)) AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum",
        table=table,
    )
    if not rows:
        raise UnknownTableError(f"table {table!r} does not exist in the source database (or is not visible)")
    return [Column(name, pg_type) for name, pg_type in rows]


@dataclass(frozen=True)
class KeyIntervals:
    """Only the rows whose integer `key` lies in one of the inclusive [low, high] intervals.

    Reconciliation re-reads just the key ranges whose digests differ; the intervals should not overlap,
    or a row would be read once per interval that holds it.
    """

    key: str
    intervals: tuple[tuple[int, int], ...]

    def bounds_text(self, side: int) -> str:
        """The lows (side 0) or highs (side 1) as a PostgreSQL array literal, to be sent as a parameter."""
        return "{" + ",".join(str(int(bounds[side])) for bounds in self.intervals) + "}"


@contextmanager
def changed_rows(
    con: Connection,
    table: str,
    columns: list[Column],
    since: datetime | None,
    *,
    within: KeyIntervals | None = None,
    block_bytes: int = 16 * 1024 * 1024,
) -> Iterator[Iterator[pa.RecordBatch]]:
    """Rows with last_updated >= since (all rows when since is None), streamed as Arrow record batches.

    With `within`, only rows whose key lies in those intervals (joined to them, so each interval is an index
    range scan on the key). The rows come through the bulk reader (binary COPY decoded in C, batches of about
    `block_bytes`), in the snapshot of `con`'s transaction: call it inside `snapshot`. Every column that the lake
    keeps as text is read as PostgreSQL's own text output (`::text`), the form the reconciliation digests hash.
    A batch with a timestamp or date the pipeline cannot carry raises UncarriedValues (see `uncarried`).
    """
    names = [c.name for c in columns]
    if WATERMARK_COLUMN not in names:
        raise PipelineError(f"{table}: column {WATERMARK_COLUMN!r} is missing, so changes cannot be found")
    source = identifier(table)
    schema = arrow_schema(columns)
    # S608: identifiers quoted by identifier(), values bound
    select = f"SELECT {', '.join(_selected(source, c) for c in columns)} FROM {source}"  # noqa: S608
    settings: dict[str, str] = {}
    if within is not None:
        settings.update({_LOW_SETTING: within.bounds_text(0), _HIGH_SETTING: within.bounds_text(1)})
        select += (
            f" JOIN unnest(current_setting('{_LOW_SETTING}')::int8[], current_setting('{_HIGH_SETTING}')::int8[])"
            f" AS totesys_etl_bounds(low, high)"
            f" ON {source}.{identifier(within.key)} BETWEEN totesys_etl_bounds.low AND totesys_etl_bounds.high"
        )
    if since is not None:
        settings[_SINCE_SETTING] = since.isoformat(sep=" ")
        select += f" WHERE {source}.{identifier(WATERMARK_COLUMN)} >= current_setting('{_SINCE_SETTING}')::timestamp"
    with record_batches(con, select, settings, batch_bytes=block_bytes) as batches:
        yield (_carried(_conformed(batch, schema, table), table) for batch in batches if batch.num_rows)


def _carried(batch: pa.RecordBatch, table: str) -> pa.RecordBatch:
    """The batch, unless a row holds an instant the pipeline cannot carry: then the whole read is refused."""
    primary_key = PRIMARY_KEYS.get(table) or batch.schema.names[0]  # a table outside the contract: its first column
    if primary_key not in batch.schema.names:
        raise PipelineError(f"{table}: primary key column {primary_key!r} is missing from the source")
    refused = uncarried(batch, table, primary_key, TEXT_DATE_COLUMNS.get(table, ()))
    if refused is not None:
        raise refused
    return batch


# The instants the pipeline carries: what every stage after the extract (Arrow's conversions, Python's datetime,
# the warehouse's dim_date) can hold. PostgreSQL also stores 'infinity', '-infinity', BC dates and years up to
# 294276 (timestamps) or 5874897 (dates); the bulk reader decodes some of those into numbers that mean nothing.
CARRIED_FROM, CARRIED_TO = datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999)
_SAMPLE = 5


class UncarriedValues(PipelineError):
    """Rows holding an instant outside CARRIED_FROM..CARRIED_TO: the read is refused, naming table, key and column,
    so nothing of it reaches the lake; `keys` are the rows' primary keys, to be read again once they are fixed."""

    def __init__(self, table: str, primary_key: str, found: list[tuple[int, list[str]]]) -> None:
        self.keys = [key for key, _ in found]
        named = "; ".join(f"{primary_key}={key} {', '.join(columns)}" for key, columns in found[:_SAMPLE])
        more = f" and {len(found) - _SAMPLE} more rows" if len(found) > _SAMPLE else ""
        super().__init__(
            f"{table}: {named}{more}: a value outside the years 1 to 9999 ('infinity', '-infinity', a BC date, a "
            "year past 9999, or a text date that is not 'YYYY-MM-DD'), which the lake and the warehouse cannot hold. "
            "Nothing of this read was kept and the watermark did not move; fix the rows in the source and the next "
            "run reads them again"
        )


def _carried_bounds(kind: pa.DataType) -> tuple[pa.Scalar, pa.Scalar]:
    """CARRIED_FROM and CARRIED_TO as the stored numbers of a timestamp or date type (days, or its time unit)."""
    low, high = (CARRIED_FROM.date(), CARRIED_TO.date()) if pa.types.is_date(kind) else (CARRIED_FROM, CARRIED_TO)
    storage = pa.int32() if kind == pa.date32() else pa.int64()
    return pa.scalar(low, kind).cast(storage), pa.scalar(high, kind).cast(storage)


_DATE_TEXT = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"  # what the transform's cast to date32 takes: exactly 'YYYY-MM-DD'


def _outside(values: pa.Array, kind: pa.DataType) -> pa.Array:
    """Per value: true where it is not an instant (or, for a text date, a 'YYYY-MM-DD' day) of the carried years."""
    if pa.types.is_string(kind):
        try:  # the transform's own cast: when it takes every value (the usual case), only year 0 is left to refuse
            days = pc.cast(values, pa.date32())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        else:
            return _outside(days, pa.date32())
        shaped = pc.match_substring_regex(values, _DATE_TEXT)
        parsed = pc.strptime(values, format="%Y-%m-%d", unit="us", error_is_null=True)
        low, high = _carried_bounds(pa.timestamp("us"))
        stored = parsed.view(pa.int64())
        in_years = pc.and_(pc.greater_equal(stored, low), pc.less_equal(stored, high))
        same_day = pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), values)  # strptime takes 02-30 as 03-02
        carried = pc.and_(shaped, pc.and_(in_years, same_day))
        return pc.and_(pc.is_valid(values), pc.invert(pc.fill_null(carried, False)))
    low, high = _carried_bounds(kind)
    stored = values.view(low.type)
    return pc.fill_null(pc.or_(pc.less(stored, low), pc.greater(stored, high)), False)


def uncarried(
    batch: pa.RecordBatch, table: str, primary_key: str, text_dates: tuple[str, ...] = ()
) -> UncarriedValues | None:
    """The rows of a decoded batch whose timestamps, dates or text dates lie outside what the pipeline carries, or
    None. A value the driver could not decode lands outside too: it wraps past the int64 range. Arrow compute over
    the columns; only the offending rows become Python values, for the message."""
    flagged: dict[str, pa.Array] = {}
    for field in batch.schema:
        kind = field.type
        if pa.types.is_timestamp(kind) or pa.types.is_date(kind) or (field.name in text_dates and kind == pa.string()):
            outside = _outside(batch.column(field.name), kind)
            if pc.any(outside).as_py():
                flagged[field.name] = outside
    if not flagged:
        return None
    masks = list(flagged.values())
    any_outside = masks[0]
    for mask in masks[1:]:
        any_outside = pc.or_(any_outside, mask)
    shown = {f"{name}.shown": batch.column(name) for name in flagged if batch.schema.field(name).type == pa.string()}
    rows = pa.table({primary_key: batch.column(primary_key), **flagged, **shown}).filter(any_outside).to_pylist()
    return UncarriedValues(table, primary_key, [(row[primary_key], [_named(table, c, row) for c in flagged if row[c]])
                                                for row in rows])  # fmt: skip


def _named(table: str, column: str, row: dict[str, object]) -> str:
    """`table.column`, with the value when it is text (a decoded instant out of range may be any number)."""
    text = row.get(f"{column}.shown")
    return f"{table}.{column}" if text is None else f"{table}.{column} = {truncated(repr(text), 60)}"


def _selected(source: str, column: Column) -> str:
    """A column as the lake types it: the types of ARROW_TYPES decoded from binary, any other as its text."""
    name = identifier(column.name)
    return f"{source}.{name}" if column.pg_type in ARROW_TYPES else f"{source}.{name}::text AS {name}"


def _conformed(batch: pa.RecordBatch, schema: pa.Schema, table: str) -> pa.RecordBatch:
    """The batch in the lake's schema; the driver's types are expected to be it already, and a difference that a
    safe cast cannot bridge is an error, never a silent change of the lake's contract."""
    if batch.schema.equals(schema):
        return batch
    if batch.schema.names != schema.names:
        raise PipelineError(f"{table}: the bulk read returned columns {batch.schema.names}, not {schema.names}")
    try:
        return batch.cast(schema, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise PipelineError(f"{table}: the bulk read returned {batch.schema}, which is not {schema}: {exc}") from exc


def count_keys(con: pg8000.native.Connection, table: str, primary_key: str, keys: list[int]) -> int:
    """How many of these primary keys the table still has (an index lookup each)."""
    # S608: identifiers quoted by identifier(), values bound
    rows = con.run(f"SELECT count(*) FROM {identifier(table)} WHERE {identifier(primary_key)} = ANY(:keys)", keys=keys)  # noqa: S608
    return int(rows[0][0])


def source_clock(con: pg8000.native.Connection) -> datetime:
    """The source's own clock, as the start of the snapshot's transaction, in the type of last_updated."""
    return con.run("SELECT localtimestamp")[0][0]


@contextmanager
def snapshot(con: pg8000.native.Connection) -> Iterator[None]:
    """One consistent, read-only view of the table for the catalogue read and the bulk read, which imports this
    transaction's snapshot into its own connection (pg_export_snapshot), so both see the same rows."""
    con.run("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        yield
    finally:
        con.run("ROLLBACK")
