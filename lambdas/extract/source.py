"""Reading totesys: which columns a table has, and its changed rows as Arrow, through COPY.

The role the pipeline uses may only SELECT, so nothing here writes to totesys. Values never enter SQL
text: the lower bound (and any key intervals) travel through `set_config(..., $1)` as bind parameters,
because COPY cannot take parameters itself; table and column names come from the catalogue and are quoted
as identifiers.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import pg8000.native
import pyarrow as pa
import pyarrow.csv as pcsv

from lambdas.common.db import identifier
from lambdas.common.errors import PipelineError, UnknownTableError

# PostgreSQL type (pg_type.typname) -> Arrow type in the ingestion Parquet. numeric stays text: the
# source's numeric is unscaled, and text is the only lossless form; the transform casts it to the
# warehouse's numeric(10, 2) and refuses values that would lose digits.
_ARROW_TYPES: dict[str, pa.DataType] = {
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
}
WATERMARK_COLUMN = "last_updated"
_SINCE_SETTING = "totesys_etl.since"
_LOW_SETTING = "totesys_etl.key_low"
_HIGH_SETTING = "totesys_etl.key_high"


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW_TYPES.get(self.pg_type, pa.string())


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


def arrow_schema(columns: list[Column]) -> pa.Schema:
    return pa.schema([(c.name, c.arrow_type) for c in columns])


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
    con: pg8000.native.Connection,
    table: str,
    columns: list[Column],
    since: datetime | None,
    *,
    within: KeyIntervals | None = None,
    block_bytes: int = 16 * 1024 * 1024,
) -> Iterator[Iterator[pa.RecordBatch]]:
    """Rows with last_updated >= since (all rows when since is None), streamed as Arrow record batches.

    With `within`, only rows whose key lies in those intervals (joined to them, so each interval is an index
    range scan on the key). COPY writes CSV to a temporary file (Lambda's /tmp), and Arrow parses it in blocks,
    so memory stays bounded by the block size, not by the table. The settings are transaction-local: call it
    inside `snapshot`.
    """
    names = [c.name for c in columns]
    if WATERMARK_COLUMN not in names:
        raise PipelineError(f"{table}: column {WATERMARK_COLUMN!r} is missing, so changes cannot be found")
    source = identifier(table)
    # S608: identifiers quoted by identifier(), values bound
    select = f"SELECT {', '.join(f'{source}.{identifier(n)}' for n in names)} FROM {source}"  # noqa: S608
    if within is not None:
        for name, side in ((_LOW_SETTING, 0), (_HIGH_SETTING, 1)):
            con.run("SELECT set_config(:name, :value, true)", name=name, value=within.bounds_text(side))
        select += (
            f" JOIN unnest(current_setting('{_LOW_SETTING}')::int8[], current_setting('{_HIGH_SETTING}')::int8[])"
            f" AS totesys_etl_bounds(low, high)"
            f" ON {source}.{identifier(within.key)} BETWEEN totesys_etl_bounds.low AND totesys_etl_bounds.high"
        )
    if since is not None:
        con.run("SELECT set_config(:name, :value, true)", name=_SINCE_SETTING, value=since.isoformat(sep=" "))
        select += f" WHERE {source}.{identifier(WATERMARK_COLUMN)} >= current_setting('{_SINCE_SETTING}')::timestamp"
    with tempfile.TemporaryFile() as spool:  # C-level buffered writes: COPY hands over one row per call
        con.run(f"COPY ({select}) TO STDOUT WITH (FORMAT csv)", stream=spool)
        spool.seek(0)
        if spool.read(1) == b"":
            yield iter(())
            return
        spool.seek(0)
        reader = pcsv.open_csv(
            spool,
            read_options=pcsv.ReadOptions(column_names=names, block_size=block_bytes),
            # COPY's CSV: an unquoted empty field is NULL, a quoted one ("") is the empty string.
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(
                column_types=arrow_schema(columns),
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                true_values=["t"],
                false_values=["f"],
            ),
        )
        yield iter(reader)


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
    """One consistent, read-only view of the table for the catalogue read and the COPY."""
    con.run("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        yield
    finally:
        con.run("ROLLBACK")
