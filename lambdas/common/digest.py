"""Row hashes and key-range digests that PostgreSQL and Arrow compute identically.

Reconciliation (source against lake) and the load's verification (warehouse against lake) compare tables range by
range of an integer key without moving the rows: each side computes, per range, a row count and a digest, and only
the ranges that disagree are read again.

The digest of a range is the exact sum, over its rows, of the first 60 bits (15 hex digits) of the MD5 of
the row's canonical text. A sum does not depend on row order, so PostgreSQL can aggregate it in one pass
(`sum(int8)` is numeric there, so it never overflows) and Arrow can aggregate it as two 30-bit halves in
int64. MD5 is used as a checksum against accidents, not against an adversary who writes to the source.

The canonical text of a row is one field per column, in catalogue order, each followed by `,`. Each
column's field is a form both sides produce identically from what they hold:

- integers, and booleans (`true`/`false`): their decimal text;
- float4/float8: the IEEE 754 bit pattern read as a signed integer (`float8send` in SQL, a view in Arrow),
  so no decimal formatting is involved; `-0` differs from `0`, and NaN is the one PostgreSQL produces;
- date: days since 2000-01-01; timestamp: microseconds since 2000-01-01 00:00, which is PostgreSQL's own
  binary form (`timestamp_send`), so neither DateStyle nor numeric arithmetic is involved;
- everything else (numeric, text, varchar, timestamptz ...): PostgreSQL's own text output, which is what
  the extract's COPY wrote into the lake as a string, as `<length>:<text>` (length in characters), or `-`
  for NULL, so NULL, the empty string and texts holding `,` or `:` stay distinct. (timestamptz's text
  follows the session's TimeZone, which the extract's and this session share: the server's default.)

The numbers above are never empty and never hold `,`, so their NULL is the empty field. The text is hashed
as UTF-8 on both sides (converted in SQL only when the source's encoding is another one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from lambdas.common.catalog import Column
from lambdas.common.db import identifier

DEFAULT_RANGE_SIZE = 1000
HASH_BITS = 60
_HALF_BITS = 30  # each half summed in int64: exact for up to 2**33 rows per range
_HALF_MASK = (1 << _HALF_BITS) - 1


POSTGRES_EPOCH_DAYS = 10_957  # 2000-01-01 after 1970-01-01, Arrow's epoch
_POSTGRES_EPOCH_MICROSECONDS = POSTGRES_EPOCH_DAYS * 86_400_000_000


def _text(values: pa.Array) -> pa.Array:
    return pc.cast(values, pa.string())


def _bits(width: pa.DataType) -> Callable[[pa.Array], pa.Array]:
    return lambda values: _text(values.view(width))


def _days(values: pa.Array) -> pa.Array:
    return _text(pc.subtract(pc.cast(values, pa.int32()), POSTGRES_EPOCH_DAYS))


def _microseconds(values: pa.Array) -> pa.Array:
    return _text(pc.subtract(pc.cast(values, pa.int64()), _POSTGRES_EPOCH_MICROSECONDS))


def _sent(function: str, bits: int) -> str:
    """SQL: a value's binary send form (big-endian) read back as a signed integer, as text."""
    return f"('x' || encode({function}({{}}), 'hex'))::bit({bits})::int{bits // 8}::text"


# pg_type -> (SQL expression of its field, with {} for the quoted column; the same field from Arrow).
# A type missing here is a string in the lake (source._ARROW_TYPES) and is compared as PostgreSQL's text.
_NUMBERS: dict[str, tuple[str, Callable[[pa.Array], pa.Array]]] = {
    "int2": ("{}::text", _text),
    "int4": ("{}::text", _text),
    "int8": ("{}::text", _text),
    "bool": ("{}::text", _text),
    "float4": (_sent("float4send", 32), _bits(pa.int32())),
    "float8": (_sent("float8send", 64), _bits(pa.int64())),
    "date": ("({} - DATE '2000-01-01')::text", _days),
    "timestamp": (_sent("timestamp_send", 64), _microseconds),
    # time (the warehouse's, lambdas/load/verify.py): microseconds since midnight; extract() is exact numeric
    "time": ("(extract(epoch FROM {}) * 1000000)::int8::text", lambda values: _text(pc.cast(values, pa.int64()))),
}


