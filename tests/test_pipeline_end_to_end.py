"""The whole pipeline on real PostgreSQL: pipeline.asl.json executed by moto, real handlers, real SQL checks."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Databases

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sample(databases: Databases) -> Databases:
    return databases.seed(scale=0.2)


def warehouse_counts(db: Databases) -> dict[str, int]:
    con = db.warehouse_con()
    try:
        tables = [r[0] for r in con.run("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        return {t: con.run(f'SELECT count(*) FROM "{t}"')[0][0] for t in tables}
    finally:
        con.close()


def test_first_run_fills_every_warehouse_table_exactly_as_the_source_says(sample: Databases) -> None:
    outcome = sample.run()
    assert outcome.succeeded, outcome.cause
    counts = warehouse_counts(sample)
    assert set(counts) == {
        "dim_date", "dim_staff", "dim_location", "dim_currency", "dim_design", "dim_counterparty",
        "dim_payment_type", "dim_transaction", "fact_sales_order", "fact_purchase_order", "fact_payment",
    }  # fmt: skip
    assert all(n > 0 for n in counts.values()), counts
    assert sample.differences() == {}


def test_second_run_with_no_source_change_adds_nothing_and_writes_no_objects(sample: Databases) -> None:
    assert sample.run().succeeded
    before = warehouse_counts(sample)
    files_before = sorted(p for p in sample.lake.rglob("*") if p.is_file() and "logs" not in p.parts)

    second = sample.run()

    assert second.succeeded
    assert warehouse_counts(sample) == before
    assert [i.stage for i in second.invocations] == ["lease", "plan", "report"]  # no table had work
    files_after = sorted(p for p in sample.lake.rglob("*") if p.is_file() and "logs" not in p.parts)
    assert files_after == files_before


def test_changes_between_runs_add_fact_versions_and_update_dimensions(sample: Databases) -> None:
    assert sample.run().succeeded
    con = sample.source_con()
    try:
        con.run("UPDATE sales_order SET units_sold = units_sold + 1, last_updated = now() "
                "WHERE sales_order_id IN (1, 2, 3)")  # fmt: skip
        con.run("UPDATE department SET department_name = 'Renamed dept', last_updated = now() WHERE department_id = 1")
        con.run(
            "UPDATE address SET city = 'New City', last_updated = now() "
            "WHERE address_id = (SELECT legal_address_id FROM counterparty ORDER BY counterparty_id LIMIT 1)"
        )
        staff_in_dept = con.run("SELECT count(*) FROM staff WHERE department_id = 1")[0][0]
    finally:
        con.close()
    before = warehouse_counts(sample)

    assert sample.run().succeeded

    after = warehouse_counts(sample)
    assert after["fact_sales_order"] == before["fact_sales_order"] + 3
    warehouse = sample.warehouse_con()
    try:
        assert (
            warehouse.run("SELECT count(*) FROM dim_staff WHERE department_name = 'Renamed dept'")[0][0]
            == staff_in_dept
        )
        assert (
            warehouse.run("SELECT count(*) FROM dim_counterparty WHERE counterparty_legal_city = 'New City'")[0][0] >= 1
        )
        assert warehouse.run("SELECT count(*) FROM dim_location WHERE city = 'New City'")[0][0] == 1
    finally:
        warehouse.close()
    assert staff_in_dept > 0
    assert sample.differences() == {}


def test_local_command_exits_zero_on_success_and_non_zero_on_failure(sample: Databases, tmp_path: Path) -> None:
    def dsn(credentials: dict) -> str:
        return f"postgresql://{credentials['username']}@/{credentials['dbname']}?host={credentials['host']}" \
               f"&port={credentials['port']}"  # fmt: skip

    command = [sys.executable, "-m", "statemachine.local", "run", "--source-dsn", dsn(sample.source),
               "--warehouse-dsn", dsn(sample.warehouse), "--lake-dir", str(tmp_path / "cli-lake")]  # fmt: skip
    ok = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "SUCCEEDED" in ok.stdout

    con = sample.source_con()
    try:
        con.run("UPDATE sales_order SET agreed_delivery_date = 'soon', last_updated = now() WHERE sales_order_id = 1")
    finally:
        con.close()
    failed = subprocess.run(
        [*command, "--tables", "sales_order"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "sales_order.agreed_delivery_date" in failed.stdout
    assert "'soon'" in failed.stdout
    assert "Re-run only these tables with:" in failed.stdout
    rerun_line = failed.stdout.split("Re-run only these tables with:")[1].strip().splitlines()[0]
    words = shlex.split(rerun_line)  # this interpreter, so the line works when pasted here
    assert (ROOT / words[0]).resolve() == Path(sys.executable).resolve()
    assert words[1:5] == ["-m", "statemachine.local", "run", "--source-dsn"]
    assert rerun_line.endswith("--tables payment,purchase_order,sales_order")  # dim_date reads all three
