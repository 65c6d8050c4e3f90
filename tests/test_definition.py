"""The one workflow definition: consistent with the table contracts, documented, retried with backoff."""

from __future__ import annotations

import pytest

from lambdas.common.tables import DIMENSIONS, FACTS, SOURCE_TABLES, WAREHOUSE_TABLES
from statemachine import definition, diagram
from statemachine.local.runner import FUNCTIONS


def tasks(states: dict) -> list[tuple[str, dict]]:
    found = []
    for name, state in states.items():
        if state["Type"] == "Task":
            found.append((name, state))
        if state["Type"] == "Map":
            found.extend(tasks(state["ItemProcessor"]["States"]))
    return found


def test_default_run_options_cover_every_contract_table() -> None:
    defaults = definition.load()["States"]["Take the run lease"]["Parameters"]["Payload"]["defaults"]
    assert defaults["tables"] == list(SOURCE_TABLES)
    assert "_prisma_migrations" not in defaults["tables"]
    assert defaults["dimensions"] == list(DIMENSIONS) and defaults["facts"] == list(FACTS)
    assert defaults["warehouse_tables"] == list(WAREHOUSE_TABLES)
    assert defaults["full_refresh"] is False


def test_every_task_retries_transient_errors_with_exponential_backoff_and_jitter() -> None:
    for name, task in tasks(definition.load()["States"]):
        transient = [r for r in task["Retry"] if "TransientError" in r["ErrorEquals"]]
        assert transient, name
        assert all(r["BackoffRate"] > 1 and r["JitterStrategy"] == "FULL" and r["MaxAttempts"] >= 2
                   for r in task["Retry"]), name  # fmt: skip


def test_every_table_iteration_catches_its_failure_so_the_other_tables_go_on() -> None:
    for name, state in definition.load()["States"].items():
        if state["Type"] == "Map":
            inner = state["ItemProcessor"]["States"]
            task = next(s for s in inner.values() if s["Type"] == "Task")
            assert task["Catch"][0]["ErrorEquals"] == ["States.ALL"], name
            assert inner[task["Catch"][0]["Next"]]["Parameters"]["status"] == "failed", name


def test_every_state_of_a_table_iteration_that_can_fail_ends_in_its_failed_result() -> None:
    """Also the partitioned extract's inner Map and commit: an error anywhere is that table's failure alone."""
    for name, state in definition.load()["States"].items():
        if state["Type"] != "Map":
            continue
        inner = state["ItemProcessor"]["States"]
        failed = {
            n for n, s in inner.items() if s["Type"] == "Pass" and s.get("Parameters", {}).get("status") == "failed"
        }
        for inner_name, inner_state in inner.items():
            if inner_state["Type"] in ("Task", "Map"):
                assert [(c["ErrorEquals"], c["Next"] in failed) for c in inner_state["Catch"]] == [
                    (["States.ALL"], True)
                ], (
                    name,
                    inner_name,
                )


def test_payloads_carry_keys_and_counts_not_rows() -> None:
    for name, task in tasks(definition.load()["States"]):
        assert task["Resource"] == "arn:aws:states:::lambda:invoke", name


def test_every_placeholder_is_a_function_the_local_runner_deploys() -> None:
    assert definition.placeholders() <= set(FUNCTIONS)
    with pytest.raises(KeyError, match="do not match placeholders"):
        definition.render({"ExtractFunctionArn": "arn"})


def test_the_documented_diagram_matches_the_definition() -> None:
    assert diagram.DOC_PATH.read_text() == diagram.markdown(), "run: python -m statemachine.diagram --write"
