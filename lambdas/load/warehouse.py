"""Merging one processed batch into a warehouse table, set-based: COPY into a staging table, then one
INSERT ... ON CONFLICT.

Dimensions hold the current state, so their rows are upserted on the primary key (and a row that did not
change is not rewritten). Facts hold history, so a version is inserted once and ignored after that, by
the UNIQUE version key of the contract; dim_date only ever gains days.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import pg8000.native
import pyarrow as pa
import pyarrow.csv as pcsv

from lambdas.common.db import identifier
from lambdas.common.errors import PipelineError
from lambdas.common.settings import LoadTuning
from lambdas.common.tables import FACTS

INSERT_ONLY = frozenset(FACTS) | {"dim_date"}


@dataclass
class MergeCounts:
    staged: int = 0
    written: int = 0
    newest_change: datetime | None = None  # the latest source last_updated among the staged fact rows

    def __iadd__(self, other: MergeCounts) -> MergeCounts:
        self.staged += other.staged
        self.written += other.written
        changes = [c for c in (self.newest_change, other.newest_change) if c is not None]
        self.newest_change = max(changes) if changes else None
        return self


def newest_loaded_change(con: pg8000.native.Connection, table: str) -> datetime | None:
    """The source's last_updated of the newest fact version in the warehouse (None for a dimension or an empty
    fact): what the freshness metric compares with the newest change the extract has seen."""
    if table not in FACTS:
        return None
    newest = con.run(f"SELECT max(last_updated_date + last_updated_time) FROM {identifier(table)}")  # noqa: S608 - contract name quoted by identifier()
    return newest[0][0]


def table_columns(con: pg8000.native.Connection, table: str) -> list[str]:
    rows = con.run(
        "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = to_regclass(quote_ident(:t)) "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        t=table,
    )
    return [r[0] for r in rows]


def primary_key(con: pg8000.native.Connection, table: str) -> list[str]:
    rows = con.run(
        "SELECT a.attname FROM pg_catalog.pg_index i "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = to_regclass(quote_ident(:t)) AND i.indisprimary ORDER BY a.attnum",
        t=table,
    )
    return [r[0] for r in rows]


_COPY_CHUNK = 1 << 20


def _csv(part: pa.Table) -> Iterator[memoryview]:
    """The part as CSV in 1 MiB chunks, one COPY message each (a file object would go in 8 KiB messages).

    Arrow's CSV quotes every string and leaves NULL unquoted, which is how COPY tells '' from NULL.
    """
    buffer = io.BytesIO()
    pcsv.write_csv(part, buffer, write_options=pcsv.WriteOptions(include_header=False))
    view = buffer.getbuffer()
    for start in range(0, len(view), _COPY_CHUNK):
        yield view[start : start + _COPY_CHUNK]


# From this many staged rows on, a fact's foreign keys are checked once for the whole batch instead of
# once per row (see foreign_keys_checked_once).
BULK_ROWS = LoadTuning.from_environ().bulk_rows


def foreign_keys(con: pg8000.native.Connection, table: str) -> list[tuple[str, str, str]]:
    """(name, definition, referenced table) of the table's foreign keys, from the catalogue."""
    rows = con.run(
        "SELECT c.conname, pg_get_constraintdef(c.oid), r.relname FROM pg_catalog.pg_constraint c "
        "JOIN pg_catalog.pg_class r ON r.oid = c.confrelid "
        "WHERE c.conrelid = to_regclass(quote_ident(:t)) AND c.contype = 'f' ORDER BY c.conname",
        t=table,
    )
    return [(name, definition, referenced) for name, definition, referenced in rows]


def lock_referenced(con: pg8000.native.Connection, table: str) -> None:
    """Lock the tables the table's foreign keys point at, in name order, as dropping those keys will.

    Dropping a foreign key takes ACCESS EXCLUSIVE on the table it references. Taking that lock first, in one
    order for every fact, before the transaction reads those tables at all (the held-rows check joins them),
    means two large fact loads queue on the first table instead of each holding a read lock the other's
    upgrade waits for (a deadlock seen at 1 M rows with three fact loads at once). Idempotent within a
    transaction. Readers of the dimensions wait while a large fact load runs, as they did for the DROP.
    """
    referenced = sorted({ref for _, _, ref in foreign_keys(con, table)})
    if referenced:
        con.run(f"LOCK TABLE {', '.join(identifier(r) for r in referenced)} IN ACCESS EXCLUSIVE MODE")


