"""Text arrives exactly whatever the servers' defaults for the client encoding are.

Every connection of the pipeline (pg8000's and the bulk reader's, libpq's) asks for UTF8 in its startup packet,
which a role's or database's `client_encoding` setting and libpq's PGCLIENTENCODING cannot change, and a source
database encoded in LATIN1 is converted by the server. Reconciliation reads through the same reader, so it finds
nothing to correct.
"""

from __future__ import annotations

from typing import Any

import pg8000.native
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lambdas.common.db import connect
from statemachine.local import runner, sample_data
from tests.conftest import Databases, as_admin
from tests.sources import T0, insert

# 'MarÃ©' is what 'Maré' becomes when its UTF-8 bytes are read as LATIN1: it must stay itself, and 'Maré' too.
LATIN1_NAMES = {1: "Maré", 2: "MarÃ©", 3: "Ñandú ÿ «ß»"}
BEYOND_LATIN1 = {4: "€uro Łódź", 5: "日本 🙂"}


def rename_staff(db: Databases, names: dict[int, str]) -> None:
    """As the source's owner, through a UTF8 connection (a plain pg8000 one follows the server's default)."""
    con = connect({**db.admin, "dbname": db.source["dbname"]})
    try:
        for staff_id, name in names.items():
            con.run("UPDATE staff SET first_name = :n, last_name = :n, last_updated = now() WHERE staff_id = :id",
                    n=name, id=staff_id)  # fmt: skip
    finally:
        con.close()


def warehouse_names(db: Databases, ids: list[int]) -> dict[int, list[str]]:
    rows = db.warehouse_sql("SELECT staff_id, first_name, last_name FROM dim_staff WHERE staff_id = ANY(:ids)",
                            ids=ids)  # fmt: skip
    return {staff_id: [first, last] for staff_id, first, last in rows}


def lake_names(db: Databases) -> dict[int, str]:
    """The latest first_name of each staff member in the ingestion lake's Parquet."""
    parts = sorted((db.lake / runner.INGESTION_BUCKET / "staff").glob("*/part-*.parquet"))
    rows = pa.concat_tables([pq.read_table(p, columns=["staff_id", "first_name"]) for p in parts]).to_pylist()
    return {row["staff_id"]: row["first_name"] for row in rows}  # later batches last


def assert_exact_and_nothing_to_reconcile(db: Databases, names: dict[int, str]) -> None:
    assert warehouse_names(db, list(names)) == {k: [v, v] for k, v in names.items()}
    assert {k: v for k, v in lake_names(db).items() if k in names} == names
    assert db.differences() == {}
    reconciled = db.run(reconcile=True)
    assert reconciled.succeeded, reconciled.cause
    found = {i.table: i.result["reconciled"] for i in reconciled.invocations if i.stage == "extract" and i.ok}
    assert found and all(not r["ranges_differing"] for r in found.values()), found


def set_latin1_default(db: Databases, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    role = pg8000.native.identifier(db.source["username"])
    if how == "role":
        as_admin(db, f"ALTER ROLE {role} SET client_encoding = 'LATIN1'")
    elif how == "database":
        for name in (db.source["dbname"], db.warehouse["dbname"]):
            as_admin(db, f"ALTER DATABASE {pg8000.native.identifier(name)} SET client_encoding = 'LATIN1'")
    else:
        monkeypatch.setenv("PGCLIENTENCODING", "LATIN1")  # libpq's: the bulk reader's connection would take it


@pytest.mark.parametrize("how", ["role", "database", "environment"])
def test_text_arrives_exactly_when_the_servers_default_client_encoding_is_latin1(
    reader: Databases, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    assert reader.run().succeeded
    names = LATIN1_NAMES | BEYOND_LATIN1  # a UTF8 database holds them all; LATIN1 cannot carry the last two
    rename_staff(reader, names)
    set_latin1_default(reader, how, monkeypatch)
    if how != "environment":
        socket = f"{reader.admin['host']}/.s.PGSQL.{reader.admin['port']}"
        plain = pg8000.native.Connection(reader.source["username"], database=reader.source["dbname"], unix_sock=socket)
        con = connect(reader.source)
        try:
            assert plain.run("SHOW client_encoding") == [["LATIN1"]], "the default is set"
            assert con.run("SHOW client_encoding") == [["UTF8"]], "the pipeline's connection asks for UTF8"
        finally:
            plain.close()
            con.close()

    outcome = reader.run()

    assert outcome.succeeded, outcome.cause
    assert_exact_and_nothing_to_reconcile(reader, names)


@pytest.fixture
def latin1_source(databases: Databases) -> Databases:
    """The test's source database created again, encoded in LATIN1: a department and its staff (the sample data
    has names LATIN1 cannot hold); the other tables stay empty."""
    name = pg8000.native.identifier(databases.source["dbname"])
    admin = connect({**databases.admin, "dbname": "postgres"})
    try:
        admin.run(f"DROP DATABASE {name} WITH (FORCE)")
        admin.run(f"CREATE DATABASE {name} ENCODING 'LATIN1' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
    finally:
        admin.close()
    con = databases.source_con()
    try:
        assert con.run("SHOW server_encoding") == [["LATIN1"]]
        sample_data.create_schema(con)
        insert(con, "department", {"department_id": 1, "department_name": "Ventes", "location": "Bâle",
                                   "manager": "Zoë", "created_at": T0, "last_updated": T0})  # fmt: skip
        for staff_id in LATIN1_NAMES:
            row = {"staff_id": staff_id, "first_name": "First", "last_name": "Last", "department_id": 1,
                   "email_address": f"s{staff_id}@example.com", "created_at": T0, "last_updated": T0}  # fmt: skip
            insert(con, "staff", row)
    finally:
        con.close()
    return databases


def test_text_of_a_latin1_encoded_source_database_arrives_exactly(latin1_source: Databases) -> None:
    assert latin1_source.run().succeeded
    rename_staff(latin1_source, LATIN1_NAMES)
    with pytest.raises(pg8000.native.DatabaseError) as refused:  # the server cannot store it: nothing to carry
        rename_staff(latin1_source, {4: "€uro"})
    details: dict[str, Any] = refused.value.args[0]
    assert details["C"] == "22P05", details  # untranslatable character

    outcome = latin1_source.run()

    assert outcome.succeeded, outcome.cause
    assert_exact_and_nothing_to_reconcile(latin1_source, LATIN1_NAMES)
