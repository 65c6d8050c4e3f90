"""The pipeline on data that breaks naive pipelines, checked against an expectation computed in SQL."""

from __future__ import annotations

from decimal import Decimal

from tests.conftest import Databases
from tests.sources import AWKWARD_TEXT


def test_awkward_contents_reach_the_warehouse_exactly(awkward: Databases) -> None:
    outcome = awkward.run()
    assert outcome.succeeded, outcome.cause
    assert awkward.differences() == {}
    warehouse = awkward.warehouse_con()
    try:
        names = {r[0] for r in warehouse.run("SELECT counterparty_legal_name FROM dim_counterparty")}
        assert names == set(AWKWARD_TEXT)
        assert warehouse.run("SELECT count(*) FROM dim_location WHERE address_line_2 IS NULL")[0][0] == 4
        assert warehouse.run("SELECT count(*) FROM dim_location WHERE address_line_2 = ''")[0][0] == 1
        assert warehouse.run("SELECT count(*) FROM dim_location WHERE district = ''")[0][0] == 2
        prices = [r[0] for r in warehouse.run("SELECT unit_price FROM fact_sales_order ORDER BY sales_order_id")]
        assert prices == [Decimal(p) for p in ("3.00", "2.50", "2.99", "0.00", "99999999.99", "12.10")]
        assert warehouse.run("SELECT currency_name FROM dim_currency WHERE currency_code = 'XYZ'") == [["XYZ"]]
        assert warehouse.run("SELECT min(date_id)::text, max(date_id)::text, count(*) FROM dim_date") == [
            ["1999-01-01", "2099-12-31", 36890]
        ]
        assert warehouse.run("SELECT count(*) FROM fact_purchase_order") == [[0]]
        assert warehouse.run("SELECT count(*) FROM dim_transaction WHERE purchase_order_id IS NULL") == [[6]]
    finally:
        warehouse.close()


def test_an_unknown_currency_code_is_logged_as_a_warning(awkward: Databases) -> None:
    assert awkward.run().succeeded
    logs = "".join(p.read_text() for p in (awkward.lake / "logs").glob("*.jsonl"))
    assert '"level":"WARNING"' in logs and "currency code 'XYZ' is not in ISO 4217" in logs
