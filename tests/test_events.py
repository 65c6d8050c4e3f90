"""What each Lambda accepts is one union of models (lambdas/common/events.py): a wrong event is refused before any
work, with one line that names the field and what is wrong, under the error name the workflow's Catch expects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from lambdas.common.errors import PipelineError
from lambdas.common.events import EXTRACT, LEASE, REPORT, ExtractRange, ExtractTable, LoadTable, PlanRun, parsed
from lambdas.extract.handler import handler as extract
from lambdas.lease.handler import handler as lease
from lambdas.load.handler import handler as load
from lambdas.report.handler import handler as report
from lambdas.transform.handler import handler as transform
from statemachine.local.runner import _Context

ARN = "arn:aws:states:eu-west-2:123456789012:execution:totesys:run"
Handler = Callable[[Any, Any], Any]


@pytest.mark.parametrize(
    ("handler", "event", "error", "refusal"),
    [
        (extract, None, "PipelineError", "the extract event must be a JSON object, got None"),
        (extract, {"table": "staff", "full_refresh": "yes"}, "PipelineError",
         "'full_refresh' must be true or false, got 'yes'"),
        (extract, {"table": "staff", "full_refresh": True, "repair": True}, "PipelineError",
         "choose one of full_refresh, repair, reconcile, not full_refresh and repair"),
        (extract, {"table": "_prisma_migrations"}, "UnknownTableError",
         "'table': '_prisma_migrations' is Prisma's migration log, not business data; it is never extracted"),
        (extract, {"table": "dim_staff"}, "UnknownTableError", "'table': 'dim_staff' is not a totesys source table"),
        (extract, {"action": "explode", "table": "staff"}, "PipelineError",
         "'action' must be one of 'extract', 'extract_range', 'commit', 'plan', got 'explode'"),
        (extract, {"action": "extract_range", "table": "staff", "plan": "p", "range": {"range": True}},
         "PipelineError", "'range.range' must be a whole number, got True"),
        (extract, {"action": "extract_range", "table": "staff", "plan": "p", "range": 3}, "PipelineError",
         "'range' must be an object, got 3"),
        (extract, {"action": "commit", "table": "staff"}, "PipelineError", "'plan' is required"),
        (extract, {"action": "plan", "options": {"tables": "staff"}}, "PipelineError",
         "'options.tables' must be a list of table names, got 'staff'"),
        (extract, {"action": "plan"}, "PipelineError", "'options' is required"),
        (transform, {"table": "sales_order"}, "UnknownTableError",
         "'table': 'sales_order' is not a warehouse table"),
        (transform, {"table": "dim_staff", "upstream": "extract"}, "PipelineError",
         "'upstream' must be a list, got 'extract'"),
        (transform, ["dim_staff"], "PipelineError", "the transform event must be a JSON object, got ['dim_staff']"),
        (load, {}, "PipelineError", "'table' is required"),
        (load, {"table": "fact_payment", "dimensions": ["dim_date"]}, "PipelineError",
         "'dimensions.0' must be an object, got 'dim_date'"),
        (load, {"table": "fact_payment", "reconcile": 1}, "PipelineError", "'reconcile' must be true or false, got 1"),
        (report, {"action": "refuse", "execution_id": ARN}, "PipelineError",
         "'action' must be one of 'report', 'refuse_input', got 'refuse'"),
        (lease, {"execution_id": ARN}, "PipelineError", "'action' must be one of 'acquire', 'release', got ''"),
        (lease, {"action": "acquire"}, "PipelineError", "'execution_id' is required"),
        (lease, {"action": "release", "execution_id": ""}, "PipelineError", "'execution_id' must not be empty"),
        (lease, {"action": "acquire", "execution_id": ARN, "defaults": []}, "PipelineError",
         "'defaults' must be an object, got []"),
    ],
)  # fmt: skip
def test_a_wrong_event_is_refused_in_one_line_naming_the_field(
    handler: Handler, event: Any, error: str, refusal: str
) -> None:
    with pytest.raises(PipelineError) as refused:
        handler(event, _Context("totesys-test"))
    assert type(refused.value).__name__ == error  # the error name Step Functions sees
    assert str(refused.value).startswith(refusal)
    assert "\n" not in str(refused.value)


def test_a_huge_value_is_cut_short_in_the_refusal() -> None:
    with pytest.raises(PipelineError) as refused:
        parsed(EXTRACT, {"table": "staff", "repair": "x" * 5_000_000})
    assert len(str(refused.value)) < 1000


def test_more_than_one_problem_is_counted_not_listed() -> None:
    with pytest.raises(PipelineError, match=r"^'table' is required \(and 1 more problem\)$"):
        parsed(LoadTable, {"repair": "no"})


def test_each_action_is_its_own_model() -> None:
    table = parsed(EXTRACT, {"table": "staff", "execution_id": ARN, "ignore_change_signal": True})
    assert isinstance(table, ExtractTable) and table.ignore_change_signal and table.upstream == []
    key_range = parsed(EXTRACT, {"action": "extract_range", "table": "staff", "plan": "ingestion/staff/_plan-1",
                                 "range": {"range": 2, "low": 10, "high": 20}})  # fmt: skip
    assert isinstance(key_range, ExtractRange) and key_range.range.range == 2
    plan = parsed(EXTRACT, {"action": "plan", "options": {"tables": ["staff", "staff"], "reconcile": True}})
    assert isinstance(plan, PlanRun)
    assert plan.options.given() == {"tables": ["staff"], "reconcile": True}  # each table once; no defaults added
    assert parsed(LEASE, {"action": "release", "execution_id": ARN}).action == "release"
    assert parsed(REPORT, {"execution_id": None, "extracted": []}).run() == {
        "extracted": [],
        "execution_id": "unknown:execution",
    }


def test_a_stage_result_list_that_is_null_is_empty() -> None:
    assert parsed(LoadTable, {"table": "dim_staff", "upstream": None}).upstream == []
