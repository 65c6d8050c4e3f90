"""Verification: a reconciliation also compares each warehouse table with the processed lake and restores the rows
deleted or edited in the warehouse itself (issue 20, item 3); lambdas/load/verify.py."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from lambdas.load.handler import drift_metrics
from lambdas.load.verify import VerifyResult
from statemachine.local import runner
from statemachine.local.deployment import PROCESSED_BUCKET
from tests.conftest import Databases
from tests.test_incremental_safety import ROOT


@pytest.fixture
def small(databases: Databases) -> Databases:
    db = databases.seed(scale=0.05)
    assert db.run().succeeded
    return db


def verified(outcome: runner.RunOutcome) -> dict[str, dict[str, Any]]:
    return {i.table: i.result["verified"] for i in outcome.invocations if i.stage == "load" and i.ok}


def tamper(db: Databases) -> dict[str, Any]:
    """Rows deleted and edited in the warehouse, as a mistaken statement or a manual fix would."""
    used = " UNION ALL ".join(
        f"SELECT {column} FROM {fact}"
        for fact, columns in {
            "fact_sales_order": ("created_date", "last_updated_date", "agreed_payment_date", "agreed_delivery_date"),
            "fact_purchase_order": ("created_date", "last_updated_date", "agreed_payment_date", "agreed_delivery_date"),
            "fact_payment": ("created_date", "last_updated_date", "payment_date"),
        }.items()
        for column in columns
    )
    [[day]] = db.warehouse_sql(
        f"DELETE FROM dim_date WHERE date_id = (SELECT min(date_id) FROM dim_date WHERE date_id NOT IN ({used})) "
        "RETURNING date_id"
    )
    db.warehouse_sql("UPDATE dim_staff SET first_name = 'Edited' WHERE staff_id IN (1, 2)")
    deleted = db.warehouse_sql(
        "DELETE FROM fact_sales_order WHERE sales_record_id IN "
        "(SELECT sales_record_id FROM fact_sales_order ORDER BY sales_record_id LIMIT 3) RETURNING sales_order_id"
    )
    db.warehouse_sql("UPDATE fact_payment SET payment_amount = payment_amount + 1 WHERE payment_id = 1")
    db.warehouse_sql("UPDATE fact_purchase_order SET item_code = 'MANUAL' WHERE purchase_order_id = 2")
    return {"day": day, "sales_orders": sorted(r[0] for r in deleted)}


def test_rows_deleted_and_edited_in_the_warehouse_are_restored_exactly_by_a_reconciliation(
    small: Databases,
) -> None:
    tamper(small)
    assert set(small.differences()) >= {"dim_date", "dim_staff", "fact_sales_order", "fact_payment"}
    assert small.run().succeeded
    assert small.differences() != {}  # an ordinary run does not look: nothing changed upstream

    outcome = small.run(reconcile=True)
    found = verified(outcome)

    assert outcome.succeeded
    assert small.differences() == {}
    assert set(found) == {i.table for i in outcome.invocations if i.stage == "load"}
    restored = {t: (r["rows_missing"], r["rows_changed"]) for t, r in found.items() if r["rows_restored"]}
    assert restored == {
        "dim_date": (1, 0),
        "dim_staff": (0, 2),
        "fact_sales_order": (3, 0),
        "fact_payment": (0, 1),
        "fact_purchase_order": (0, 1),
    }
    assert all(r["rows_not_in_lake"] == 0 for r in found.values())
    again = verified(small.run(reconcile=True))
    assert all(r["rows_restored"] == 0 and r["ranges_differing"] == 0 for r in again.values()), again


def test_a_verification_hashes_only_the_batches_since_its_checkpoint_and_a_lost_ledger_is_rebuilt(
    small: Databases,
) -> None:
    processed = small.lake / PROCESSED_BUCKET
    assert small.run(reconcile=True).succeeded
    first = json.loads((processed / "_state" / "verify" / "fact_sales_order.json").read_text())
    small.source_sql("UPDATE sales_order SET units_sold = 7, last_updated = now() WHERE sales_order_id = 3")
    assert small.run().succeeded

    second = small.run(reconcile=True)
    checkpoint = json.loads((processed / "_state" / "verify" / "fact_sales_order.json").read_text())
    (processed / checkpoint["ledger"]).unlink()  # lost: the next verification hashes the epoch from its base
    small.warehouse_sql("DELETE FROM fact_sales_order WHERE sales_order_id = 3")
    third = small.run(reconcile=True)

    assert verified(second)["fact_sales_order"]["ranges_differing"] == 0
    assert checkpoint["cursor"]["seq"] > first["cursor"]["seq"]  # the new batch, added to the ledger
    assert verified(third)["fact_sales_order"]["rows_missing"] == 2  # both versions of order 3
    assert small.differences() == {}


def test_a_warehouse_row_the_lake_never_had_is_reported_and_kept(small: Databases) -> None:
    small.warehouse_sql(
        "INSERT INTO fact_payment (payment_id, created_date, created_time, last_updated_date, last_updated_time, "
        "transaction_id, counterparty_id, payment_amount, currency_id, payment_type_id, paid, payment_date) "
        "SELECT payment_id, created_date, created_time, last_updated_date, last_updated_time - interval '1 second', "
        "transaction_id, counterparty_id, payment_amount, currency_id, payment_type_id, paid, payment_date "
        "FROM fact_payment WHERE payment_id = 1"
    )

    found = verified(small.run(reconcile=True))["fact_payment"]

    assert (found["rows_not_in_lake"], found["rows_restored"]) == (1, 0)
    assert found["not_in_lake_sample"][0].startswith("payment_id=1, last_updated_date=")
    assert small.warehouse_sql("SELECT count(*) FROM fact_payment WHERE payment_id = 1") == [[2]]


def test_the_local_command_exits_3_when_it_restored_warehouse_rows_and_0_when_not(small: Databases) -> None:
    def dsn(c: dict) -> str:
        return f"postgresql://{c['username']}@/{c['dbname']}?host={c['host']}&port={c['port']}"

    command = [sys.executable, "-m", "statemachine.local", "reconcile", "--source-dsn", dsn(small.source),
               "--warehouse-dsn", dsn(small.warehouse), "--lake-dir", str(small.lake), "--tables", "staff"]  # fmt: skip
    tamper(small)

    restored = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    clean = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)

    assert restored.returncode == 3, restored.stdout[-2000:]
    assert "Warehouse against the lake: 6 of 11 tables agree:" in restored.stdout
    assert "! fact_sales_order     3 missing and 0 changed rows restored from the lake" in restored.stdout
    assert clean.returncode == 0, clean.stdout[-2000:]
    assert "Warehouse against the lake: 11 of 11 tables agree." in clean.stdout
    assert small.differences() == {}


def test_restored_rows_are_published_in_total_for_the_alarm_only_when_there_are_some(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "TotesysEtl")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "totesys-load")

    found = VerifyResult("dim_staff", 3, 1, rows_missing=1, rows_changed=2, rows_not_in_lake=5)
    (total,) = (m.serialize_metric_set() for m in drift_metrics(found))

    assert total["WarehouseDriftRows"] == [3.0]
    assert total["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    assert (total["table"], total["rows_restored"]) == ("dim_staff", 3), "properties (Logs Insights), not series"
    assert drift_metrics(None) == [] and drift_metrics(VerifyResult("dim_staff")) == []
