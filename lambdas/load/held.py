"""Fact rows held back because a dimension row they point at is not in the warehouse yet.

A fact must never wait for an unrelated reference table, and a foreign key must never fail a load because
one table arrived before another. So, inside the load's transaction, the staged fact rows whose foreign
keys do not resolve are moved out of staging into a held set (with the reason), and the rest is inserted.

The held rows are taken from the Arrow parts the load staged (PostgreSQL only says which versions it held), so
their values are never parsed back from text. The held set is an immutable Parquet object in the processed
bucket, named by the load head, which is written last, after the warehouse commit. Every later load stages
the held rows again with its new batches, so they go in by themselves once their references exist. Fact
inserts ignore versions the warehouse holds, so a crash at any point repeats work but never loses or
duplicates a row: before the head is written the old held set and the old batches are staged again; after
it, the new held set is.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pg8000.native
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from pydantic import ValidationError

from lambdas.common.db import identifier
from lambdas.common.documents import HeldEntry, NewerFormatError, problem
from lambdas.common.errors import PipelineError
from lambdas.common.keys import held_key
from lambdas.common.lake import Bucket, concat
from lambdas.common.settings import LoadTuning

REASON, SINCE = "held_reason", "held_since"
# A row held for longer than this is reported as stuck (its reference is probably never coming).
STUCK_AFTER_ENV = LoadTuning.variable("stuck_after_seconds")
DEFAULT_STUCK_AFTER_SECONDS = LoadTuning.default("stuck_after_seconds")
HELD_ROWS_METRIC, STUCK_ROWS_METRIC = "HeldRows", "StuckHeldRows"  # the load's metrics; the alarm watches these
SAMPLE_SIZE = 5  # keys named in a result: Step Functions payloads stay small, the held object has them all


def stuck_after() -> timedelta:
    return LoadTuning.from_environ().stuck_after


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

    def collect(self, con: pg8000.native.Connection, staged: Callable[[], Iterable[pa.Table]]) -> pa.Table | None:
        """The held rows (each version once), exactly as they were staged; None if none.

        A row's values never come back out of PostgreSQL: a text format would have to be parsed, and a reader
        that guesses turns `NA`, `NULL` or `nan` into NULL. Only the held versions' keys (integers, dates, times)
        and reasons do, read with their types declared and no null marker at all; the rows themselves are taken
        from the Arrow parts that were staged (`staged` yields them again, in staging order: the previous held
        set, then the batches' parts), by a join on the version key. Where a version was staged more than once,
        the last staged copy is kept. Returns the fact's columns, then REASON.
        """
        if not self.rows:
            return None
        key = version_key(con, self.table)
        held = _held_keys(con, self._held, f"held_{self.table}", key)
        rows = last_copies(staged(), held, key)
        if rows.num_rows != held.num_rows:
            raise PipelineError(f"{self.table}: {held.num_rows} versions were held, {rows.num_rows} found staged")
        return rows


_ORDER = "totesys_staged_order"  # a row's place (part << 32 | row): tells the last copy of a version


def last_copies(parts: Iterable[pa.Table], wanted: pa.Table, key: list[str]) -> pa.Table:
    """The rows of `parts` whose version key is in `wanted`, the last copy of each, sorted by the key, with
    `wanted`'s other columns joined on. Set-based: each part is joined to `wanted` as it comes, so memory
    holds the found rows only."""
    found: list[pa.Table] = []
    for n, part in enumerate(parts):
        if not part.num_rows:
            continue
        joined = part.join(wanted, key, join_type="inner", use_threads=False)
        found.append(joined.append_column(_ORDER, _ordinals(joined.num_rows, n << 32)))
    rows = concat(found)
    if rows is None:
        return wanted.schema.empty_table()
    last = rows.group_by(key, use_threads=False).aggregate([(_ORDER, "max")])[f"{_ORDER}_max"]
    rows = rows.filter(pc.is_in(rows[_ORDER], value_set=last))
    return rows.drop_columns([_ORDER]).sort_by([(k, "ascending") for k in key])


def _ordinals(count: int, start: int) -> pa.Array:
    """start, start + 1, … (count of them), computed in Arrow."""
    ones = pc.fill_null(pa.nulls(count, pa.int64()), 1)
    return pc.add(pc.cumulative_sum(ones), start - 1)


def _held_keys(con: pg8000.native.Connection, held: str, temp: str, key: list[str]) -> pa.Table:
    """The version key and reason of each held version, typed as the warehouse types the key's columns.

    Keys are integers, dates and times and reasons never NULL (concat_ws), so the CSV is read with every type
    declared and no null marker: nothing in it can be mistaken for anything else.
    """
    types = dict(con.run(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute "
        "WHERE attrelid = to_regclass('pg_temp.' || quote_ident(:t)) AND attnum > 0 AND NOT attisdropped",
        t=temp,
    ))  # fmt: skip
    schema = pa.schema([*((k, arrow_type(types[k])) for k in key), (REASON, pa.string())])
    if any(pa.types.is_string(schema.field(k).type) for k in key):
        raise PipelineError(f"{temp}: a text column in the version key cannot be read back exactly")
    columns = ", ".join(identifier(c) for c in schema.names)
    ordered = ", ".join(identifier(c) for c in key)
    sink = io.BytesIO()
    # S608: identifiers quoted by identifier() from the catalogue, no value in the text
    con.run(f"COPY (SELECT DISTINCT ON ({ordered}) {columns} FROM {held} ORDER BY {ordered}) "  # noqa: S608
            "TO STDOUT WITH (FORMAT csv)", stream=sink)  # fmt: skip
    return pcsv.read_csv(
        io.BytesIO(sink.getvalue()),
        read_options=pcsv.ReadOptions(column_names=schema.names),
        parse_options=pcsv.ParseOptions(newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(column_types=schema, null_values=[], strings_can_be_null=False,
                                            quoted_strings_can_be_null=False),
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


# The held set's format, in its entry of the load cursor (documents.HeldEntry). Format 1 (no "format" entry,
# written up to issue 20) read the held rows back from PostgreSQL as CSV with the reader's default null markers: a
# text value such as `NA`, `N/A`, `nan`, `NULL` or '' may have become NULL. Format 2 takes the rows from the staged
# Arrow parts. Its migration needs the processed log (`migrate`, called by the load), so it is not a step of the
# load cursor's own format (lambdas/common/documents.py), which only reads the entry.
FORMAT = 2


def entry(head: dict[str, object]) -> HeldEntry | None:
    """The held set the load cursor names, checked: None when nothing is held; a PipelineError naming the field
    when the entry cannot be read, a NewerFormatError when a newer release wrote the held set."""
    raw = head.get("held")
    if not raw:
        return None
    try:
        found = HeldEntry.model_validate(raw)
    except ValidationError as error:
        raise PipelineError(f"load head has an unreadable 'held' entry ({problem(error)})") from error
    if found.format > FORMAT:
        raise NewerFormatError(f"the held set {found.key}", found.format, FORMAT)
    return found


def is_typed(head: dict[str, object]) -> bool:
    """Whether the held set the head names was written in the current format."""
    found = entry(head)
    return found is None or found.format == FORMAT


@dataclass(frozen=True)
class Migrated:
    """A format-1 held set with its doubtful rows taken again from the processed log."""

    held: pa.Table  # the sound rows and the restored ones: a lost row is not in it
    restored: int  # rows whose text came back from the processed log
    lost: pa.Table  # the version keys of doubtful rows the log no longer has


def migrate(previous: pa.Table, key: list[str], history: Callable[[], Iterable[pa.Table]]) -> Migrated:
    """A format-1 held set made exact: each row with a NULL in a text column (the only values format 1 could
    have changed) is replaced by its version as the processed log has it (`history` yields the log's parts, read
    only when such a row exists), keeping its reason and held time. Rows without a NULL text are exact already."""
    text = [f.name for f in previous.schema if f.name not in (REASON, SINCE) and pa.types.is_string(f.type)]
    if not text or not any(previous[c].null_count for c in text):
        return Migrated(previous, 0, previous.select(key).slice(0, 0))
    doubtful = pc.is_null(previous[text[0]])
    for name in text[1:]:
        doubtful = pc.or_(doubtful, pc.is_null(previous[name]))
    sound, suspect = previous.filter(pc.invert(doubtful)), previous.filter(doubtful)
    facts = [c for c in previous.column_names if c not in (REASON, SINCE)]
    restored = last_copies((part.select(facts) for part in history()), suspect.select([*key, REASON, SINCE]), key)
    lost = suspect.select(key).join(restored.select(key), key, join_type="left anti", use_threads=False)
    held = pa.concat_tables([sound, restored.select(previous.column_names).cast(previous.schema)])
    return Migrated(held.sort_by([(k, "ascending") for k in key]), restored.num_rows, lost)


def read(bucket: Bucket, head: dict[str, object]) -> pa.Table | None:
    """The held set the committed load head names, if any."""
    found = entry(head)
    return None if found is None else bucket.get_parquet(found.key)


def write(bucket: Bucket, table: str, seq: int, settled: Settled) -> dict[str, object] | None:
    """Store the held set; returns the entry for the load head (None when nothing is held)."""
    if settled.held is None:
        return None
    key = held_key(table, seq)
    bucket.put_parquet(key, settled.held)
    return HeldEntry(key=key, rows=settled.rows, format=FORMAT).model_dump()
