"""The extract's bulk read (ADBC, binary COPY decoded in C): the lake's exact schema and values, in the snapshot of
the pg8000 transaction beside it, through a connection opened like that one and whose errors never show a password.
"""

from __future__ import annotations

import struct
import time
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pyarrow as pa
import pytest

from lambdas.common.db import Connection, ConnectionSettings, connect
from lambdas.common.digest import differing_ranges
from lambdas.common.errors import TransientError
from lambdas.common.tables import PRIMARY_KEYS, SOURCE_TABLES
from lambdas.extract.bulk import libpq_uri, record_batches
from lambdas.extract.reconcile import lake_digests, source_digests
from lambdas.extract.source import Column, arrow_schema, changed_rows, snapshot, table_columns
from tests.conftest import Databases, as_admin
from tests.test_reconcile_core import reader as read_only

SECRET = "s3cr3t:@/?&=%'\"pw"  # every character a URI or a connection string would have to escape


def read(con: Connection, table: str) -> pa.Table:
    columns = table_columns(con, table)
    with changed_rows(con, table, columns, None) as batches:
        return pa.Table.from_batches(list(batches), schema=arrow_schema(columns))


def comparable(value: Any) -> Any:
    """NaN equals itself here, with its sign bit: the lake keeps PostgreSQL's bits."""
    if isinstance(value, float) and value != value:
        return ("NaN", struct.pack(">d", value).hex())
    return value


def as_pg8000_reads_it(con: Connection, table: str, columns: list[Column]) -> pa.Table:
    """The oracle: pg8000's values of the same rows, any column the lake keeps as text in PostgreSQL's own text."""
    selected = ", ".join(f'"{c.name}"' + ("" if c.arrow_type != pa.string() else "::text") for c in columns)
    rows = con.run(f'SELECT {selected} FROM "{table}"')
    return pa.table({c.name: pa.array([r[i] for r in rows], c.arrow_type) for i, c in enumerate(columns)})


def sorted_rows(rows: pa.Table, key: str) -> list[dict[str, Any]]:
    ordered = rows.sort_by(key).to_pylist()
    return [{name: comparable(value) for name, value in row.items()} for row in ordered]


def test_every_awkward_value_reaches_the_lake_typed_as_before_and_as_postgresql_holds_it(awkward: Databases) -> None:
    as_admin(awkward, "CREATE TABLE floats (id int, f float8, r real, n numeric, last_updated timestamp)")
    as_admin(awkward, "INSERT INTO floats VALUES (1, 'NaN', '-Infinity', 'NaN', now()), (2, '-0', 1e-40, 1e400, "
                      "now()), (3, 'Infinity', NULL, -1.5, now()), (4, 1e308, 3.4e38, 0.1, NULL)")  # fmt: skip
    with read_only(awkward) as con:
        for table in [*SOURCE_TABLES, "floats"]:
            columns = table_columns(con, table)
            lake = read(con, table)
            assert lake.schema == arrow_schema(columns)
            key = PRIMARY_KEYS.get(table, "id")
            assert sorted_rows(lake, key) == sorted_rows(as_pg8000_reads_it(con, table, columns), key), table
        numeric_text = read(con, "floats").sort_by("id")["n"].to_pylist()
        assert numeric_text == ["NaN", "1" + "0" * 400, "-1.5", "0.1"]


def test_a_nan_computed_by_postgresql_keeps_its_bits_so_reconciliation_agrees_with_the_lake(
    databases: Databases,
) -> None:
    as_admin(databases, "CREATE TABLE floats (id int, f float8, last_updated timestamp)")
    as_admin(databases, "INSERT INTO floats VALUES (1, 'Infinity'::float8 * 0, now()), (2, 'NaN', now())")
    with read_only(databases) as con:
        columns = table_columns(con, "floats")
        lake = read(con, "floats")
        assert differing_ranges(source_digests(con, "floats", columns, "id", 10),
                                lake_digests(lake, columns, "id", 10)) == []  # fmt: skip


def test_the_bulk_read_sees_the_snapshot_of_the_transaction_beside_it(databases: Databases) -> None:
    databases.seed(scale=0.02)
    with read_only(databases) as con:
        before = read(con, "currency")
        as_admin(databases, "UPDATE currency SET currency_code = 'XXX', last_updated = now()")
        as_admin(databases, "DELETE FROM payment")
        assert read(con, "currency").equals(before)
        assert read(con, "payment").num_rows > 0
    with read_only(databases) as con:
        assert set(read(con, "currency")["currency_code"].to_pylist()) == {"XXX"}


def test_the_window_and_key_intervals_travel_as_settings_and_an_empty_window_yields_no_batch(
    databases: Databases,
) -> None:
    from datetime import datetime

    from lambdas.extract.source import KeyIntervals

    databases.seed(scale=0.02)
    with read_only(databases) as con:
        columns = table_columns(con, "sales_order")
        with changed_rows(
            con, "sales_order", columns, None, within=KeyIntervals("sales_order_id", ((2, 4), (9, 9)))
        ) as b:
            assert sorted(pa.Table.from_batches(list(b))["sales_order_id"].to_pylist()) == [2, 3, 4, 9]
        with changed_rows(con, "sales_order", columns, datetime(2999, 1, 1)) as batches:
            assert list(batches) == []


