"""Column-level rules shared by every transform: required columns and exact casts with clear errors.

These are where bad input is caught. Each error names the source table, the column and the first value
at fault, and no output is written for that table.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from lambdas.common.errors import PipelineError

MONEY = pa.decimal128(10, 2)
TIME = pa.time64("us")


def require(table: pa.Table, source: str, columns: list[str], needed_by: str) -> None:
    """A dropped or renamed source column fails loudly, naming table and column."""
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise PipelineError(f"{source}: column {', '.join(missing)} is missing from the source; {needed_by} needs it")


def _first_bad(values: pa.ChunkedArray, target: pa.DataType) -> object:
    for value in values.to_pylist():
        if value is None:
            continue
        try:
            pc.cast(pa.array([value]), target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return value
    return None


def cast_exact(table: pa.Table, source: str, column: str, target: pa.DataType) -> pa.ChunkedArray:
    """Cast a column without losing anything (decimal digits, date text); refuse it otherwise."""
    values = table[column]
    try:
        return pc.cast(values, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        bad = _first_bad(values, target)
        raise PipelineError(f"{source}.{column}: value {bad!r} cannot be stored as {target} ({exc})") from exc


# Significant digits PostgreSQL keeps when it casts a float to numeric (DBL_DIG, FLT_DIG in float8_numeric).
_PG_FLOAT_DIGITS = {pa.float64(): 15, pa.float32(): 6, pa.float16(): 3}


def _as_postgres_text(values: pa.ChunkedArray) -> pa.Array:
    """A float column as the decimal text PostgreSQL's own float-to-numeric cast starts from.

    Arrow's float-to-decimal cast rounds the binary value (2.675 is 2.67499999… in binary, so 2.67), where
    PostgreSQL rounds its 15-digit decimal text (2.675, so 2.68): taking PostgreSQL's text keeps the digits
    a person sees in the source, and the exact cast then refuses, as for a numeric, what would lose some.
    """
    digits = _PG_FLOAT_DIGITS[values.type]
    return pa.array([None if v is None else f"{v:.{digits}g}" for v in values.to_pylist()], pa.string())


def money(table: pa.Table, source: str, column: str) -> pa.ChunkedArray:
    """Source numeric (kept as text by extract) to numeric(10, 2) with no float on the way.

    A source column that drifted to a floating type goes through PostgreSQL's decimal text, never Arrow's
    binary rounding, so no value changes silently.
    """
    if column in table.column_names and pa.types.is_floating(table[column].type):
        index = table.column_names.index(column)
        table = table.set_column(index, column, _as_postgres_text(table[column]))
    return cast_exact(table, source, column, MONEY)


def text_date(table: pa.Table, source: str, column: str) -> pa.ChunkedArray:
    """A 'YYYY-MM-DD' text column to a date."""
    return cast_exact(table, source, column, pa.date32())


def split_timestamp(table: pa.Table, column: str) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """A timestamp to (date, time), keeping the fraction of a second."""
    values = pc.cast(table[column], pa.timestamp("us"))
    return pc.cast(values, pa.date32()), pc.cast(values, TIME)


def keep_last(table: pa.Table, key: str) -> pa.Table:
    """The last row for each key, in the order the rows were observed (later batches win)."""
    if table.num_rows == 0:
        return table
    numbered = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
    last = numbered.group_by(key, use_threads=False).aggregate([("__row", "max")])["__row_max"]
    return table.take(pc.take(last, pc.sort_indices(last)))


def keep_first_version(table: pa.Table, key: str) -> pa.Table:
    """One row per (key, last_updated): a version seen twice (a re-read window, a retry) counts once."""
    if table.num_rows == 0:
        return table
    numbered = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
    first = numbered.group_by([key, "last_updated"], use_threads=False).aggregate([("__row", "min")])["__row_min"]
    return table.take(pc.take(first, pc.sort_indices(first)))
