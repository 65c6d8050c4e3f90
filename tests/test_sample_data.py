"""The sample totesys database: schema from the contract, production-shaped rows, deterministic per seed.

Runs against a real PostgreSQL: the one in TOTESYS_TEST_PG_DSN if set, otherwise an embedded server.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import os
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pg8000.native
import pytest

from lambdas.common.db import connect
from statemachine.local import sample_data

BUSINESS_TABLES = (
    "address", "counterparty", "currency", "department", "design", "payment", "payment_type",
    "purchase_order", "sales_order", "staff", "transaction",
)  # fmt: skip
FACT_TABLES = ("sales_order", "purchase_order", "transaction", "payment")
# SHA-256 of the totesys contract (totesys_source.sql) as the team was given it: the project's copy must stay it.
CONTRACT_SHA256 = "9c993c883ba5b8d8490bc31ecdef0d489c1ee5c0425ed618e550d3aac510bb4b"


# --- a PostgreSQL for these tests: the session's server (tests/conftest.py pg_admin) ---------------------


@pytest.fixture(scope="session")
def sample_data_fresh_database(pg_admin: dict[str, Any]) -> Iterator[Callable[[], pg8000.native.Connection]]:
    """A factory of connections, each to a new empty database on the session's server."""
    admin = connect({**pg_admin, "dbname": "postgres"})
    created: list[str] = []
    opened: list[pg8000.native.Connection] = []

    def fresh_database() -> pg8000.native.Connection:
        name = f"sample_data_test_{os.getpid()}_{len(created)}"
        admin.run(f"DROP DATABASE IF EXISTS {name}")
        admin.run(f"CREATE DATABASE {name}")
        created.append(name)
        opened.append(connect({**pg_admin, "dbname": name}))
        return opened[-1]

    yield fresh_database
    for con in opened:
        con.close()
    for name in created:
        admin.run(f"DROP DATABASE IF EXISTS {name}")
    admin.close()


def _seeded(fresh: Callable[[], pg8000.native.Connection], **options: float) -> tuple:
    con = fresh()
    sample_data.create_schema(con)
    started = time.perf_counter()
    counts = sample_data.seed(con, **options)  # type: ignore[arg-type]
    return con, counts, time.perf_counter() - started


@pytest.fixture(scope="module")
def seeded(sample_data_fresh_database: Callable[[], pg8000.native.Connection]) -> dict[str, object]:
    """Two databases seeded alike at scale 1 (default seed), and one with another seed at a small scale."""
    con, counts, seconds = _seeded(sample_data_fresh_database)
    twin, twin_counts, _ = _seeded(sample_data_fresh_database)
    other, _, _ = _seeded(sample_data_fresh_database, scale=0.05, seed=7)
    return {
        "con": con,
        "counts": counts,
        "seconds": seconds,
        "twin": twin,
        "twin_counts": twin_counts,
        "other": other,
    }


def _one(con: pg8000.native.Connection, sql: str) -> object:
    return con.run(sql)[0][0]


def _table_digest(con: pg8000.native.Connection, table: str) -> str:
    return str(_one(con, f"SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t"))


# --- volumes, determinism ---------------------------------------------------------------------------------


def test_counts_are_production_volumes_and_match_the_tables(seeded: dict) -> None:
    con, counts = seeded["con"], seeded["counts"]
    actual = {table: _one(con, f"SELECT count(*) FROM {table}") for table in (*BUSINESS_TABLES, "_prisma_migrations")}
    assert counts == actual
    fixed = {
        "address": 30,
        "counterparty": 20,
        "staff": 20,
        "department": 8,
        "currency": 3,
        "payment_type": 4,
    }
    assert {table: actual[table] for table in fixed} == fixed
    assert actual["_prisma_migrations"] == 1
    assert 11_000 <= actual["sales_order"] <= 11_400
    assert 4_500 <= actual["purchase_order"] <= 4_700
    assert 440 <= actual["design"] <= 500
    assert actual["transaction"] == actual["sales_order"] + actual["purchase_order"]
    assert actual["payment"] == actual["transaction"]
    assert con.run("SELECT currency_code FROM currency ORDER BY currency_id") == [["GBP"], ["USD"], ["EUR"]]
    assert [row[0] for row in con.run("SELECT payment_type_name FROM payment_type ORDER BY 1")] == [
        "PURCHASE_PAYMENT", "PURCHASE_REFUND", "SALES_RECEIPT", "SALES_REFUND",
    ]  # fmt: skip