def test_batches_are_bounded_by_the_block_size_not_the_table(databases: Databases) -> None:
    databases.seed(scale=0.05)
    with read_only(databases) as con:
        columns = table_columns(con, "payment")
        with changed_rows(con, "payment", columns, None, block_bytes=16 * 1024) as batches:
            sizes = [batch.num_rows for batch in batches]
    assert len(sizes) > 3 and max(sizes) < sum(sizes) / 3


def test_the_uri_carries_the_settings_of_the_pg8000_connection_and_any_password_intact() -> None:
    credentials = {
        "host": "db.example.com",
        "port": 6543,
        "username": "etl@x",
        "password": SECRET,
        "dbname": "tote sys",
    }
    settings = ConnectionSettings(credentials, "totesys-etl-extract", 120.0, 7.5)
    url = urlparse(libpq_uri(settings))
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    assert (url.hostname, url.port, unquote(url.username or ""), unquote(url.password or "")) == (
        "db.example.com", 6543, "etl@x", SECRET)  # fmt: skip
    assert unquote(url.path) == "/tote sys"
    assert query["sslmode"] == "verify-full" and query["application_name"] == "totesys-etl-extract"
    assert query["connect_timeout"] == "8" and query["gssencmode"] == "disable"
    socket = ConnectionSettings({**credentials, "host": "/run/pg", "sslmode": "disable"}, "x", 1.0, 1.0)
    query = {k: v[-1] for k, v in parse_qs(urlparse(libpq_uri(socket)).query).items()}
    assert (query["host"], query["port"], query["sslmode"]) == ("/run/pg", "6543", "disable")
    assert SECRET not in repr(settings)


def test_a_bulk_connection_that_fails_is_transient_and_never_shows_the_password(
    databases: Databases, capsys: pytest.CaptureFixture[str]
) -> None:
    con = connect(databases.source)
    try:
        nowhere = {"host": "127.0.0.1", "port": 1, "username": "etl", "password": SECRET, "dbname": "totesys",
                   "sslmode": "disable"}  # fmt: skip
        con.settings = replace(con.settings, credentials=nowhere)
        with snapshot(con), pytest.raises(TransientError) as failed, record_batches(con, "SELECT 1", {}, batch_bytes=1):
            pass
    finally:
        con.close()
    assert "cannot connect to 127.0.0.1:1" in str(failed.value)
    shown = str(failed.value) + repr(failed.value) + "".join(capsys.readouterr())
    assert SECRET not in shown and "s3cr3t" not in shown


def test_a_statement_the_server_cancels_is_a_classified_error(databases: Databases) -> None:
    con = connect(databases.source, statement_timeout=0.2)
    try:
        with (
            snapshot(con),
            pytest.raises(TransientError, match="57014"),
            record_batches(con, "SELECT pg_sleep(2)", {}, batch_bytes=1024) as batches,
        ):
            list(batches)
    finally:
        con.close()


def test_the_bulk_read_needs_the_settings_of_a_connection_from_connect(databases: Databases) -> None:
    with (
        pytest.raises(TypeError, match=r"lambdas\.common\.db\.connect"),
        record_batches(object(), "SELECT 1", {}, batch_bytes=1024),  # type: ignore[arg-type]
    ):
        pass


def test_an_error_of_the_consumer_passes_through_unchanged_and_the_connection_is_closed(databases: Databases) -> None:
    databases.seed(scale=0.05)
    with read_only(databases) as con:
        columns = table_columns(con, "payment")
        with pytest.raises(OSError, match="disk full"), changed_rows(con, "payment", columns, None, block_bytes=1) as b:
            next(b)
            raise OSError("disk full")
        others = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )  # not autovacuum's workers
        deadline = time.monotonic() + 5  # the server notices a closed connection a moment later
        while con.run(others)[0][0] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert con.run(others) == [[0]]


def test_text_is_formatted_as_in_the_pg8000_session_whatever_libpq_reads_from_its_environment(
    databases: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_admin(databases, "CREATE TABLE stamps (id int, at timestamptz, span interval, last_updated timestamp)")
    as_admin(databases, "INSERT INTO stamps VALUES (1, '2024-06-30 23:59:59.5+00', '1 day 02:03:04', now())")
    monkeypatch.setenv("PGTZ", "Asia/Kathmandu")
    monkeypatch.setenv("PGDATESTYLE", "SQL, DMY")
    monkeypatch.setenv("PGOPTIONS", "-c IntervalStyle=iso_8601")
    with read_only(databases) as con:
        expected = con.run("SELECT at::text, span::text FROM stamps")
        lake = read(con, "stamps")
    assert [lake["at"][0].as_py(), lake["span"][0].as_py()] == expected[0]
