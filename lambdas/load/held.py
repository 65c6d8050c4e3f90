"""Fact rows held back because a dimension row they point at is not in the warehouse yet.

A fact must never wait for an unrelated reference table, and a foreign key must never fail a load because
one table arrived before another. So, inside the load's transaction, the staged fact rows whose foreign
keys do not resolve are moved out of staging into a held set (with the reason), and the rest is inserted.

The held set is an immutable Parquet object in the processed bucket, named by the load head, which is
written last, after the warehouse commit. Every later load stages the held rows again with its new
batches, so they go in by themselves once their references exist. Fact inserts ignore versions the
warehouse holds, so a crash at any point repeats work but never loses or duplicates a row: before the
head is written the old held set and the old batches are staged again; after it, the new held set is.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pg8000.native
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from lambdas.common.db import identifier
from lambdas.common.errors import PipelineError
from lambdas.common.lake import Bucket, held_key

REASON, SINCE = "held_reason", "held_since"
# A row held for longer than this is reported as stuck (its reference is probably never coming).
STUCK_AFTER_ENV = "HELD_STUCK_AFTER_SECONDS"
DEFAULT_STUCK_AFTER_SECONDS = 24 * 3600
HELD_ROWS_METRIC, STUCK_ROWS_METRIC = "HeldRows", "StuckHeldRows"  # the load's metrics; the alarm watches these
SAMPLE_SIZE = 5  # keys named in a result: Step Functions payloads stay small, the held object has them all


def stuck_after() -> timedelta:
    raw = os.environ.get(STUCK_AFTER_ENV) or str(DEFAULT_STUCK_AFTER_SECONDS)
    try:
        seconds = float(raw)
    except ValueError:
        raise PipelineError(f"{STUCK_AFTER_ENV} must be a number of seconds, got {raw!r}") from None
    return timedelta(seconds=seconds)


def _references(con: pg8000.native.Connection, table: str) -> list[tuple[str, str, str]]:
    """(fact column, referenced table, referenced column) of each foreign key, from the catalogue."""
    rows = con.run(
        "SELECT a.attname, r.relname, ra.attname, cardinality(c.conkey) FROM pg_catalog.pg_constraint c "
        "JOIN pg_catalog.pg_class r ON r.oid = c.confrelid "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
        "JOIN pg_catalog.pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = c.confkey[1] "
        "WHERE c.conrelid = to_regclass(quote_ident(:t)) AND c.contype = 'f' ORDER BY c.conname",
        t=table,
    )
    if any(width != 1 for *_, width in rows):
        raise PipelineError(f"{table}: a multi-column foreign key cannot be checked for held rows")
    return [(column, referenced, key) for column, referenced, key, _ in rows]


def version_key(con: pg8000.native.Connection, table: str) -> list[str]:
    """The columns of the fact's UNIQUE version key (one row per observed source version)."""
    rows = con.run(
        "SELECT a.attname FROM pg_catalog.pg_constraint c "
        "JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, n) ON true "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
        "WHERE c.conrelid = to_regclass(quote_ident(:t)) AND c.contype = 'u' ORDER BY c.conname, k.n",
        t=table,
    )
    if not rows:
        raise PipelineError(f"{table}: no UNIQUE version key in the warehouse")
    return [r[0] for r in rows]


@dataclass
class Holding:
    """The held set of one fact load, collected in a temporary table of the load's transaction."""

    table: str
    rows: int = 0
    _references: list[tuple[str, str, str]] | None = field(default=None, init=False, repr=False)

    @property
    def _held(self) -> str:
        return identifier(f"held_{self.table}")

    def __call__(self, con: pg8000.native.Connection, stage: str) -> int:
        """Move the staged rows whose foreign keys do not resolve from `stage` into the held set.

        One scan of the staged rows, left-joined to every referenced table on its key (each join finds at
        most one row, the key being unique), so the check costs about what PostgreSQL's own validation of
        the constraints does. A row missing several references gets every reason. Returns how many rows
        were moved.
        """
        if self._references is None:
            self._references = _references(con, self.table)
        if not self._references:
            return 0
        joins, unresolved, reasons, labels = [], [], [], {}
        for n, (column, referenced, key) in enumerate(self._references):
            col, ref = f"s.{identifier(column)}", f"r{n}.{identifier(key)}"
            joins.append(f"LEFT JOIN {identifier(referenced)} r{n} ON {ref} = {col}")
            unresolved.append(f"({col} IS NOT NULL AND {ref} IS NULL)")
            reasons.append(f"CASE WHEN {unresolved[-1]} THEN :label{n} || {col}::text || :where{n} END")
            labels |= {f"label{n}": f"{column}=", f"where{n}": f" not in {referenced}"}
        found = identifier(f"held_reasons_{self.table}")
        con.run(f"CREATE TEMP TABLE IF NOT EXISTS {found} (row_id tid, reason text) ON COMMIT DROP")
        con.run(f"TRUNCATE {found}")
        # S608: identifiers quoted by identifier() from the catalogue, values bound
        con.run(f"INSERT INTO {found} SELECT s.ctid, concat_ws('; ', {', '.join(reasons)}) FROM {stage} s "  # noqa: S608
                f"{' '.join(joins)} WHERE {' OR '.join(unresolved)}", **labels)  # fmt: skip
        if not con.row_count:
            return 0
        # S608: identifiers quoted by identifier() from the catalogue, values bound
        con.run(f"CREATE TEMP TABLE IF NOT EXISTS {self._held} ON COMMIT DROP AS "  # noqa: S608
                f"SELECT s.*, ''::text AS {identifier(REASON)} FROM {stage} s WITH NO DATA")  # fmt: skip
        con.run(
            # S608: identifiers quoted by identifier() from the catalogue, values bound
            f"WITH moved AS (DELETE FROM {stage} s USING {found} r WHERE s.ctid = r.row_id RETURNING s.*, r.reason) "  # noqa: S608
            f"INSERT INTO {self._held} SELECT * FROM moved"
        )
        moved = con.row_count
        self.rows += moved
        return moved

    def collect(self, con: pg8000.native.Connection) -> pa.Table | None:
        """The held rows (each version once), typed as the warehouse types them; None if none."""
        if not self.rows:
            return None
        key = ", ".join(identifier(c) for c in version_key(con, self.table))
        types = con.run(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute "
            "WHERE attrelid = to_regclass('pg_temp.' || quote_ident(:t)) AND attnum > 0 AND NOT attisdropped "
            "ORDER BY attnum",
            t=f"held_{self.table}",
        )
        schema = pa.schema([(name, arrow_type(sql_type)) for name, sql_type in types])
        sink = io.BytesIO()
        # S608: identifiers quoted by identifier() from the catalogue, values bound
        con.run(f"COPY (SELECT DISTINCT ON ({key}) * FROM {self._held} ORDER BY {key}) TO STDOUT WITH (FORMAT csv)",  # noqa: S608
                stream=sink)  # fmt: skip
        return pcsv.read_csv(
            io.BytesIO(sink.getvalue()),
            read_options=pcsv.ReadOptions(column_names=schema.names),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),  # a quoted text may span lines
            convert_options=pcsv.ConvertOptions(column_types=schema, strings_can_be_null=True,
                                                quoted_strings_can_be_null=False, true_values=["t"],
                                                false_values=["f"]),
        )  # fmt: skip