def test_scale_one_seeds_in_seconds(seeded: dict) -> None:
    assert seeded["seconds"] < 20, f"seed(scale=1) took {seeded['seconds']:.1f} s"


def test_same_seed_gives_identical_rows_and_another_seed_does_not(seeded: dict) -> None:
    con, twin, other = seeded["con"], seeded["twin"], seeded["other"]
    assert seeded["counts"] == seeded["twin_counts"]
    for table in (*BUSINESS_TABLES, "_prisma_migrations"):
        assert _table_digest(con, table) == _table_digest(twin, table), table
    for table in ("address", "counterparty", "staff", "sales_order", "_prisma_migrations"):
        assert _table_digest(con, table) != _table_digest(other, table), table


def test_scale_multiplies_only_the_growing_tables(seeded: dict) -> None:
    other = seeded["other"]
    assert _one(other, "SELECT count(*) FROM sales_order") == 560
    assert _one(other, "SELECT count(*) FROM purchase_order") == 230
    assert _one(other, "SELECT count(*) FROM design") == 24
    assert _one(other, "SELECT count(*) FROM address") == 30


# --- references -------------------------------------------------------------------------------------------


def test_foreign_keys_are_the_contracts_and_validated(seeded: dict, sample_data_fresh_database: Callable) -> None:
    # seed() lifts the foreign keys during COPY and puts them back; they must come back exactly as created.
    empty = sample_data_fresh_database()
    sample_data.create_schema(empty)
    query = (
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated"
        " FROM pg_constraint WHERE contype IN ('f', 'p') ORDER BY 1, 2"
    )
    expected = empty.run(query)
    assert len([row for row in expected if row[2].startswith("FOREIGN KEY")]) == 17
    assert seeded["con"].run(query) == expected


def test_every_transaction_has_exactly_one_order_of_its_type(seeded: dict) -> None:
    con = seeded["con"]
    assert (
        _one(
            con,
            "SELECT count(*) FROM transaction WHERE (sales_order_id IS NULL) = (purchase_order_id IS NULL)",
        )
        == 0
    )
    assert con.run(
        "SELECT transaction_type, count(*), count(sales_order_id), count(purchase_order_id),"
        " count(DISTINCT sales_order_id), count(DISTINCT purchase_order_id)"
        " FROM transaction GROUP BY 1 ORDER BY 1"
    ) == [
        ["PURCHASE", _one(con, "SELECT count(*) FROM purchase_order"), 0, 4600, 0, 4600],
        ["SALE", _one(con, "SELECT count(*) FROM sales_order"), 11200, 0, 11200, 0],
    ]  # fmt: skip


def test_payments_follow_their_transaction_and_order(seeded: dict) -> None:
    con = seeded["con"]
    assert _one(con, "SELECT count(DISTINCT transaction_id) FROM payment") == _one(
        con, "SELECT count(*) FROM transaction"
    )
    mismatches = con.run("""
        SELECT count(*) FROM payment p
        JOIN transaction t USING (transaction_id)
        JOIN payment_type pt USING (payment_type_id)
        LEFT JOIN sales_order s ON s.sales_order_id = t.sales_order_id
        LEFT JOIN purchase_order o ON o.purchase_order_id = t.purchase_order_id
        WHERE NOT (
            CASE t.transaction_type
                WHEN 'SALE' THEN pt.payment_type_name IN ('SALES_RECEIPT', 'SALES_REFUND')
                    AND p.counterparty_id = s.counterparty_id AND p.currency_id = s.currency_id
                    AND p.payment_amount = s.units_sold * s.unit_price
                    AND p.payment_date = s.agreed_payment_date
                WHEN 'PURCHASE' THEN pt.payment_type_name IN ('PURCHASE_PAYMENT', 'PURCHASE_REFUND')
                    AND p.counterparty_id = o.counterparty_id AND p.currency_id = o.currency_id
                    AND p.payment_amount = o.item_quantity * o.item_unit_price
                    AND p.payment_date = o.agreed_payment_date
                ELSE false
            END
        )
    """)  # fmt: skip
    assert mismatches == [[0]]
    assert [row[0] for row in con.run("SELECT DISTINCT paid FROM payment ORDER BY 1")] == [False, True]


def test_orders_use_designs_that_already_exist(seeded: dict) -> None:
    con = seeded["con"]
    too_early = "SELECT count(*) FROM sales_order s JOIN design d USING (design_id) WHERE d.created_at > s.created_at"
    assert _one(con, too_early) == 0


