"""The benchmark's report: each figure printed once, and the scale its targets are stated for."""

from __future__ import annotations

from benchmarks.report import TARGET_SALES_ORDERS, Results


def results(sales_orders: int) -> Results:
    config = {"sales_orders": sales_orders, "serial": False, "tracemalloc": False, "profile": "", "changed_rows": 0}
    machine = {"cpus": 2, "python": "3.11", "pyarrow": "25", "postgresql": "18"}
    reference = [{"table": "staff", "rows": 20, "bytes": 100, "out_seconds": 0.1, "in_seconds": 0.1}]
    return Results(config, machine, {"staff": 20}, reference, [], {}, {})


def test_the_targets_are_printed_once_with_the_scale_they_apply_at() -> None:
    small = results(1_000).text()
    assert small.count("full initial load ≤ 4 × reference") == 1  # not again as markdown
    assert f"The targets apply at {TARGET_SALES_ORDERS:,} sales orders; this run has 1,000" in small
    assert "the scale of this run" in results(TARGET_SALES_ORDERS).text()
    assert "| full initial load ≤ 4 × reference |" in results(1_000).markdown()
