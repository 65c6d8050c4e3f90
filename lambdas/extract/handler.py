"""Lambda entry point of the extract stage: one source table per invocation."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pg8000.native
from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.common.db import connect_with_secret, database_errors, statement_budget
from lambdas.common.errors import PipelineError
from lambdas.common.events import TableEvent, env
from lambdas.common.lake import BatchLog, Bucket
from lambdas.common.tracing import annotate, traced, tracer
from lambdas.extract.extractor import STAGE, extract_table, reconcile_table
from lambdas.extract.partitioned import (
    ACTION_COMMIT,
    RangeTask,
    commit_plan,
    extract_range,
    partition_rows,
    plan_extract,
)
from lambdas.extract.run_plan import ACTION_PLAN, plan_run
from lambdas.extract.signal import max_age_from_env

logger = Logger()


@logger.inject_lambda_context(correlation_id_path="execution_id", clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    if isinstance(event, dict) and event.get("action") == ACTION_PLAN:
        return planned(event, context)
    request = TableEvent.parse(event)
    # thread-local: in the local runner several invocations share one process
    logger.thread_safe_append_keys(table=request.table, stage=STAGE)
    annotate(table=request.table, stage=STAGE)
    log = BatchLog(Bucket(env("INGESTION_BUCKET")), STAGE, request.table)
    lookback = timedelta(seconds=float(os.environ.get("EXTRACT_LOOKBACK_SECONDS", "900")))
    signal_max_age = max_age_from_env()
    task = RangeTask.parse(event)
    if task is not None:
        return partitioned(task, log, context)
    with totesys(context) as con, traced("postgres to s3: copy changed rows into the ingestion bucket"):
        if request.reconcile:
            result = reconcile_table(con, log, lookback=lookback)
        else:
            plan = plan_extract(con, log, full_refresh=request.full_refresh, repair=request.repair,
                                lookback=lookback, rows_per_range=partition_rows())  # fmt: skip
            if plan is not None:
                logger.info("partitioned", extra={k: v for k, v in plan.items() if k != "ranges"})
                return plan
            result = extract_table(con, log, full_refresh=request.full_refresh, repair=request.repair,
                                   lookback=lookback, signal_max_age=signal_max_age,
                                   trust_signal=not request.ignore_change_signal)  # fmt: skip
    if result.reconciled is not None:
        for metric_set in drift_metrics(result.table, result.reconciled):
            metric_set.flush_metrics()
        if drifted(result.reconciled):
            logger.warning("the source and the lake differed", extra={"reconciled": result.reconciled})
    logger.info("extracted", extra=result.as_dict())
    return result.as_dict()


def planned(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    """The run's plan (run_plan.py): the tables with work, from the change signals and the heads and cursors of
    every stage. The source is connected to only when a signal must be read, and once."""
    options = event.get("options")
    if not isinstance(options, dict):
        raise PipelineError(f"expected {{'action': 'plan', 'options': {{...}}}}, got {event!r:.200}")
    opened: list[pg8000.native.Connection] = []

    def connect() -> pg8000.native.Connection:
        with database_errors("totesys"), traced("postgres: connect to totesys"):
            opened.append(connect_with_secret(env("TOTESYS_SECRET_ID"), application_name="totesys-etl-plan",
                                              statement_timeout=statement_budget(context)))  # fmt: skip
        return opened[-1]

    try:
        with traced("plan the run: change signals, heads and cursors"):
            plan = plan_run(options, con=connect, ingestion=Bucket(env("INGESTION_BUCKET")),
                            processed=Bucket(env("PROCESSED_BUCKET")), signal_max_age=max_age_from_env())  # fmt: skip
    finally:
        for con in opened:
            con.close()
    logger.info("planned", extra=plan.as_dict())
    return plan.as_dict()


def partitioned(task: RangeTask, log: BatchLog, context: LambdaContext) -> dict[str, object]:
    """A key range of a partitioned whole-table read, or its commit (which needs S3 only, no database)."""
    if task.action == ACTION_COMMIT:
        with traced("s3: commit a partitioned extract"):
            result = commit_plan(log, task.plan).as_dict()
        logger.info("extracted", extra=result)
        return result
    with totesys(context) as con, traced("postgres to s3: copy one key range into the ingestion bucket"):
        found = extract_range(con, log, task.plan, task.part)
    logger.info("extracted a key range", extra=found)
    return found


@contextmanager
def totesys(context: LambdaContext) -> Iterator[pg8000.native.Connection]:
    """A connection to totesys for this invocation, closed after it; its errors classified (database_errors)."""
    with database_errors("totesys"):
        with traced("postgres: connect to totesys"):
            con = connect_with_secret(env("TOTESYS_SECRET_ID"), application_name="totesys-etl-extract",
                                      statement_timeout=statement_budget(context))  # fmt: skip
        try:
            with database_errors("totesys", role=str(con.settings.credentials["username"])):  # names a grant
                yield con
        finally:
            con.close()


def drifted(found: dict[str, object]) -> bool:
    return bool(found.get("ranges_differing"))


def drift_metrics(table: str, found: dict[str, Any]) -> list[EphemeralMetrics]:
    """`DriftRows`: rows the source and the lake disagreed on (changed, missing, deleted), published only when there
    are some, as one series for the whole extract (the alarm's), with the table as a property of the log record.

    A series is billed by the hours in which it is published ($0.30 a month each, docs/cost.md): a clean
    reconciliation publishes nothing, and the alarm treats a missing value as no drift. Which table drifted is in
    the record's `table` and `drift_rows` properties and in the "the source and the lake differed" log line.
    """
    rows = sum(int(found.get(k, 0)) for k in ("rows_changed", "rows_missing", "rows_deleted"))
    if not rows:
        return []
    total = EphemeralMetrics()
    total.add_metric("DriftRows", MetricUnit.Count, rows)
    total.add_metadata("table", table)
    total.add_metadata("drift_rows", rows)  # a scalar for Logs Insights (the metric's own field is a list)
    return [total]
