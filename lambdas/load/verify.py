"""Verification: each warehouse table against what the pipeline loaded into it, range by range of its key.

Reconciliation (lambdas/extract/reconcile.py) checks the source against the lake; nothing there sees a row
deleted or edited in the warehouse itself (a mistaken DELETE, a manual fix). This module compares the warehouse
with the processed lake the same cheap way, and restores what differs from the lake:

- *What the warehouse should hold* is the processed batches of the table's current epoch up to the load's
  cursor, as the load merged them. A dimension holds the latest row of each key (the load upserts, later
  batches win). A fact holds every version: the first row of each version key (source id, last_updated date
  and time), since the load inserts a version once and ignores it after that; the fact rows the load holds
  back for a missing dimension row (lambdas/load/held.py) are left out, being absent on purpose.
- Both sides are digested per key range, as reconcile.py does: `(count, sum of 60-bit row hashes)`, the
  warehouse's in one aggregate query inside PostgreSQL, the lake's with Arrow. A fact's range is over its source
  id (all versions of an id fall into one range); dim_date's over days since 2000-01-01. A fact's surrogate key
  (`sales_record_id` ...) is not compared: it is the warehouse's own.
- Only ranges that differ are read again from the warehouse, as (identity, row hash), and compared row by row:
  a row the lake has and the warehouse lacks or holds otherwise is restored from the lake in one transaction
  (a dimension row upserted; a fact version deleted and inserted again, so it gets a new surrogate key).
- The lake's side is kept as a ledger (identity, range key, row hash of each row the warehouse should hold)
  named by a checkpoint, `_state/verify/<table>.json`: the next verification hashes only the batches loaded
  since. One that is missing, unreadable, of other columns or of another epoch is ignored, and the epoch is
  hashed from its base.
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
    RangeDigest,
    differing_ranges,
    ledger_digests,
    row_hashes,
    row_text_sql,
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
_RANGE, _HASH, _WAREHOUSE_HASH = "__range", "__hash", "__warehouse_hash"


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


def warehouse_digests(
    con: pg8000.native.Connection, table: str, form: Shape, range_size: int
) -> dict[int, RangeDigest]:
    """Every key range's (count, digest) of the warehouse table, in one aggregate query inside PostgreSQL."""
    rows = con.run(
        # S608: identifiers quoted by identifier() from the catalogue, values bound
        f"SELECT {form.range_sql()}, count(*), sum({_row_hash_sql(form.columns)})::text "  # noqa: S608
        f"FROM {identifier(table)} GROUP BY 1",
        range_size=range_size,
    )
    return {int(r): RangeDigest(int(n), int(d)) for r, n, d in rows}


def _conform(rows: pa.Table, form: Shape) -> pa.Table:
    """The lake's rows in the warehouse's compared columns and types (a column it lacks is NULL)."""
    return pa.Table.from_arrays(
        [pc.cast(rows[f.name], f.type) if f.name in rows.column_names else pa.nulls(rows.num_rows, f.type)
         for f in form.schema],
        schema=form.schema,
    )  # fmt: skip


def _first_or_last(rows: pa.Table, identity: list[str], *, last: bool) -> pa.Table:
    """One row per identity, the first or the last in the order the rows were loaded."""
    if rows.num_rows == 0:
        return rows
    numbered = rows.append_column("__row", pa.array(range(rows.num_rows), pa.int64()))
    how = "max" if last else "min"
    chosen = numbered.group_by(identity, use_threads=False).aggregate([("__row", how)])[f"__row_{how}"]
    return rows.take(pc.take(chosen, pc.sort_indices(chosen)))


def _ledger_schema(form: Shape) -> pa.Schema:
    return pa.schema([*(form.schema.field(k) for k in form.identity), (_RANGE, pa.int64()), (_HASH, pa.int64())])


def ledger(rows: pa.Table, form: Shape) -> pa.Table:
    """What the lake says of these rows, small: identity, range key and row hash of each, in the rows' order."""
    rows = _conform(rows, form)
    return pa.Table.from_arrays(
        [*(rows[k] for k in form.identity), form.range_keys(rows), row_hashes(rows, form.columns)],
        schema=_ledger_schema(form),
    )


