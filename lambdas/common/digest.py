"""Per-key-range figures that PostgreSQL and Arrow compute identically, in two tiers.

Reconciliation (source against lake) and the load's verification (warehouse against lake) compare tables range by
range of an integer key without moving the rows: each side computes a few numbers per range, and only the ranges
whose numbers disagree are read again. The numbers come in two tiers, because hashing every row's content is what
a comparison costs (a PostgreSQL aggregate of MD5s runs about 20 times longer than one of sums):

- the **census**, every range, every time: the row count and exact sums of a few integer columns (the key, and
  `last_updated` in microseconds where the table has it). It catches a lost, duplicated, inserted or deleted row
  and a version whose `last_updated` moved, without hashing anything;
- the **content digest**, the sum of the rows' 60-bit content hashes, for a `ContentShare` of the ranges: those
  whose number is `turn` modulo `every`. A caller that advances `turn` by one each time covers every range within
  `every` comparisons; a small table is digested whole every time. Only the digest sees an edit that left the
  census alone (a value changed without `last_updated` moving, a row edited in place in the warehouse).

Both tiers are computed in one pass on each side (`figures_sql`, `arrow_figures`): `RangeFigures` carries the
census and, for a range in the share, the digest, so two sides with the same share compare with `==`.

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
from itertools import pairwise
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lambdas.common.catalog import Column
from lambdas.common.db import identifier

DEFAULT_RANGE_SIZE = 1000
DEFAULT_CONTENT_EVERY = 7  # a nightly reconciliation digests every range's content within a week
WHOLE_TABLE_ROWS = 20_000  # a table smaller than this is digested whole every time: it costs next to nothing
HASH_BITS = 60
_HALF_BITS = 30  # each half summed in int64: exact for up to 2**33 rows per range
_HALF_MASK = (1 << _HALF_BITS) - 1
_FEW_RUNS = 64  # ascending runs of keys checked for overlap before falling back to counting distinct keys


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


def hashes_in_share(
    rows: pa.Table, columns: list[Column], numbers: pa.Array | pa.ChunkedArray, share: ContentShare | None
) -> pa.Array:
    """Each row's hash where its range number is in the share, null elsewhere (no share: null everywhere)."""
    if share is None or rows.num_rows == 0:
        return pa.nulls(rows.num_rows, pa.int64())
    if share.whole:
        return row_hashes(rows, columns)
    due = share.due(numbers)
    due = due.combine_chunks() if isinstance(due, pa.ChunkedArray) else due
    return pc.replace_with_mask(pa.nulls(rows.num_rows, pa.int64()), due, row_hashes(rows.filter(due), columns))


def unique_keys(keys: pa.ChunkedArray | pa.Array) -> bool:
    """Whether no key repeats. A table read in key order, or a few such parts laid end to end, is the common case:
    it splits into a few strictly ascending runs, unique when their key intervals do not overlap, told in one pass
    without hashing. Anything else is counted."""
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    if len(keys) < 2:
        return True
    breaks = pc.indices_nonzero(pc.invert(pc.greater(keys.slice(1), keys.slice(0, len(keys) - 1)))).to_pylist()
    if len(breaks) <= _FEW_RUNS:
        starts, ends = [0, *(b + 1 for b in breaks)], [*breaks, len(keys) - 1]
        runs = sorted((keys[a].as_py(), keys[b].as_py()) for a, b in zip(starts, ends, strict=True))
        if all(low > previous_high for (_, previous_high), (low, _) in pairwise(runs)):
            return True
    return pc.count_distinct(keys).as_py() == len(keys)


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


class LedgerMismatch(ValueError):
    """A ledger names a batch for a row the batch does not hold: the ledger cannot be believed."""


