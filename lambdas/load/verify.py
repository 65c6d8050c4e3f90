"""Verification: each warehouse table against what the pipeline loaded into it, range by range of its key.

Reconciliation (lambdas/extract/reconcile.py) checks the source against the lake; nothing there sees a row
deleted or edited in the warehouse itself (a mistaken DELETE, a manual fix). This module compares the warehouse
with the processed lake the same cheap way, and restores what differs from the lake:

- *What the warehouse should hold* is the processed batches of the table's current epoch up to the load's
  cursor, as the load merged them. A dimension holds the latest row of each key (the load upserts, later
  batches win). A fact holds every version: the first row of each version key (source id, last_updated date
  and time), since the load inserts a version once and ignores it after that; the fact rows the load holds
  back for a missing dimension row (lambdas/load/held.py) are left out, being absent on purpose.
- Both sides are compared per key range in the two tiers of lambdas/common/digest.py: the census of every range
  (row count and the sums of the identity's columns as integers: a fact's source id, last_updated date and time;
  a dimension's key), which finds a row deleted from or inserted into the warehouse; and the content digest (sum
  of 60-bit row hashes) of a rotating share of the ranges, which also finds a row edited in place. Each
  verification takes the next share, so every warehouse row's content is verified within
  `DEFAULT_CONTENT_EVERY` verifications; a table under `WHOLE_TABLE_ROWS` rows is digested whole every time. The
  warehouse's side is one aggregate query inside PostgreSQL, the lake's comes from Arrow. A fact's range is over
  its source id (all versions of an id fall into one range); dim_date's over days since 2000-01-01. A fact's
  surrogate key (`sales_record_id` ...) is not compared: it is the warehouse's own.
- Only ranges that differ are read again from the warehouse, as (identity, row hash), and compared row by row:
  a row the lake has and the warehouse lacks or holds otherwise is restored from the lake in one transaction
  (a dimension row upserted; a fact version deleted and inserted again, so it gets a new surrogate key).
- The lake's side is kept as a ledger (identity, range key, row hash and batch of each row the warehouse should
  hold) named by a checkpoint, `_state/verify/<table>.json`: the next verification reads only the batches loaded
  since. Rows are hashed lazily: from the epoch's base, a row is hashed when its range is first in the share (or
  differs in the census), read again from the batch its entry names; the ledger keeps the hash. A checkpoint
  that is missing, unreadable, of other columns, of another format or of another epoch is ignored, and the epoch
  is read from its base.
- A warehouse row the lake does not have (a fact version or a dimension row from before a repair started the
  lake's current epoch, or a row inserted by hand) is reported, never deleted: the lake cannot say it is wrong,
  and facts may point at a dimension row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pg8000.native
import pyarrow as pa
import pyarrow.compute as pc
from botocore.exceptions import ClientError

from lambdas.common.catalog import Column
from lambdas.common.db import database_identity, identifier
from lambdas.common.digest import (
    DEFAULT_RANGE_SIZE,
    HASH_BITS,
    POSTGRES_EPOCH_DAYS,
    ContentShare,
    LedgerMismatch,
    RangeFigures,
    arrow_figures,
    differing_ranges,
    figures_from_sql,
    figures_sql,
    fill_hashes,
    hashes_in_share,
    range_numbers,
    row_text_sql,
    unique_keys,
)
from lambdas.common.errors import StateError
from lambdas.common.keys import VERIFY_STAGE, verify_ledger_key
from lambdas.common.lake import BatchLog, Bucket, ReaderState
from lambdas.common.tables import FACTS, TRANSFORM_INPUTS, require_warehouse_table
from lambdas.load import held
from lambdas.load.warehouse import INSERT_ONLY, _csv, merge_batch, primary_key

STAGE = "load"
TRANSFORM_STAGE = "transform"
DRIFT_METRIC = "WarehouseDriftRows"
_SAMPLE = 20
_EPOCH = "DATE '2000-01-01'"
_RANGE, _HASH, _SEQ, _WAREHOUSE_HASH = "__range", "__hash", "__seq", "__warehouse_hash"
_WHOLE = ContentShare()


@dataclass(frozen=True)
class VerifyResult:
    """What one table's verification found and restored, for the load's result, the run report and a metric."""

    table: str
    ranges_compared: int = 0
    ranges_differing: int = 0
    rows_missing: int = 0  # in the lake, not in the warehouse: restored
    rows_changed: int = 0  # in both, with other values: restored from the lake
    rows_not_in_lake: int = 0  # in the warehouse only: reported, kept
    not_in_lake_sample: tuple[str, ...] = ()
    skipped: str = ""  # why nothing was compared (nothing loaded yet, a cursor of another warehouse)

    @property
    def restored(self) -> int:
        return self.rows_missing + self.rows_changed

    def as_dict(self) -> dict[str, object]:
        return {"table": self.table, "ranges_compared": self.ranges_compared,
                "ranges_differing": self.ranges_differing, "rows_missing": self.rows_missing,
                "rows_changed": self.rows_changed, "rows_restored": self.restored,
                "rows_not_in_lake": self.rows_not_in_lake, "not_in_lake_sample": list(self.not_in_lake_sample),
                **({"skipped": self.skipped} if self.skipped else {})}  # fmt: skip


@dataclass(frozen=True)
class Shape:
    """How a warehouse table is compared: its compared columns, its identity and the column its ranges cut."""

    columns: list[Column]
    types: dict[str, pa.DataType]  # each compared column's Arrow type, from its SQL type (held.arrow_type)
    identity: list[str]  # a dimension's primary key; a fact's version key
    ranged: str  # the first identity column: the key ranges are over it

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([(c.name, self.types[c.name]) for c in self.columns])

    def signature(self) -> list[list[str]]:
        """What a ledger was computed from: the compared columns, their types, the identity."""
        return [[c.name, c.pg_type] for c in self.columns] + [["identity", *self.identity]]

    def range_sql(self) -> str:
        column = identifier(self.ranged)
        if self._is_date():
            return f"(({column} - {_EPOCH})::int8 / CAST(:range_size AS int8))"
        return f"({column}::int8 / CAST(:range_size AS int8))"

    def range_keys(self, rows: pa.Table) -> pa.Array:
        """The lake side of range_sql: an int64 per row whose division by the range size is its range."""
        values = rows[self.ranged]
        if self._is_date():
            return pc.subtract(pc.cast(values, pa.int32()).cast(pa.int64()), POSTGRES_EPOCH_DAYS)
        return pc.cast(values, pa.int64())

    def _is_date(self) -> bool:
        return next(c for c in self.columns if c.name == self.ranged).pg_type == "date"

    def census_sql(self) -> list[str]:
        """The census's sums: each identity column as an integer (days since 2000 of a date, microseconds of a
        time)."""
        kinds = {c.name: c.pg_type for c in self.columns}
        forms = {"date": f"({{}} - {_EPOCH})::int8", "time": "(extract(epoch FROM {}) * 1000000)::int8"}
        return [forms.get(kinds[k], "{}::int8").format(identifier(k)) for k in self.identity]

    def census_arrow(self, entries: pa.Table) -> list[pa.Array | pa.ChunkedArray]:
        """The same integers from a ledger's identity columns."""
        sums = []
        for name in self.identity:
            values = entries[name]
            if pa.types.is_date(values.type):
                sums.append(pc.subtract(pc.cast(pc.cast(values, pa.int32()), pa.int64()), POSTGRES_EPOCH_DAYS))
            elif pa.types.is_time(values.type):
                sums.append(pc.cast(pc.cast(values, pa.time64("us")), pa.int64()))
            else:
                sums.append(pc.cast(values, pa.int64()))
        return sums


