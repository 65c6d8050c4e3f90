"""Creating the warehouse contract (`warehouse.sql`, shipped verbatim) where it is missing.

Loads run in parallel, so creation happens under a transaction-scoped advisory lock; tables that
already exist are left alone (the pipeline never drops or alters them).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import pg8000.native

CONTRACT = Path(__file__).with_name("warehouse.sql")
_LOCK_ID = 0x70746573  # any constant shared by all loads of this pipeline
_CREATE = re.compile(r"CREATE TABLE\s+(\w+)", re.IGNORECASE)


@lru_cache(maxsize=1)
def statements() -> tuple[tuple[str, str], ...]:
    """(table, CREATE TABLE statement) in the file's order, which respects the foreign keys."""
    text = "\n".join(line.split("--", 1)[0] for line in CONTRACT.read_text().splitlines())
    result = []
    for statement in (s.strip() for s in text.split(";")):
        if statement:
            match = _CREATE.match(statement)
            if not match:
                raise ValueError(f"warehouse.sql holds a statement that is not CREATE TABLE: {statement[:80]!r}")
            result.append((match.group(1), statement))
    return tuple(result)


def existing_tables(con: pg8000.native.Connection) -> set[str]:
    rows = con.run(
        "SELECT c.relname FROM pg_catalog.pg_class c "
        "WHERE c.relkind IN ('r', 'p') AND c.relname = ANY(:names) AND pg_catalog.pg_table_is_visible(c.oid)",
        names=[name for name, _ in statements()],
    )
    return {row[0] for row in rows}


def ensure_schema(con: pg8000.native.Connection) -> list[str]:
    """Create the contract's missing tables in one transaction; returns the names created."""
    wanted = statements()
    if existing_tables(con) >= {name for name, _ in wanted}:
        return []
    con.run("START TRANSACTION")
    try:
        con.run("SELECT pg_advisory_xact_lock(:id)", id=_LOCK_ID)
        present = existing_tables(con)
        created = []
        for name, statement in wanted:
            if name not in present:
                con.run(statement)
                created.append(name)
        con.run("COMMIT")
    except BaseException:
        con.run("ROLLBACK")
        raise
    return created