# --- the two tiers ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContentShare:
    """Which key ranges get the content digest this time: those whose number is `turn` modulo `every`.

    `every=1` is the whole table. Range numbers may be negative (integer division truncates towards zero); both
    sides take the non-negative remainder."""

    every: int = 1
    turn: int = 0

    def __post_init__(self) -> None:
        if self.every < 1 or not 0 <= self.turn < self.every:
            raise ValueError(f"a content share needs every >= 1 and 0 <= turn < every, not {self.every}, {self.turn}")

    @classmethod
    def rotating(cls, rows: int, counter: int, *, every: int = DEFAULT_CONTENT_EVERY) -> ContentShare:
        """The share of comparison number `counter` of a table of about `rows` rows: whole when it is small."""
        return cls() if rows < WHOLE_TABLE_ROWS or every <= 1 else cls(every, counter % every)

    @property
    def whole(self) -> bool:
        return self.every == 1

    def due(self, ranges: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
        """Arrow: which of these range numbers are in the share."""
        if self.whole:
            return pc.is_valid(ranges)
        every = pa.scalar(self.every, pa.int64())

        def truncated(values: Any) -> Any:  # as SQL's %: the sign of the dividend
            return pc.subtract(values, pc.multiply(pc.divide(values, every), every))

        return pc.equal(truncated(pc.add(truncated(pc.cast(ranges, pa.int64())), every)), self.turn)

    def sql(self, range_expression: str) -> str:
        """SQL: whether a row whose range number is `range_expression` is in the share."""
        if self.whole:
            return "TRUE"
        return f"((({range_expression}) % {self.every} + {self.every}) % {self.every} = {self.turn})"

    def as_dict(self) -> dict[str, int]:
        return {"every": self.every, "turn": self.turn}


@dataclass(frozen=True)
class RangeFigures:
    """One key range on one side: the census (row count, exact sums) and the content digest if it is in the share."""

    rows: int
    sums: tuple[int, ...]
    digest: int | None

    def census(self) -> tuple[int, tuple[int, ...]]:
        return self.rows, self.sums


def figures_sql(range_expression: str, sums: list[str], row_hash: str, share: ContentShare) -> str:
    """The select list of a PostgreSQL aggregate `... GROUP BY 1` whose rows `figures_from_sql` reads: range number,
    count, each sum, and the sum of row hashes over the rows in the share (`CASE`, so the others are not hashed)."""
    summed = "".join(f", sum({expression})::text" for expression in sums)
    hashed = row_hash if share.whole else f"CASE WHEN {share.sql(range_expression)} THEN {row_hash} END"
    return f"{range_expression}, count(*){summed}, sum({hashed})::text"


def figures_from_sql(rows: list[list[Any]]) -> dict[int, RangeFigures]:
    return {
        int(r[0]): RangeFigures(
            int(r[1]), tuple(0 if v is None else int(v) for v in r[2:-1]), None if r[-1] is None else int(r[-1])
        )
        for r in rows
    }


def _halves(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """An int64 as (high, low) with value = high * 2**30 + low, so sums of each stay exact in int64."""
    values = pc.cast(values, pa.int64())
    return pc.shift_right(values, _HALF_BITS), pc.bit_wise_and(values, _HALF_MASK)


def arrow_figures(
    ranges: pa.Array | pa.ChunkedArray,
    sums: list[pa.Array | pa.ChunkedArray],
    hashes: pa.Array | pa.ChunkedArray,
    share: ContentShare | None,
) -> dict[int, RangeFigures]:
    """The same figures as `figures_sql` from Arrow columns of one entry per row; `hashes` may be null outside the
    share (they are not summed there), never inside it. No share: the census alone (every digest None)."""
    if len(ranges) == 0:
        return {}
    if share is None:
        hashes = pa.nulls(len(ranges), pa.int64())
    else:
        due = share.due(ranges)
        if pc.any(pc.and_(due, pc.is_null(hashes))).as_py():
            raise ValueError("a row in the content share has no hash")
        hashes = pc.if_else(due, hashes, pa.scalar(None, pa.int64()))
    columns: dict[str, Any] = {"range": ranges}
    for i, values in enumerate([*sums, hashes]):
        columns[f"h{i}"], columns[f"l{i}"] = _halves(values)
    aggregates = [("range", "count")] + [(f"{p}{i}", "sum") for i in range(len(sums) + 1) for p in "hl"]
    grouped = pa.table(columns).group_by("range", use_threads=False).aggregate(aggregates).to_pydict()

    def exact(i: int, at: int) -> int | None:
        high, low = grouped[f"h{i}_sum"][at], grouped[f"l{i}_sum"][at]
        return None if high is None else (high << _HALF_BITS) + low

    figures = {}
    for at, key_range in enumerate(grouped["range"]):
        total = [exact(i, at) for i in range(len(sums))]
        figures[key_range] = RangeFigures(
            grouped["range_count"][at], tuple(t or 0 for t in total), exact(len(sums), at)
        )
    return figures


def stamp_sql(column: str) -> str:
    """SQL: a timestamp as microseconds since 1970-01-01 (exact: extract() is numeric), the census's int8."""
    return f"(extract(epoch FROM {column}) * 1000000)::int8"


def stamp_micros(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Arrow: the same microseconds as `stamp_sql`."""
    return pc.cast(pc.cast(values, pa.timestamp("us")), pa.int64())


def fill_hashes(
    entries: pa.Table,
    identity: list[str],
    needed: pa.Array | pa.ChunkedArray,
    hashed: Callable[[int, pa.Table], pa.Table],
    *,
    hash_column: str,
    seq_column: str,
) -> pa.Table:
    """A ledger (one entry per identity, a hash that may still be null, the batch that holds the row) with the hashes
    where `needed` filled: `hashed(seq, identities)` reads that batch and returns those identities with their hash.

    A ledger hashes rows lazily: the content tier needs a share of the ranges each time, so a row is hashed the first
    time its range is in the share (or differs in the census), and kept hashed. A batch that does not hold a row its
    ledger says it holds is refused: the ledger cannot be believed."""
    missing = pc.fill_null(pc.and_(needed, pc.is_null(entries[hash_column])), False)
    if not pc.any(missing).as_py():
        return entries
    todo = entries.filter(missing)
    found = []
    for seq in pc.unique(todo[seq_column]).to_pylist():
        wanted = todo.filter(pc.equal(todo[seq_column], seq)).select(identity)
        got = hashed(seq, wanted).select([*identity, hash_column])
        found.append(got.append_column(seq_column, pa.array([seq] * got.num_rows, pa.int64())))
    filled = todo.drop_columns([hash_column]).join(
        pa.concat_tables(found), [*identity, seq_column], join_type="left outer", use_threads=False
    )
    if filled.num_rows != todo.num_rows or filled[hash_column].null_count:
        raise LedgerMismatch(f"{todo.num_rows - (filled.num_rows - filled[hash_column].null_count)} rows are not in "
                         "the batches their ledger names")  # fmt: skip
    return pa.concat_tables([entries.filter(pc.invert(missing)), filled.select(entries.column_names)])