@contextmanager
def foreign_keys_checked_once(con: pg8000.native.Connection, table: str) -> Iterator[None]:
    """Check the table's foreign keys with one join each, instead of one lookup per inserted row per key.

    PostgreSQL checks a foreign key row by row on INSERT (~10 µs per key per row: minutes for a million
    facts with six keys), but validates a constraint being added with a single anti-join. So, inside the
    caller's transaction, the constraints are dropped, the rows inserted, and the same constraints (name and
    definition as the catalogue gives them) added back, which validates every row. A violation fails the
    statement and the whole transaction rolls back: nobody ever sees the table without its constraints.
    The referenced tables are locked first, in name order (lock_referenced), so concurrent fact loads queue
    instead of deadlocking. Only for large batches: it revalidates the whole table and locks it while it runs.
    """
    keys = foreign_keys(con, table)
    target = identifier(table)
    lock_referenced(con, table)
    for name, _, _ in keys:
        con.run(f"ALTER TABLE {target} DROP CONSTRAINT {identifier(name)}")
    yield
    for name, definition, _ in keys:  # DDL text from the catalogue itself, not from any input
        con.run(f"ALTER TABLE {target} ADD CONSTRAINT {identifier(name)} {definition}")


def _constraints(con: pg8000.native.Connection, table: str) -> list[tuple[str, str, str]]:
    """(owner, name, definition) of what a bulk load into the table rebuilds, in the order to add them back.

    A fact: its primary key, version key and foreign keys. A dimension: its primary key, and the foreign keys of
    the facts that point at it (a primary key cannot be dropped under them).
    """
    own = "puf" if table in FACTS else "p"
    rows = con.run(
        "SELECT r.relname, c.conname, pg_get_constraintdef(c.oid) FROM pg_catalog.pg_constraint c "
        "JOIN pg_catalog.pg_class r ON r.oid = c.conrelid "
        "WHERE (c.conrelid = to_regclass(quote_ident(:t)) AND c.contype::text = ANY(:own)) "
        "OR (c.confrelid = to_regclass(quote_ident(:t)) AND c.contype = 'f' AND :dimension) "
        "ORDER BY c.conrelid <> to_regclass(quote_ident(:t)), "
        "CASE c.contype WHEN 'p' THEN 0 WHEN 'u' THEN 1 ELSE 2 END, r.relname, c.conname",
        t=table,
        own=list(own),
        dimension=table not in FACTS,
    )
    return [(owner, name, definition) for owner, name, definition in rows]


def _bulk_into_empty(con: pg8000.native.Connection, table: str) -> bool:
    """An empty fact or dimension table (dim_date, a few thousand days, is always merged)."""
    return table != "dim_date" and not con.run(f"SELECT EXISTS (SELECT FROM {identifier(table)})")[0][0]  # noqa: S608 - contract name quoted by identifier()


# A staged row that breaks a rebuilt key or foreign key: the fast path gives way to the exact one.
_FALL_BACK_SQLSTATES = ("23505", "23503")
_SAVEPOINT = "totesys_bulk_into_empty"


