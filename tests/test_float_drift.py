"""A source money column that drifts to floating point keeps its values, as PostgreSQL's own cast would, or fails."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from lambdas.common.db import connect
from lambdas.common.errors import PipelineError
from lambdas.transform.columns import money


def prices(values: list[float | None], kind: pa.DataType | None = None) -> pa.Table:
    return pa.table({"unit_price": pa.array(values, kind or pa.float64())})


def test_a_float8_price_with_more_than_two_decimals_is_refused_not_rounded_the_binary_way() -> None:
    with pytest.raises(PipelineError, match=r"sales_order\.unit_price: value '2\.675' cannot be stored"):
        money(prices([1.5, 2.675]), "sales_order", "unit_price")


def test_float_prices_become_the_decimals_postgresql_casts_them_to(pg_admin: dict[str, Any]) -> None:
    values = [2.67, 0.1 + 0.2, 1234567.89, 0.07, -3.1, 99999999.99, None]
    con = connect({**pg_admin, "dbname": "postgres"})
    try:
        postgres = [r[0] for r in con.run("SELECT CAST(CAST(v AS float8) AS numeric(10, 2)) "
                                          "FROM unnest(CAST(:v AS float8[])) WITH ORDINALITY AS u(v, i) ORDER BY i",
                                          v=values)]  # fmt: skip
    finally:
        con.close()
    assert money(prices(values), "sales_order", "unit_price").to_pylist() == postgres
    assert postgres[:2] == [Decimal("2.67"), Decimal("0.30")]


def test_float4_prices_keep_the_digits_postgresql_keeps() -> None:
    assert money(prices([2.67, 0.5], pa.float32()), "sales_order", "unit_price").to_pylist() == [
        Decimal("2.67"),
        Decimal("0.50"),
    ]