# --- shape: timestamps, dates, values ---------------------------------------------------------------------


def test_timestamps_have_milliseconds_ties_and_later_updates(seeded: dict) -> None:
    con = seeded["con"]
    for table in BUSINESS_TABLES:
        assert con.run(f"""
            SELECT count(*) FILTER (WHERE date_trunc('milliseconds', created_at) <> created_at
                                       OR date_trunc('milliseconds', last_updated) <> last_updated),
                   count(*) FILTER (WHERE last_updated < created_at)
            FROM {table}
        """) == [[0, 0]], table  # fmt: skip
    for table in FACT_TABLES:
        with_ms = _one(con, f"SELECT count(*) FROM {table} WHERE extract(milliseconds FROM created_at) % 1000 <> 0")
        assert with_ms > 0.9 * _one(con, f"SELECT count(*) FROM {table}"), table
    for table in ("sales_order", "purchase_order", "payment", "design", "address"):
        assert _one(con, f"SELECT count(*) FROM {table} WHERE last_updated > created_at") > 0, table
    biggest, shared = con.run(
        "SELECT max(n), count(*) FILTER (WHERE n > 1)"
        " FROM (SELECT count(*) AS n FROM sales_order GROUP BY created_at) AS batches"
    )[0]
    assert biggest == 5
    assert shared > 1_000
    updated_together = "SELECT count(*) FROM sales_order GROUP BY last_updated HAVING count(*) > 1"
    assert len(con.run(updated_together)) > 1_000
    # an order's transaction and payment are inserted in the same batch, with the same timestamp
    assert _one(con, """
        SELECT count(*) FROM transaction t JOIN payment p USING (transaction_id)
        LEFT JOIN sales_order s USING (sales_order_id) LEFT JOIN purchase_order o USING (purchase_order_id)
        WHERE t.created_at <> p.created_at OR t.created_at <> coalesce(s.created_at, o.created_at)
    """) == 0  # fmt: skip


def test_orders_arrive_in_working_hours_from_november_2022_for_22_months(seeded: dict) -> None:
    con = seeded["con"]
    for table in (*FACT_TABLES, "design"):
        first, last, early, late = con.run(f"""
            SELECT min(created_at), max(last_updated),
                   min(created_at::time), max(created_at::time)
            FROM {table}
        """)[0]  # fmt: skip
        assert first.date() == dt.date(2022, 11, 3), table
        assert dt.date(2024, 8, 1) <= last.date() <= dt.date(2024, 9, 30), table
        assert early >= dt.time(8) and late < dt.time(19), table
    months = con.run("SELECT date_trunc('month', created_at), count(*) FROM sales_order GROUP BY 1 ORDER BY 1")
    assert 21 <= len(months) <= 23
    assert all(300 <= n <= 700 for _, n in months[1:-1]), months


def test_agreed_dates_are_iso_text_a_few_days_after_the_last_change(seeded: dict) -> None:
    con = seeded["con"]
    texts = con.run(
        "SELECT agreed_delivery_date FROM sales_order UNION SELECT agreed_payment_date FROM sales_order"
        " UNION SELECT agreed_delivery_date FROM purchase_order"
        " UNION SELECT agreed_payment_date FROM purchase_order UNION SELECT payment_date FROM payment"
    )
    assert len(texts) > 600
    for (text,) in texts:
        assert len(text) == 10 and dt.date.fromisoformat(text).isoformat() == text, text
    for table in ("sales_order", "purchase_order"):
        # agreed when the order was placed, or re-agreed at its last edit
        delivery, payment = con.run(f"""
            SELECT array[min(d), max(d)], array[min(p), max(p)]
            FROM (SELECT agreed_delivery_date::date - last_updated::date AS d,
                         agreed_payment_date::date - last_updated::date AS p
                  FROM {table}) AS days
        """)[0]  # fmt: skip
        assert delivery == [2, 7] and payment == [1, 7], table


