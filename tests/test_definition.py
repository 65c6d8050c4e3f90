"""The workflow, built by statemachine/definition.py: consistent with the table contracts, documented, retried with
backoff, and the files CDK deploys are exactly what the builder builds (issue 22)."""

from __future__ import annotations

import pytest

from lambdas.common.tables import DIMENSIONS, FACTS, SOURCE_TABLES, WAREHOUSE_TABLES
from statemachine import definition, diagram
from statemachine.local.deployment import CHILD_PLACEHOLDERS
from statemachine.local.runner import FUNCTIONS


def both() -> list[dict]:
    """The parent's and the child's states, as their files hold them."""
    return [definition.load()["States"], definition.load(name=definition.STAGES)["States"]]


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


def test_the_deployed_files_are_what_the_builder_builds() -> None:
    for name, path in definition.PATHS.items():
        assert path.read_text(encoding="utf-8") == definition.text(name), (
            "run: python -m statemachine.definition --write"
        )
    assert definition.main([]) == 0


def test_the_retry_policy_is_written_once_and_every_lambda_task_has_it() -> None:
    lambda_tasks = [(n, t) for states in both() for n, t in tasks(states) if t["Resource"].endswith(":lambda:invoke")]
    assert len(lambda_tasks) == 11  # the eleven copies of issue 22
    for name, task in lambda_tasks:
        patient = definition.retry_policy(throttle_patient=True)
        assert task["Retry"] in (definition.retry_policy(), patient), name
    assert [n for n, t in lambda_tasks if t["Retry"] == patient] == ["Extract key range"]


def test_the_parent_names_no_function_of_a_tables_work_and_the_child_no_run_step() -> None:
    """A run with work is the same few parent states whatever the number of tables: the Maps are the child's."""
    parent, child = both()
    assert not any(state["Type"] == "Map" for state in parent.values())
    assert {task["Parameters"]["FunctionName"] for _, task in tasks(parent) if "FunctionName" in task["Parameters"]} \
        == {"${LeaseFunctionArn}", "${ExtractFunctionArn}", "${ReportFunctionArn}"}  # fmt: skip
    assert list(child) == ["Extract source tables", "Transform warehouse tables", "Load dimensions", "Load facts"]
    starts = {name: task for name, task in tasks(parent) if task["Resource"].startswith("arn:aws:states:::states:")}
    assert {t["Resource"] for t in starts.values()} == {"arn:aws:states:::states:startExecution.sync:2"}
    assert {t["Parameters"]["StateMachineArn"] for t in starts.values()} == {"${StagesExpressArn}",
                                                                              "${StagesStandardArn}"}  # fmt: skip
    # an Express child that did not finish is done again in the Standard one, after its invocations could end
    express = starts["Run the tables' work (Express)"]
    wait = parent[express["Catch"][0]["Next"]]
    assert wait["Type"] == "Wait" and wait["Seconds"] >= 900 and wait["Next"] == "Run the tables' work (Standard)"


def test_every_task_retries_transient_errors_with_exponential_backoff_and_jitter() -> None:
    for name, task in [t for states in both() for t in tasks(states)]:
        transient = [r for r in task["Retry"] if "TransientError" in r["ErrorEquals"]]
        assert transient or task["Resource"].startswith("arn:aws:states:::states:"), name
        assert all(r["BackoffRate"] > 1 and r["JitterStrategy"] == "FULL" and r["MaxAttempts"] >= 2
                   for r in task["Retry"]), name  # fmt: skip


def test_every_table_iteration_catches_its_failure_so_the_other_tables_go_on() -> None:
    for name, state in definition.load(name=definition.STAGES)["States"].items():
        if state["Type"] == "Map":
            inner = state["ItemProcessor"]["States"]
            task = next(s for s in inner.values() if s["Type"] == "Task")
            assert task["Catch"][0]["ErrorEquals"] == ["States.ALL"], name
            assert inner[task["Catch"][0]["Next"]]["Parameters"]["status"] == "failed", name


def test_every_state_of_a_table_iteration_that_can_fail_ends_in_its_failed_result() -> None:
    """Also the partitioned extract's inner Map and commit: an error anywhere is that table's failure alone."""
    for name, state in definition.load(name=definition.STAGES)["States"].items():
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
    for name, task in [t for states in both() for t in tasks(states)]:
        assert task["Resource"] in ("arn:aws:states:::lambda:invoke",
                                    "arn:aws:states:::states:startExecution.sync:2"), name  # fmt: skip


def test_every_placeholder_is_a_function_or_a_child_the_local_runner_deploys() -> None:
    assert definition.placeholders() <= set(FUNCTIONS) | set(CHILD_PLACEHOLDERS.values())
    assert definition.placeholders(definition.STAGES) == {"ExtractFunctionArn", "TransformFunctionArn",
                                                          "LoadFunctionArn"}  # fmt: skip
    with pytest.raises(KeyError, match="do not match placeholders"):
        definition.render({"ExtractFunctionArn": "arn"})


def test_the_documented_diagram_matches_the_definition() -> None:
    assert diagram.DOC_PATH.read_text() == diagram.markdown(), "run: python -m statemachine.diagram --write"