@dataclass
class LakeSide:
    """The processed lake's side of one verification: the ledger of what the warehouse should hold (before the
    held rows are taken out), and how to read the rows themselves when some must be restored."""

    entries: pa.Table
    log: BatchLog
    cursor: dict[str, Any]  # the load's: the batches up to it are what the warehouse took


def _checkpointed(state: ReaderState, form: Shape, log: BatchLog, cursor: dict[str, Any]) -> tuple[Any, pa.Table]:
    """The checkpoint's cursor and ledger when they can be used; (None, empty) to hash the epoch from its base.

    Only saves hashing: a checkpoint that is missing, unreadable, of other columns or of another epoch is
    ignored."""
    saved = state.read() or {}
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


def lake_side(processed: Bucket, table: str, form: Shape, saved: dict[str, Any]) -> LakeSide | str:
    """The ledger of what the warehouse should hold, from the checkpoint and the batches since (a dimension's
    latest row per key, a fact's first row per version); a string says why it cannot be told.

    The batches since the checkpoint are followed from its cursor (the load's cursor when it was taken), so a
    verification reads and hashes only what was loaded since the last one."""
    log = BatchLog(processed, TRANSFORM_STAGE, table, lineage=TRANSFORM_INPUTS[table])
    cursor = saved.get("cursor")
    if not isinstance(cursor, dict) or cursor.get("log") != log.head().log or not isinstance(cursor.get("seq"), int):
        return "the load has not taken the lake's current epoch yet"
    state = ReaderState(processed, VERIFY_STAGE, table, lineage=TRANSFORM_INPUTS[table])
    taken, entries = _checkpointed(state, form, log, cursor)
    try:
        reading = log.follow(taken)
    except StateError:  # a checkpoint whose chain does not hold: hash the epoch from its base
        taken, entries, reading = None, _ledger_schema(form).empty_table(), log.follow(None)
    batches = [b for b in reading.batches if b.seq <= cursor["seq"]]
    new = [ledger(part, form) for b in batches for part in log.read(b)]
    if new:
        entries = _first_or_last(pa.concat_tables([entries, *new]), form.identity, last=table not in FACTS)
    if new or taken is None:
        key = verify_ledger_key(table, cursor["seq"])
        processed.put_parquet(key, entries)
        state.commit({"cursor": cursor, "ledger": key, "signature": form.signature()})
    return LakeSide(entries, log, cursor)


def _without_held(entries: pa.Table, form: Shape, kept: pa.Table | None) -> pa.Table:
    """A fact's ledger without the versions the load holds back (absent from the warehouse on purpose)."""
    if kept is None or kept.num_rows == 0:
        return entries
    away = kept.select(form.identity).cast(pa.schema([entries.schema.field(k) for k in form.identity]))
    return entries.join(away, form.identity, join_type="left anti", use_threads=False)


def lake_digests(entries: pa.Table, range_size: int) -> dict[int, RangeDigest]:
    return ledger_digests(pa.table({"key": entries[_RANGE], "hash": entries[_HASH]}), range_size)


def _lake_rows(side: LakeSide, table: str, form: Shape, wanted: pa.Table) -> pa.Table:
    """The lake's rows of these identities, as the warehouse should hold them: read again from the batches, only
    when something is to be restored."""
    batches = [b for b in side.log.follow(None).batches if b.seq <= side.cursor["seq"]]
    parts = [_conform(part, form) for b in batches for part in side.log.read(b)]
    rows = _first_or_last(pa.concat_tables(parts), form.identity, last=table not in FACTS)
    return rows.join(wanted, form.identity, join_type="left semi", use_threads=False)


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
    side = lake_side(processed, table, form, saved)
    if isinstance(side, str):
        return VerifyResult(table, skipped=side)
    entries = _without_held(side.entries, form, held.read(processed, saved) if table in FACTS else None)
    ours, theirs = warehouse_digests(con, table, form, range_size), lake_digests(entries, range_size)
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