def test_awkward_but_legal_values_are_present(seeded: dict) -> None:
    con = seeded["con"]
    nulls = (
        ("address", "address_line_2"), ("address", "district"), ("department", "location"),
        ("department", "manager"), ("counterparty", "commercial_contact"),
        ("counterparty", "delivery_contact"),
    )  # fmt: skip
    for table, column in nulls:
        assert 0 < _one(con, f"SELECT count(*) FROM {table} WHERE {column} IS NULL") < 30, (table, column)
    names = [
        row[0]
        for row in con.run(
            "SELECT first_name || ' ' || last_name FROM staff"
            " UNION ALL SELECT counterparty_legal_name FROM counterparty UNION ALL SELECT city FROM address"
        )
    ]
    assert any("'" in name for name in names)
    assert any("," in name for name in names)
    assert any(not name.isascii() for name in names)
    assert all(email.isascii() for (email,) in con.run("SELECT email_address FROM staff"))
    prices = [
        row[0]
        for row in con.run("SELECT unit_price FROM sales_order UNION ALL SELECT item_unit_price FROM purchase_order")
    ]
    assert all(price == price.quantize(Decimal("0.01")) and price > 0 for price in prices)
    exponents = {price.as_tuple().exponent for price in prices}
    assert exponents == {0, -1, -2}  # '3', '2.5' and '2.99', as the application writes them


def test_sequences_continue_after_the_loaded_ids(seeded: dict) -> None:
    other = seeded["other"]
    for table in BUSINESS_TABLES:
        column = f"{table}_id"
        nextval = _one(other, f"SELECT nextval(pg_get_serial_sequence('{table}', '{column}'))")
        assert nextval == _one(other, f"SELECT max({column}) FROM {table}") + 1, table


# --- the runner's use, and the pieces -----------------------------------------------------------------------


def test_runner_can_ask_whether_seeded_and_seeding_is_not_repeated(
    sample_data_fresh_database: Callable,
) -> None:
    con = sample_data_fresh_database()
    assert not sample_data.is_seeded(con)
    with pytest.raises(RuntimeError, match="create_schema"):
        sample_data.seed(con, scale=0.01)
    sample_data.create_schema(con)
    sample_data.create_schema(con)  # all tables there: a no-op, so a runner may call it every time
    assert not sample_data.is_seeded(con)
    with pytest.raises(ValueError, match="scale"):
        sample_data.seed(con, scale=0)
    counts = sample_data.seed(con, scale=0.01)
    assert counts["sales_order"] == 112
    assert sample_data.is_seeded(con)
    with pytest.raises(RuntimeError, match="already hold rows"):
        sample_data.seed(con, scale=0.01)
    assert _one(con, "SELECT count(*) FROM sales_order") == 112


def test_split_sql_ignores_semicolons_in_comments_and_quotes() -> None:
    script = """
        -- a comment; with a semicolon and a 'quote
        CREATE TABLE a (x int DEFAULT 1); /* block; comment */
        INSERT INTO a VALUES ('it''s; -- not a comment');
        SELECT ";odd""name" FROM a -- trailing; comment
    """
    assert sample_data.split_sql(script) == [
        "CREATE TABLE a (x int DEFAULT 1)",
        "INSERT INTO a VALUES ('it''s; -- not a comment')",
        'SELECT ";odd""name" FROM a',
    ]
    statements = sample_data.split_sql(sample_data.SCHEMA_PATH.read_text(encoding="utf-8"))
    assert len(statements) == 12 and all(s.startswith("CREATE TABLE") for s in statements)


def test_csv_lines_survive_copy_with_awkward_text(sample_data_fresh_database: Callable) -> None:
    con = sample_data_fresh_database()
    con.run("CREATE TABLE t (n int, s text, b boolean)")
    values = [
        "",
        None,
        "a,b",
        'say "hi"',
        "two\nlines",
        "cr\r\nlf",
        "back\\slash",
        "\\.",
        "O'Connor; Zoë",
        " pad ",
    ]
    rows = [(n, value, n % 2 == 0) for n, value in enumerate(values)]
    data = "".join(sample_data._csv_line(row) for row in rows).encode()
    con.run("COPY t (n, s, b) FROM STDIN WITH (FORMAT csv)", stream=[data])
    assert [tuple(row) for row in con.run("SELECT n, s, b FROM t ORDER BY n")] == rows


def test_schema_file_is_the_contract_byte_for_byte() -> None:
    assert hashlib.sha256(sample_data.SCHEMA_PATH.read_bytes()).hexdigest() == CONTRACT_SHA256


def test_allocation_is_exact() -> None:
    for total, weights in itertools.product((0, 1, 7, 11_200), ([1.0], [0.5, 2.0, 1.0], [1.0] * 670)):
        parts = sample_data._allocate(total, weights)
        assert sum(parts) == total and len(parts) == len(weights) and min(parts) >= 0
