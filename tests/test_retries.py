"""Retries as the state machine performs them: moto executes pipeline.asl.json's Retry clauses for real.

The definition is tested as it is deployed, so its real intervals are slept (FULL jitter: a random part of
IntervalSeconds x BackoffRate^n): about 3 s for the recovering table and 10 s for the one that never recovers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from lambdas.common.errors import TransientError
from lambdas.extract import handler as extract
from statemachine import definition
from statemachine.local import runner
from tests.conftest import Databases
from tests.test_definition import tasks

TABLE = "department"
LAMBDA_TIMEOUT = "Lambda.ClientExecutionTimeoutException"


def lambda_error(name: str) -> Exception:
    """An error Step Functions would see under `name` (the runner reports an exception's class name)."""
    return type(name, (Exception,), {})(f"{name} injected for {TABLE}")


def failing_first(errors: list[Exception]) -> Callable[[dict[str, Any], Any], dict[str, object]]:
    """The extract function, failing its first len(errors) invocations for TABLE with these errors, in order."""
    remaining = list(errors)
    lock = threading.Lock()

    def handler(event: dict[str, Any], context: Any) -> dict[str, object]:
        with lock:
            error = remaining.pop(0) if event.get("table") == TABLE and remaining else None
        if error is not None:
            raise error
        return extract.handler(event, context)

    return handler


def failed_attempts(outcome: runner.RunOutcome) -> list[str]:
    """The errors of the Lambda task attempts that failed, as the execution history records them."""
    return [event["taskFailedEventDetails"]["error"] for event in outcome.history if event["type"] == "TaskFailed"]


def run_with(databases: Databases, handler: Callable[..., Any]) -> runner.RunOutcome:
    return runner.run(source=databases.source, warehouse=databases.warehouse, lake_dir=databases.lake,
                      execution_input={"tables": [TABLE, "staff"]}, handlers={"totesys-extract": handler})  # fmt: skip


@pytest.fixture
def small(databases: Databases) -> Databases:
    return databases.seed(scale=0.02)


def test_every_task_retries_a_lambda_client_execution_timeout() -> None:
    for states in (definition.load()["States"], definition.load(name=definition.STAGES)["States"]):
        for name, task in tasks(states):
            if task["Resource"] == "arn:aws:states:::lambda:invoke":
                assert any(LAMBDA_TIMEOUT in retry["ErrorEquals"] for retry in task["Retry"]), name


def test_a_table_whose_extract_fails_transiently_twice_is_retried_and_succeeds(small: Databases) -> None:
    outcome = run_with(small, failing_first([TransientError("totesys: connection lost"), lambda_error(LAMBDA_TIMEOUT)]))

    assert outcome.succeeded, outcome
    assert failed_attempts(outcome) == ["TransientError", LAMBDA_TIMEOUT]
    extracts = [i for i in outcome.invocations if i.stage == "extract" and i.table == TABLE]
    assert [i.ok for i in extracts] == [False, False, True]
    # dim_staff is built from staff and department: every staff member arrived with the department's name
    assert small.warehouse_sql("SELECT count(*) FROM dim_staff WHERE department_name IS NOT NULL") == \
        small.source_sql("SELECT count(*) FROM staff")  # fmt: skip


def test_a_table_that_keeps_failing_transiently_is_caught_after_its_retries_and_reported(small: Databases) -> None:
    outcome = run_with(small, failing_first([TransientError("totesys: connection lost")] * 10))

    assert outcome.status == "FAILED" and outcome.error == "TablesFailed", outcome
    extract = definition.load(name=definition.STAGES)["States"]["Extract source tables"]
    retry = next(r for r in extract["ItemProcessor"]["States"]["Extract table"]["Retry"]
                 if "TransientError" in r["ErrorEquals"])  # fmt: skip
    assert failed_attempts(outcome) == ["TransientError"] * (1 + retry["MaxAttempts"])
    failed = json.loads(outcome.cause)["failed_tables"]
    assert ("extract", TABLE) in [(f["stage"], f["table"]) for f in failed]
    assert len(outcome.alerts) == 1
    subject, body = outcome.alerts[0]
    assert subject == f"Totesys ETL failed: {TABLE}"
    assert f"{TABLE} (extract, failed): TransientError: totesys: connection lost" in body
