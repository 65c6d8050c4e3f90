"""Reconciliation: the whole source compared with what the pipeline has taken, and the differences fed through
the normal stages. It finds what no watermark can: changes that did not move last_updated, rows committed with
an old last_updated, rows deleted upstream (issue 10)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from typing import Any

import pytest

from lambdas.common import digest
from lambdas.extract.handler import drift_metrics
from statemachine.local import runner
from statemachine.local.deployment import INGESTION_BUCKET, PROCESSED_BUCKET
from tests.conftest import Databases
from tests.test_incremental_safety import ROOT


@pytest.fixture
def small(databases: Databases) -> Databases:
    db = databases.seed(scale=0.05)
    assert db.run().succeeded
    return db


def reconciled(outcome: runner.RunOutcome) -> dict[str, dict[str, Any]]:
    return {i.table: i.result["reconciled"] for i in outcome.invocations if i.stage == "extract" and i.ok}


def test_a_change_that_did_not_move_last_updated_reaches_the_warehouse_through_reconciliation(
    small: Databases,
) -> None:
    moved = small.source_sql("UPDATE design SET file_location = '/archive' WHERE design_id <= 20 RETURNING 1")
    assert len(moved) == 20
    assert small.run().succeeded
    assert "dim_design" in small.differences()  # the incremental extract cannot see it

    outcome = small.run(reconcile=True)

    assert outcome.succeeded
    found = reconciled(outcome)
    assert set(found) == {i.table for i in outcome.invocations if i.stage == "extract"}
    assert (found["design"]["rows_changed"], found["design"]["rows_changed_quietly"]) == (20, 20)
    assert found["design"]["ranges_differing"] == 1
    assert all(not r["ranges_differing"] for table, r in found.items() if table != "design")
    assert small.differences() == {}
    again = reconciled(small.run(reconcile=True))
    assert all(not r["ranges_differing"] for r in again.values())


def commit_a_sales_order_dated_2020(small: Databases) -> None:
    """A new source row whose last_updated is older than every watermark: only reconciliation can find it."""
    small.source_sql(
        "INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, units_sold, "
        "unit_price, currency_id, agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id) "
        "SELECT :old, :old, design_id, staff_id, counterparty_id, 9, 2.5, currency_id, agreed_delivery_date, "
        "agreed_payment_date, agreed_delivery_location_id FROM sales_order ORDER BY sales_order_id LIMIT 1",
        old=datetime(2020, 1, 2, 3, 4, 5),
    )


def test_a_row_committed_with_an_old_last_updated_arrives_through_reconciliation(small: Databases) -> None:
    commit_a_sales_order_dated_2020(small)
    assert small.run().succeeded
    assert "fact_sales_order" in small.differences()

    found = reconciled(small.run(reconcile=True))

    assert found["sales_order"]["rows_missing"] == 1
    assert small.differences() == {}


def test_a_row_deleted_upstream_is_reported_once_and_stays_in_the_warehouse(small: Databases) -> None:
    [[design]] = small.source_sql(
        "DELETE FROM design WHERE design_id = (SELECT min(design_id) FROM design WHERE design_id NOT IN "
        "(SELECT design_id FROM sales_order)) RETURNING design_id"
    )

    first, second = reconciled(small.run(reconcile=True)), reconciled(small.run(reconcile=True))

    assert (first["design"]["rows_deleted"], first["design"]["deleted_keys_sample"]) == (1, [design])
    assert second["design"]["rows_deleted"] == 0 and not second["design"]["ranges_differing"]
    assert small.warehouse_sql("SELECT count(*) FROM dim_design WHERE design_id = :d", d=design) == [[1]]


def test_the_local_command_exits_3_when_reconciliation_found_drift_and_0_when_not(small: Databases) -> None:
    def dsn(c: dict) -> str:
        return f"postgresql://{c['username']}@/{c['dbname']}?host={c['host']}&port={c['port']}"

    command = [sys.executable, "-m", "statemachine.local", "reconcile", "--source-dsn", dsn(small.source),
               "--warehouse-dsn", dsn(small.warehouse), "--lake-dir", str(small.lake), "--tables", "staff"]  # fmt: skip
    small.source_sql("UPDATE staff SET email_address = 'moved@example.com' WHERE staff_id = 1")

    drifted = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    clean = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)

    assert drifted.returncode == 3, drifted.stdout[-2000:]
    assert "! staff            1 of 1 key ranges differ: 1 changed (1 without a new last_updated)" in drifted.stdout
    assert clean.returncode == 0, clean.stdout[-2000:]
    assert "✔ staff            1 key ranges agree" in clean.stdout
    assert small.warehouse_sql("SELECT email_address FROM dim_staff WHERE staff_id = 1") == [["moved@example.com"]]


def test_drift_is_published_in_total_for_the_alarm_only_when_there_is_some(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "TotesysEtl")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "totesys-extract")

    (total,) = (m.serialize_metric_set() for m in drift_metrics(
        "design", {"rows_changed": 46, "rows_missing": 2, "rows_deleted": 1}))  # fmt: skip

    assert total["DriftRows"] == [49.0]
    assert total["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    assert (total["table"], total["drift_rows"]) == ("design", 49), "properties (Logs Insights), not a series per table"
    assert drift_metrics("design", {"rows_changed": 0, "rows_missing": 0, "rows_deleted": 0}) == []


def test_with_content_digested_in_turns_the_census_finds_lost_and_deleted_rows_at_once_and_a_quiet_edit_waits_its_turn(
    small: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(digest, "WHOLE_TABLE_ROWS", 1)  # every table digested in turns, as a large one is
    first = small.run(reconcile=True)
    assert first.succeeded and all(not r["ranges_differing"] for r in reconciled(first).values())
    assert {r["content_share"]["turn"] for r in reconciled(first).values()} == {0}
    small.source_sql("UPDATE design SET file_location = '/archive' WHERE design_id <= 20")  # range 0, quietly
    commit_a_sales_order_dated_2020(small)
    small.warehouse_sql("UPDATE dim_staff SET first_name = 'Edited' WHERE staff_id = 1")  # in place: content only
    small.warehouse_sql("DELETE FROM fact_payment WHERE payment_id = 1")  # a row gone: the census

    second = small.run(reconcile=True)  # turn 1 of 7: range 0's content is not compared

    found, checked = reconciled(second), verified(second)
    assert {r["content_share"]["turn"] for r in found.values()} == {1}
    assert (found["sales_order"]["rows_missing"], found["design"]["ranges_differing"]) == (1, 0)
    assert (checked["fact_payment"]["rows_missing"], checked["dim_staff"]["ranges_differing"]) == (1, 0)
    assert set(small.differences()) == {"dim_design", "dim_staff"}

    for state in (small.lake / INGESTION_BUCKET / "_state" / "reconcile" / "design.json",
                  small.lake / PROCESSED_BUCKET / "_state" / "verify" / "dim_staff.json"):  # fmt: skip
        saved = json.loads(state.read_text())
        assert saved["reconciliations" if "reconcile" in str(state) else "verifications"] == 2
        saved["reconciliations" if "reconcile" in str(state) else "verifications"] = 7  # a week of nights later
        state.write_text(json.dumps(saved))
    third = small.run(reconcile=True)  # turn 0 again for these two

    assert reconciled(third)["design"]["rows_changed_quietly"] == 20
    assert verified(third)["dim_staff"]["rows_changed"] == 1
    assert small.differences() == {}


def verified(outcome: runner.RunOutcome) -> dict[str, dict[str, Any]]:
    return {i.table: i.result["verified"] for i in outcome.invocations if i.stage == "load" and i.ok}