def shape(con: pg8000.native.Connection, table: str) -> Shape:
    """The table's shape from the warehouse catalogue (the contract): a fact's serial surrogate key left out."""
    rows = con.run(
        "SELECT a.attname, t.typname, format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a "
        "JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = to_regclass(quote_ident(:t)) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        t=table,
    )
    keys = primary_key(con, table)
    identity = held.version_key(con, table) if table in FACTS else keys
    compared = [(name, typname, sql_type) for name, typname, sql_type in rows if table not in FACTS or name not in keys]
    columns = [Column(name, typname) for name, typname, _ in compared]
    types = {name: held.arrow_type(sql_type) for name, _, sql_type in compared}
    return Shape(columns, types, identity, identity[0])


def _row_hash_sql(columns: list[Column]) -> str:
    text = f"convert_to({row_text_sql(columns)}, 'UTF8')"
    return f"('x' || substr(md5({text}), 1, {HASH_BITS // 4}))::bit({HASH_BITS})::int8"


def warehouse_figures(
    con: pg8000.native.Connection, table: str, form: Shape, range_size: int, share: ContentShare
) -> dict[int, RangeFigures]:
    """Every key range's census, and the content digest of the ranges in `share`, in one aggregate query inside
    PostgreSQL."""
    rows = con.run(
        # S608: identifiers quoted by identifier() from the catalogue, values bound or validated integers
        f"SELECT {figures_sql(form.range_sql(), form.census_sql(), _row_hash_sql(form.columns), share)} "  # noqa: S608
        f"FROM {identifier(table)} GROUP BY 1",
        range_size=range_size,
    )
    return figures_from_sql(rows)


