"""The local runner's databases: `totesys` seeded with sample data and read through a role that may only SELECT,
and `warehouse`, on the embedded server of `localdb.embedded`.

The server itself (starting, finding, stopping it; creating a database) lives in `localdb`, which the dashboard
uses too; its names are re-exported here for the runner's callers.
"""

from __future__ import annotations

from typing import Any

import pg8000.native

from lambdas.common.db import connect
from localdb.embedded import EmbeddedServer, database_exists, ensure_database, is_running, start, stop
from statemachine.local import sample_data

__all__ = [
    "READER_ROLE",
    "EmbeddedServer",
    "database_exists",
    "ensure_database",
    "grant_read_only",
    "is_running",
    "seed_totesys",
    "start",
    "stop",
]

READER_ROLE = "totesys_reader"


def seed_totesys(credentials: dict[str, Any], *, scale: float = 1.0) -> dict[str, int] | None:
    """Create and fill the sample totesys once, and a role that may only read it."""
    con = connect(credentials)
    try:
        if sample_data.is_seeded(con):
            return None
        sample_data.create_schema(con)
        counts = sample_data.seed(con, scale=scale)
        grant_read_only(con, READER_ROLE)
        return counts
    finally:
        con.close()


def grant_read_only(con: pg8000.native.Connection, role: str) -> None:
    """The pipeline's source role: SELECT on the tables, nothing else, as in production."""
    ident = pg8000.native.identifier(role)
    if not con.run("SELECT 1 FROM pg_roles WHERE rolname = :r", r=role):
        con.run(f"CREATE ROLE {ident} LOGIN")
    con.run(f"GRANT USAGE ON SCHEMA public TO {ident}")
    con.run(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ident}")