_NUMERIC = re.compile(r"numeric\((\d+),(\d+)\)")
_ARROW_TYPES = {
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "smallint": pa.int16(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "time without time zone": pa.time64("us"),
    "timestamp without time zone": pa.timestamp("us"),
    "text": pa.string(),
}


def arrow_type(sql_type: str) -> pa.DataType:
    """The Arrow type that holds a warehouse column's values without loss."""
    if sql_type in _ARROW_TYPES:
        return _ARROW_TYPES[sql_type]
    if sql_type.startswith(("character varying", "character(")):
        return pa.string()
    numeric = _NUMERIC.fullmatch(sql_type.replace(" ", ""))
    if numeric:
        return pa.decimal128(int(numeric[1]), int(numeric[2]))
    raise PipelineError(f"held rows: no Arrow type for warehouse type {sql_type!r}")


def as_staged(held: pa.Table) -> pa.Table:
    """Previously held rows as a processed part again: the fact's own columns only."""
    return held.drop_columns([c for c in (REASON, SINCE) if c in held.column_names])


@dataclass(frozen=True)
class Settled:
    """The outcome of one fact load for its held rows."""

    held: pa.Table | None  # every row still held, with reason and held_since
    released: int  # previously held rows that are in the warehouse now
    stuck: int
    sample: list[dict[str, object]] = field(default_factory=list)  # a few held rows: key and reason
    stuck_sample: list[dict[str, object]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return 0 if self.held is None else self.held.num_rows


def settle(held: pa.Table | None, previous: pa.Table | None, key: list[str], *, now: datetime,
           stuck_after: timedelta) -> Settled:  # fmt: skip
    """Carry each still-held row's first held time over from the previous held set, and find the stuck ones.

    Pure: a row keeps the time it was first held however many loads stage it again, so its age is real.
    """
    before = 0 if previous is None else previous.num_rows
    if held is None or held.num_rows == 0:
        return Settled(None, before, 0)
    since_type = pa.timestamp("us", tz="UTC")
    if previous is not None and previous.num_rows:
        known = previous.select([*key, SINCE]).cast(
            pa.schema([*(previous.schema.field(k) for k in key), pa.field(SINCE, since_type)])
        )
        held = held.join(known, key, join_type="left outer", use_threads=False)
        carried = held.num_rows - held[SINCE].null_count
    else:
        held = held.append_column(SINCE, pa.nulls(held.num_rows, since_type))
        carried = 0
    held = held.set_column(held.schema.get_field_index(SINCE), SINCE,
                           pc.fill_null(held[SINCE], pa.scalar(now, since_type)))  # fmt: skip
    held = held.sort_by([(k, "ascending") for k in key])
    is_stuck = pc.less_equal(held[SINCE], pa.scalar(now - stuck_after, since_type))
    stuck = held.filter(is_stuck)
    return Settled(held, before - carried, stuck.num_rows, _sample(held, key), _sample(stuck, key))


def _sample(rows: pa.Table, key: list[str]) -> list[dict[str, object]]:
    picked = rows.slice(0, SAMPLE_SIZE).select([*key, REASON, SINCE]).to_pylist()
    return [{"key": {k: str(row[k]) for k in key}, "reason": row[REASON], "held_since": row[SINCE].isoformat()}
            for row in picked]  # fmt: skip


def read(bucket: Bucket, head: dict[str, object]) -> pa.Table | None:
    """The held set the committed load head names, if any."""
    held = head.get("held")
    if not held:
        return None
    if not isinstance(held, dict) or not isinstance(held.get("key"), str):
        raise PipelineError(f"load head has an unreadable 'held' entry: {held!r:.200}")
    return bucket.get_parquet(held["key"])


def write(bucket: Bucket, table: str, seq: int, settled: Settled) -> dict[str, object] | None:
    """Store the held set; returns the entry for the load head (None when nothing is held)."""
    if settled.held is None:
        return None
    key = held_key(table, seq)
    bucket.put_parquet(key, settled.held)
    return {"key": key, "rows": settled.rows}