def insert_into_empty(con: pg8000.native.Connection, table: str, column_list: str, stage: str) -> int | None:
    """Insert a large batch into an empty table as a bulk load: indexes and constraints built once, after.

    Into an empty table, INSERT ... ON CONFLICT costs twice a plain INSERT (a speculative probe per row and
    per index), and every index grows row by row; building the keys after the insert sorts once, and foreign
    keys are validated with one join each. So, under a savepoint and with a fact's referenced tables locked
    (lock_referenced), the constraints are dropped (_constraints), the staged rows inserted and the same
    constraints (owner, name and definition from the catalogue) added back, which checks every row.

    The constraints are also the check: a key staged twice (a fact's version, a dimension's primary key) or a
    fact row whose dimension row is not in the warehouse yet fails the rebuild, the savepoint is rolled back,
    and None tells the caller to take the exact path (held rows, ON CONFLICT) instead; so the result is always
    the exact path's. Into an empty table that path inserts every staged row too, once per key.
    """
    rebuilt = _constraints(con, table)
    lock_referenced(con, table)
    con.run(f"SAVEPOINT {_SAVEPOINT}")
    try:
        for owner, name, _ in reversed(rebuilt):
            con.run(f"ALTER TABLE {identifier(owner)} DROP CONSTRAINT {identifier(name)}")
        con.run(f"INSERT INTO {identifier(table)} ({column_list}) SELECT {column_list} FROM {stage}")  # noqa: S608 - contract names quoted by identifier()
        written = con.row_count
        for owner, name, definition in rebuilt:  # DDL text from the catalogue itself, not from any input
            con.run(f"ALTER TABLE {identifier(owner)} ADD CONSTRAINT {identifier(name)} {definition}")
    except pg8000.native.DatabaseError as error:
        details = error.args[0] if error.args and isinstance(error.args[0], dict) else {}
        if details.get("C") not in _FALL_BACK_SQLSTATES:
            raise
        con.run(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        return None
    con.run(f"RELEASE SAVEPOINT {_SAVEPOINT}")
    return written


# Called after staging, before the insert, with the staging table's identifier: may take rows out of it.
StagedHook = Callable[[pg8000.native.Connection, str], int]


def _merge(
    con: pg8000.native.Connection, table: str, columns: list[str], column_list: str, stage: str, *, bulk: bool
) -> int:
    """The staged rows into the table: facts and days inserted once per version, dimension rows upserted."""
    target = identifier(table)
    if table in INSERT_ONLY:
        insert = f"INSERT INTO {target} ({column_list}) SELECT {column_list} FROM {stage} ON CONFLICT DO NOTHING"  # noqa: S608 - contract names quoted by identifier()
        if not bulk:
            con.run(insert)
            return con.row_count
        with foreign_keys_checked_once(con, table):
            con.run(insert)
            written = con.row_count
        return written
    keys = primary_key(con, table)
    others = [c for c in columns if c not in keys]
    updates = ", ".join(f"{identifier(c)} = EXCLUDED.{identifier(c)}" for c in others)
    current = ", ".join(f"{target}.{identifier(c)}" for c in others)
    incoming = ", ".join(f"EXCLUDED.{identifier(c)}" for c in others)
    con.run(
        f"INSERT INTO {target} ({column_list}) SELECT {column_list} FROM {stage} "  # noqa: S608 - contract names quoted by identifier()
        f"ON CONFLICT ({', '.join(identifier(k) for k in keys)}) DO UPDATE SET {updates} "
        f"WHERE ROW({current}) IS DISTINCT FROM ROW({incoming})"
    )
    return con.row_count


def merge_batch(
    con: pg8000.native.Connection,
    table: str,
    parts: Iterable[pa.Table],
    *,
    bulk_rows: int | None = None,
    hold: StagedHook | None = None,
    lock_first: bool = False,
) -> MergeCounts:
    """Stage the parts of one batch and merge them; the caller owns the transaction.

    `hold` (for facts) moves staged rows whose references are not in the warehouse yet out of staging, so
    that they neither fail the insert nor are lost (see lambdas/load/held.py). `lock_first` locks the
    referenced tables after staging, before anything reads them (lock_referenced): a load that will drop its
    foreign keys in this transaction must, before its first read of a dimension.
    """
    target_columns = table_columns(con, table)
    stage = identifier(f"stage_{table}")
    counts = MergeCounts()
    columns: list[str] | None = None
    for part in parts:
        if columns is None:
            columns = part.column_names
            unknown = [c for c in columns if c not in target_columns]
            if unknown:
                raise PipelineError(f"{table}: processed data has column {', '.join(unknown)} the warehouse lacks")
            column_list = ", ".join(identifier(c) for c in columns)
            con.run(f"DROP TABLE IF EXISTS {stage}")
            con.run(
                f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS "  # noqa: S608 - contract names quoted by identifier()
                f"SELECT {column_list} FROM {identifier(table)} WITH NO DATA"
            )
        elif part.column_names != columns:
            part = part.select(columns)
        con.run(f"COPY {stage} ({column_list}) FROM STDIN WITH (FORMAT csv)", stream=_csv(part))
        counts.staged += part.num_rows
    if columns is None:
        return counts
    if lock_first:
        lock_referenced(con, table)
    bulk = counts.staged >= (BULK_ROWS if bulk_rows is None else bulk_rows)
    written = insert_into_empty(con, table, column_list, stage) if bulk and _bulk_into_empty(con, table) else None
    if written is None:
        if hold is not None:
            hold(con, stage)
        written = _merge(con, table, columns, column_list, stage, bulk=bulk)
    counts.written += written
    if "last_updated_date" in columns:
        counts.newest_change = con.run(f"SELECT max(last_updated_date + last_updated_time) FROM {stage}")[0][0]  # noqa: S608 - stage: a name quoted by identifier()
    return counts