@dataclass(frozen=True)
class RangeDigest:
    """One key range on one side: how many rows, and the sum of their 60-bit row hashes."""

    rows: int
    digest: int


def check_range_size(range_size: int) -> None:
    if range_size < 1:
        raise ValueError(f"range_size must be a positive number of keys, not {range_size}")


def row_text_sql(columns: list[Column]) -> str:
    """The SQL expression of a row's canonical text (see the module docstring)."""
    fields = []
    for column in columns:
        name = identifier(column.name)
        if column.pg_type in _NUMBERS:
            fields.append(f"coalesce({_NUMBERS[column.pg_type][0].format(name)}, '')")
        else:
            fields.append(f"coalesce(length({name}::text)::text || ':' || {name}::text, '-')")
    return " || ',' || ".join(fields) + " || ','"


def _row_text(rows: pa.Table, columns: list[Column]) -> pa.Array:
    fields = []
    for column in columns:
        values = rows[column.name].combine_chunks()
        if column.pg_type in _NUMBERS:
            fields.append(pc.fill_null(_NUMBERS[column.pg_type][1](values), ""))
        else:
            text = _text(values)
            length = _text(pc.utf8_length(text))
            fields.append(pc.fill_null(pc.binary_join_element_wise(length, text, ":"), "-"))
    return pc.binary_join_element_wise(*fields, "", ",")


def row_hashes(rows: pa.Table, columns: list[Column], *, chunk_rows: int = 65_536) -> pa.Array:
    """Each row's 60-bit hash (int64), the same number the source computes for the same row.

    In slices, so the canonical texts of a million rows never sit in memory at once."""
    if rows.num_rows == 0:
        return pa.array([], pa.int64())
    md5 = hashlib.md5
    hashed = []
    for start in range(0, rows.num_rows, chunk_rows):
        piece = rows.slice(start, chunk_rows)
        # The first 8 bytes of each digest, reversed, laid end to end: a little-endian uint64 buffer whose
        # values are the digests' first 64 bits read big-endian, as SQL's ('x' || hex)::bit reads them.
        texts = pc.cast(_row_text(piece, columns), pa.binary()).to_pylist()  # bytes: UTF-8, no decoding
        heads = b"".join([md5(text).digest()[7::-1] for text in texts])
        first64 = pa.Array.from_buffers(pa.uint64(), len(texts), [None, pa.py_buffer(heads)])
        hashed.append(pc.cast(pc.shift_right(first64, pa.scalar(64 - HASH_BITS, pa.uint64())), pa.int64()))
    return pa.concat_arrays(hashed)


def range_numbers(keys: pa.Array | pa.ChunkedArray, range_size: int) -> pa.Array | pa.ChunkedArray:
    return pc.divide(pc.cast(keys, pa.int64()), pa.scalar(range_size, pa.int64()))


def ledger_digests(entries: pa.Table, range_size: int) -> dict[int, RangeDigest]:
    """The same digests as `source_digests`, from a ledger with one entry per key."""
    check_range_size(range_size)
    if entries.num_rows == 0:
        return {}
    hashes = entries["hash"]
    grouped = (
        pa.table(
            {
                "range": range_numbers(entries["key"], range_size),
                "high": pc.shift_right(hashes, _HALF_BITS),
                "low": pc.bit_wise_and(hashes, _HALF_MASK),
            }
        )
        .group_by("range", use_threads=False)
        .aggregate([("high", "sum"), ("high", "count"), ("low", "sum")])
    )
    return {
        key_range: RangeDigest(count, (high << _HALF_BITS) + low)
        for key_range, count, high, low in zip(
            grouped["range"].to_pylist(),
            grouped["high_count"].to_pylist(),
            grouped["high_sum"].to_pylist(),
            grouped["low_sum"].to_pylist(),
            strict=True,
        )
    }


def differing_ranges(source: Mapping[int, RangeDigest], lake: Mapping[int, RangeDigest]) -> list[int]:
    """Ranges whose count or digest differ, including ranges that exist on one side only."""
    return sorted(r for r in source.keys() | lake.keys() if source.get(r) != lake.get(r))