def _conform(rows: pa.Table, form: Shape) -> pa.Table:
    """The lake's rows in the warehouse's compared columns and types (a column it lacks is NULL)."""
    return pa.Table.from_arrays(
        [pc.cast(rows[f.name], f.type) if f.name in rows.column_names else pa.nulls(rows.num_rows, f.type)
         for f in form.schema],
        schema=form.schema,
    )  # fmt: skip


def _first_or_last(rows: pa.Table, identity: list[str], *, last: bool) -> pa.Table:
    """One row per identity, the first or the last in the order the rows were loaded."""
    if rows.num_rows == 0 or unique_keys(_as_integers(rows[identity[0]])):
        return rows  # one row per identity already (a dimension's key, a fact's id with one version): the common case
    numbered = rows.append_column("__row", pa.array(range(rows.num_rows), pa.int64()))
    how = "max" if last else "min"
    chosen = numbered.group_by(identity, use_threads=False).aggregate([("__row", how)])[f"__row_{how}"]
    return rows.take(pc.take(chosen, pc.sort_indices(chosen)))


def _as_integers(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """An identity's first column (an integer key, or dim_date's date) as int64, in the same order."""
    if pa.types.is_date(values.type):
        values = pc.cast(values, pa.int32())
    return pc.cast(values, pa.int64())


def _ledger_schema(form: Shape) -> pa.Schema:
    return pa.schema([*(form.schema.field(k) for k in form.identity), (_RANGE, pa.int64()), (_HASH, pa.int64()),
                      (_SEQ, pa.int64())])  # fmt: skip


def ledger(
    rows: pa.Table, form: Shape, *, seq: int, share: ContentShare | None = _WHOLE, range_size: int = DEFAULT_RANGE_SIZE
) -> pa.Table:
    """What the lake says of these rows (of batch `seq`), small: identity, range key, row hash and batch of each, in
    the rows' order; hashed in the share's ranges (by default all; None: none), the others left null until needed."""
    rows = _conform(rows, form)
    keys = form.range_keys(rows)
    hashes = hashes_in_share(rows, form.columns, range_numbers(keys, range_size), share)
    return pa.Table.from_arrays(
        [*(rows[k] for k in form.identity), keys, hashes, pa.array([seq] * rows.num_rows, pa.int64())],
        schema=_ledger_schema(form),
    )


@dataclass
class LakeSide:
    """The processed lake's side of one verification: the ledger of what the warehouse should hold (before the
    held rows are taken out), how to read the rows themselves when some must be hashed or restored, and the
    checkpoint to keep once it is hashed where needed."""

    entries: pa.Table
    log: BatchLog
    cursor: dict[str, Any]  # the load's: the batches up to it are what the warehouse took
    state: ReaderState
    done: int  # verifications so far
    share: ContentShare  # this verification's: the next one

    def rows_of(self, seq: int, form: Shape, table: str) -> pa.Table:
        """One batch's rows as the warehouse should hold them (first or last of an identity within the batch)."""
        parts = [_conform(part, form) for part in self.log.read(self.log.manifest(seq, self.cursor["log"]))]
        return _first_or_last(pa.concat_tables(parts), form.identity, last=table not in FACTS)

    def keep(self, processed: Bucket, form: Shape) -> None:
        """The checkpoint: this ledger, as of the load's cursor, for the next verification to start from."""
        key = verify_ledger_key(self.log.table, self.cursor["seq"])
        processed.put_parquet(key, self.entries)
        self.state.commit({"cursor": self.cursor, "ledger": key, "signature": form.signature(),
                           "verifications": self.done + 1})  # fmt: skip


def _checkpointed(saved: dict[str, Any], form: Shape, log: BatchLog, cursor: dict[str, Any]) -> tuple[Any, pa.Table]:
    """The checkpoint's cursor and ledger when they can be used; (None, empty) to read the epoch from its base.

    Only saves reading and hashing: a checkpoint that is missing, unreadable, of other columns or of another
    epoch or format is ignored."""
    empty = _ledger_schema(form).empty_table()
    taken = saved.get("cursor")
    if saved.get("signature") != form.signature() or not isinstance(taken, dict) or taken.get("log") != cursor["log"]:
        return None, empty
    if (
        not isinstance(taken.get("seq"), int)
        or taken["seq"] > cursor["seq"]
        or not isinstance(saved.get("ledger"), str)
    ):
        return None, empty
    try:
        entries = log.bucket.get_parquet(saved["ledger"])
    except (ClientError, pa.ArrowException, OSError):
        return None, empty
    if entries.schema != _ledger_schema(form):
        return None, empty
    return taken, entries


def lake_side(
    processed: Bucket, table: str, form: Shape, saved: dict[str, Any], range_size: int = DEFAULT_RANGE_SIZE
) -> LakeSide | str:
    """The ledger of what the warehouse should hold, from the checkpoint and the batches since (a dimension's
    latest row per key, a fact's first row per version); a string says why it cannot be told.

    The batches since the checkpoint are followed from its cursor (the load's cursor when it was taken), so a
    verification reads only what was loaded since the last one, and hashes it at once (a few rows); from the
    epoch's base, those in this verification's content share (the others when needed: `fill`). The share is
    chosen by the table's size in the lake (its ledger and the rows since, an upper bound)."""
    log = BatchLog(processed, TRANSFORM_STAGE, table, lineage=TRANSFORM_INPUTS[table])
    cursor = saved.get("cursor")
    if not isinstance(cursor, dict) or cursor.get("log") != log.head().log or not isinstance(cursor.get("seq"), int):
        return "the load has not taken the lake's current epoch yet"
    state = ReaderState(processed, VERIFY_STAGE, table, lineage=TRANSFORM_INPUTS[table])
    checkpoint = state.read() or {}
    done = checkpoint.get("verifications")
    done = done if isinstance(done, int) and done >= 0 else 0
    taken, entries = _checkpointed(checkpoint, form, log, cursor)
    try:
        reading = log.follow(taken)
    except StateError:  # a checkpoint whose chain does not hold: read the epoch from its base
        taken, entries, reading = None, _ledger_schema(form).empty_table(), log.follow(None)
    batches = [b for b in reading.batches if b.seq <= cursor["seq"]]
    share = ContentShare.rotating(entries.num_rows + sum(b.rows for b in batches), done)
    first = _WHOLE if taken is not None else share
    new = [ledger(part, form, seq=b.seq, share=first, range_size=range_size) for b in batches for part in log.read(b)]
    if new:
        entries = _first_or_last(pa.concat_tables([entries, *new]), form.identity, last=table not in FACTS)
    return LakeSide(entries, log, cursor, state, done, share)


def fill(side: LakeSide, table: str, form: Shape, needed: pa.Array | pa.ChunkedArray) -> None:
    """Hash the ledger's entries where `needed`, reading their rows again from the batches the entries name."""

    def hashed(seq: int, identities: pa.Table) -> pa.Table:
        rows = side.rows_of(seq, form, table)
        return ledger(rows.join(identities, form.identity, join_type="left semi", use_threads=False), form, seq=seq)

    try:
        side.entries = fill_hashes(side.entries, form.identity, needed, hashed, hash_column=_HASH, seq_column=_SEQ)
    except LedgerMismatch as error:
        raise side.log.fail(f"the verification's ledger of {table} cannot be believed: {error}") from error


def _without_held(entries: pa.Table, form: Shape, kept: pa.Table | None) -> pa.Table:
    """A fact's ledger without the versions the load holds back (absent from the warehouse on purpose)."""
    if kept is None or kept.num_rows == 0:
        return entries
    away = kept.select(form.identity).cast(pa.schema([entries.schema.field(k) for k in form.identity]))
    return entries.join(away, form.identity, join_type="left anti", use_threads=False)


def lake_figures(
    entries: pa.Table, form: Shape, range_size: int, share: ContentShare | None
) -> dict[int, RangeFigures]:
    """The same figures as `warehouse_figures` from a ledger (hashed wherever the share needs it; no share: the
    census alone)."""
    if entries.num_rows == 0:
        return {}
    numbers = range_numbers(entries[_RANGE], range_size)
    return arrow_figures(numbers, form.census_arrow(entries), entries[_HASH], share)


def _lake_rows(side: LakeSide, table: str, form: Shape, wanted: pa.Table) -> pa.Table:
    """The lake's rows of these identities, as the warehouse should hold them: read again from the batches their
    ledger entries name, only when something is to be restored."""
    named = side.entries.select([*form.identity, _SEQ]).join(wanted, form.identity, join_type="left semi",
                                                              use_threads=False)  # fmt: skip
    parts = [
        side.rows_of(seq, form, table).join(wanted, form.identity, join_type="left semi", use_threads=False)
        for seq in sorted(pc.unique(named[_SEQ]).to_pylist())
    ]
    return pa.concat_tables(parts) if parts else form.schema.empty_table()


def _warehouse_rows(
    con: pg8000.native.Connection, table: str, form: Shape, ranges: list[int], range_size: int
) -> pa.Table:
    """(identity, row hash) of the warehouse's rows in the differing ranges."""
    ids = ", ".join(identifier(k) for k in form.identity)
    found = con.run(
        # S608: identifiers quoted by identifier() from the catalogue, values bound
        f"SELECT {ids}, {_row_hash_sql(form.columns)} FROM {identifier(table)} "  # noqa: S608
        f"WHERE {form.range_sql()} = ANY(CAST(:ranges AS int8[]))",
        range_size=range_size,
        ranges=ranges,
    )
    columns = list(zip(*found, strict=True)) if found else [() for _ in range(len(form.identity) + 1)]
    arrays = [pa.array(list(v), form.types[k]) for k, v in zip(form.identity, columns, strict=False)]
    return pa.table([*arrays, pa.array(list(columns[-1]), pa.int64())], names=[*form.identity, _WAREHOUSE_HASH])


def verify_table(
    con: pg8000.native.Connection, processed: Bucket, table: str, *, range_size: int = DEFAULT_RANGE_SIZE
) -> VerifyResult:
    """Compare one warehouse table with the lake, restore the rows that differ, and say what was found."""
    table = require_warehouse_table(table)
    saved = ReaderState(processed, STAGE, table, lineage=TRANSFORM_INPUTS[table]).read()
    if saved is None:
        return VerifyResult(table, skipped="nothing has been loaded into it yet")
    if saved.get("warehouse") != database_identity(con):
        return VerifyResult(table, skipped="the load's cursor describes another warehouse")
    form = shape(con, table)
    side = lake_side(processed, table, form, saved, range_size)
    if isinstance(side, str):
        return VerifyResult(table, skipped=side)
    kept = held.read(processed, saved) if table in FACTS else None
    share = side.share
    ours = warehouse_figures(con, table, form, range_size, share)
    census = lake_figures(_without_held(side.entries, form, kept), form, range_size, None)
    census_differing = pa.array(
        [r for r in ours.keys() | census.keys() if _census(ours.get(r)) != _census(census.get(r))], pa.int64()
    )
    numbers = range_numbers(side.entries[_RANGE], range_size)
    fill(side, table, form, pc.or_(share.due(numbers), pc.is_in(numbers, value_set=census_differing)))
    side.keep(processed, form)
    entries = _without_held(side.entries, form, kept)
    theirs = lake_figures(entries, form, range_size, share)
    ranges = differing_ranges(ours, theirs)
    compared = len(ours.keys() | theirs.keys())
    if not ranges:
        return VerifyResult(table, compared)
    in_ranges = pc.is_in(pc.divide(entries[_RANGE], pa.scalar(range_size, pa.int64())),
                         value_set=pa.array(ranges, pa.int64()))  # fmt: skip
    lake = entries.filter(in_ranges).select([*form.identity, _HASH])
    there = _warehouse_rows(con, table, form, ranges, range_size)
    joined = lake.join(there, form.identity, join_type="full outer", use_threads=False)
    missing = pc.is_null(joined[_WAREHOUSE_HASH])
    extra = pc.is_null(joined[_HASH])
    changed = pc.fill_null(pc.not_equal(joined[_HASH], joined[_WAREHOUSE_HASH]), False)
    wanted = joined.filter(pc.or_(missing, changed)).select(form.identity)
    if wanted.num_rows:
        rows = _lake_rows(side, table, form, wanted)
        replaced = joined.filter(changed).select(form.identity)
        _restore(con, table, form, rows, replaced=replaced)
    strays = joined.filter(extra).select(form.identity).slice(0, _SAMPLE).to_pylist()
    return VerifyResult(
        table,
        compared,
        len(ranges),
        rows_missing=pc.sum(missing).as_py() or 0,
        rows_changed=pc.sum(changed).as_py() or 0,
        rows_not_in_lake=pc.sum(extra).as_py() or 0,
        not_in_lake_sample=tuple(", ".join(f"{k}={v}" for k, v in row.items()) for row in strays),
    )


def _census(figures: RangeFigures | None) -> tuple[int, tuple[int, ...]] | None:
    return None if figures is None else figures.census()


def _restore(con: pg8000.native.Connection, table: str, form: Shape, rows: pa.Table, *, replaced: pa.Table) -> None:
    """Put the lake's rows back in one transaction, through the load's own merge. A table the load only inserts
    into (a fact, dim_date) has its edited rows deleted first, since the merge ignores a version it holds."""
    con.run("START TRANSACTION")
    try:
        if table in INSERT_ONLY and replaced.num_rows:
            keys = replaced.select(form.identity)
            stage = identifier(f"verify_{table}")
            column_list = ", ".join(identifier(k) for k in form.identity)
            # S608: identifiers quoted by identifier() from the catalogue
            con.run(f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS "  # noqa: S608
                    f"SELECT {column_list} FROM {identifier(table)} WITH NO DATA")  # fmt: skip
            con.run(f"COPY {stage} ({column_list}) FROM STDIN WITH (FORMAT csv)", stream=_csv(keys))
            matches = " AND ".join(f"t.{identifier(k)} = s.{identifier(k)}" for k in form.identity)
            con.run(f"DELETE FROM {identifier(table)} t USING {stage} s WHERE {matches}")  # noqa: S608
        merge_batch(con, table, [rows])
        con.run("COMMIT")
    except BaseException:
        con.run("ROLLBACK")
        raise
