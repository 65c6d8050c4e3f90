"""The benchmark's report: each figure printed once, and the scale its targets are stated for."""

from __future__ import annotations

from benchmarks.report import TARGET_SALES_ORDERS, Results, RunFigures


def results(sales_orders: int) -> Results:
    config = {"sales_orders": sales_orders, "serial": False, "tracemalloc": False, "profile": "", "changed_rows": 0}
    machine = {"cpus": 2, "python": "3.11", "pyarrow": "25", "postgresql": "18"}
    reference = [{"table": "staff", "rows": 20, "bytes": 100, "out_seconds": 0.1, "in_seconds": 0.1}]
    return Results(config, machine, {"staff": 20}, reference, [], {}, {})


def test_the_targets_are_printed_once_with_the_scale_they_apply_at() -> None:
    small = results(1_000).text()
    assert small.count("full initial load ≤ 2 × reference") == 1  # not again as markdown
    assert f"The targets apply at {TARGET_SALES_ORDERS:,} sales orders; this run has 1,000" in small
    assert "the scale of this run" in results(TARGET_SALES_ORDERS).text()
    assert "| full initial load ≤ 2 × reference |" in results(1_000).markdown()


def test_the_floor_is_the_mean_of_the_reference_before_and_after_the_runs() -> None:
    measured = results(TARGET_SALES_ORDERS)
    measured.reference_after = [{"table": "staff", "rows": 20, "bytes": 100, "out_seconds": 0.2, "in_seconds": 0.2}]
    assert abs(measured.reference_seconds - 0.3) < 1e-9  # (0.2 + 0.4) / 2
    text = measured.text()
    assert "reference before: COPY TO STDOUT" in text and "reference after: COPY TO STDOUT" in text
    assert "reference: mean of before and after (the floor)" in text


def test_a_no_change_run_that_scans_a_big_table_misses_its_target() -> None:
    measured = results(TARGET_SALES_ORDERS)
    measured.runs = [RunFigures.of("no-change", "no change", False, 1.0, [], "SUCCEEDED", "")]
    measured.config["no_change_rows_scanned"] = {"sales_order": 1_000_000, "payment": 0}
    verdict = next(v for v in measured.targets() if v.target == "no-change run scans no big source table")
    assert verdict.value == 1_000_000 and not verdict.met
    assert "sales_order 1,000,000" in verdict.detail

    measured.config["no_change_rows_scanned"] = {"sales_order": 0, "payment": 0}
    assert next(v for v in measured.targets() if v.target == verdict.target).met


def test_a_scan_target_without_a_no_change_run_is_not_measured_and_not_met() -> None:
    measured = results(TARGET_SALES_ORDERS)
    measured.config["no_change_rows_scanned"] = {"sales_order": 0}
    verdict = next(v for v in measured.targets() if v.target == "no-change run scans no big source table")
    assert verdict.value is None and not verdict.met
