"""How to cut a table into key ranges of about equal rows, from what PostgreSQL already knows, without reading it.

The partitioned extract (lambdas/extract/partitioned.py) needs two numbers and a list: how many rows the table has
(the planner's estimate, scaled to the table's current size), where its keys start and end (two index probes), and
where its keys cluster (the planner's histogram). All three are readable by a role that may only SELECT the table.
The first and last ranges are open to every int8, so a key inserted after the plan has a range too.
"""

from __future__ import annotations

import pg8000.native

from lambdas.common.db import identifier
from lambdas.extract.plan import INT8


def estimate_rows(con: pg8000.native.Connection, table: str, key: str) -> tuple[int, int | None, int | None]:
    """(estimated rows, smallest key, largest key) for nothing: the planner's own estimate (pg_class.reltuples scaled
    to the table's current size, as the planner scales it) and the key's ends through its index. A table never
    analysed has no reltuples: the key span stands in (serial keys: an upper bound)."""
    rows = con.run(
        "SELECT c.reltuples::float8, c.relpages::int8, "
        "pg_relation_size(c.oid) / current_setting('block_size')::int8 "
        "FROM pg_catalog.pg_class c WHERE c.oid = to_regclass(quote_ident(:table))",
        table=table,
    )
    reltuples, relpages, pages = rows[0] if rows else (-1.0, 0, 0)
    # S608: identifiers quoted by identifier(), no values
    column = identifier(key)
    low, high = con.run(f"SELECT min({column})::int8, max({column})::int8 FROM {identifier(table)}")[0]  # noqa: S608
    if reltuples >= 0 and relpages > 0:
        estimate = round(reltuples / relpages * pages)
    elif reltuples >= 0 and pages == 0:
        estimate = int(reltuples)
    else:
        estimate = 0 if low is None else high - low + 1
    return estimate, low, high


def key_quantiles(con: pg8000.native.Connection, table: str, key: str) -> list[int]:
    """The key's histogram bounds from the planner's statistics (about 100 quantiles of the keys, readable with
    SELECT on the table), so that ranges hold about as many rows each however the keys cluster; [] without them."""
    rows = con.run(
        "SELECT histogram_bounds::text FROM pg_catalog.pg_stats WHERE schemaname = current_schema() "
        "AND tablename = :table AND attname = :key",
        table=table,
        key=key,
    )
    text = rows[0][0] if rows and rows[0][0] else "{}"
    try:
        return sorted({int(v) for v in text.strip("{}").split(",") if v})
    except ValueError:
        return []


def key_ranges(low: int, high: int, count: int, quantiles: list[int] | None = None) -> list[tuple[int, int]]:
    """`count` adjacent key intervals over [low, high], cut at the key's quantiles when known, else of equal width;
    the first and last are open to every int8, so that together they hold every key, also one inserted after the
    plan."""
    count = max(1, min(count, high - low + 1))
    inside = [q for q in quantiles or [] if low < q <= high]
    if len(inside) >= count:
        cuts = sorted({inside[round(len(inside) * n / count)] for n in range(1, count)})
    else:
        width = (high - low + 1) / count
        cuts = [low + round(width * n) for n in range(1, count)]
    lows = [INT8[0], *cuts]
    highs = [c - 1 for c in cuts] + [INT8[1]]
    return list(zip(lows, highs, strict=True))
