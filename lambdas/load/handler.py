"""Lambda entry point of the load stage: one warehouse table per invocation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.common.db import connect_with_secret, database_errors, statement_budget
from lambdas.common.events import LoadTable, parsed
from lambdas.common.lake import Bucket
from lambdas.common.settings import LoadSettings
from lambdas.common.tables import FACTS
from lambdas.common.tracing import annotate, traced, tracer
from lambdas.load.held import STUCK_ROWS_METRIC
from lambdas.load.loader import STAGE, LoadResult, load_table
from lambdas.load.verify import DRIFT_METRIC, VerifyResult, verify_table

logger = Logger()


def metrics_for(result: LoadResult, *, now: datetime) -> list[EphemeralMetrics]:
    """`StuckHeldRows` (one series for every fact: the alarm's), published only when a fact has rows held for too
    long; the table is a property of the record.

    A metric series is billed by the hours in which it is published ($0.30 a month each, docs/cost.md), so only
    what an alarm reads is a series, and only when there is something to tell: the alarm treats a missing value as
    nothing stuck. What the dashboard graphs (rows written and held, the source lag) is in the "loaded" log line,
    which Logs Insights queries (source_lag_seconds). Namespace and service come from the environment
    (POWERTOOLS_METRICS_NAMESPACE, POWERTOOLS_SERVICE_NAME). Ephemeral, per invocation: nothing is shared between
    invocations that run at the same time in one process (as in the local runner).
    """
    if result.table not in FACTS or not result.kept.stuck:
        return []
    stuck = EphemeralMetrics()
    stuck.add_metric(STUCK_ROWS_METRIC, MetricUnit.Count, result.kept.stuck)
    stuck.add_metadata("table", result.table)
    return [stuck]


def source_lag(result: LoadResult, *, now: datetime) -> dict[str, float]:
    """`source_lag_seconds` of a fact's "loaded" log line: how old the newest change it loaded is (the source's
    timestamps taken as UTC); nothing for a dimension or a load without changes."""
    if result.table not in FACTS or result.newest_change is None:
        return {}
    return {"source_lag_seconds": max((now.replace(tzinfo=None) - result.newest_change).total_seconds(), 0.0)}


@logger.inject_lambda_context(correlation_id_path="execution_id", clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    request: LoadTable = parsed(LoadTable, event, subject="the load event")
    settings = LoadSettings.from_environ()
    logger.thread_safe_append_keys(table=request.table, stage=STAGE)
    annotate(table=request.table, stage=STAGE)
    if request.blocked_by():
        logger.warning("skipped: an input failed in this run", extra={"blocked_by": request.blocked_by()})
        return request.skipped(STAGE)
    with database_errors("warehouse"):
        with traced("postgres: connect to the warehouse"):
            con = connect_with_secret(settings.warehouse_secret_id, application_name="totesys-etl-load",
                                      statement_timeout=statement_budget(context))  # fmt: skip
        try:
            with traced("s3 to postgres: merge processed batches into the warehouse"):
                result = load_table(con, Bucket(settings.processed_bucket), request.table, repair=request.repair)
            verified = None
            if request.reconcile:  # after the load: the warehouse against everything the lake says it took
                with traced("postgres and s3: verify the warehouse table against the processed lake"):
                    verified = verify_table(con, Bucket(settings.processed_bucket), request.table)
        finally:
            con.close()
    now = datetime.now(UTC)
    for metric_set in metrics_for(result, now=now) + drift_metrics(verified):
        metric_set.flush_metrics()
    logger.info("loaded", extra={**result.as_dict(), **source_lag(result, now=now)})
    if verified is not None and verified.restored:
        logger.warning("the warehouse differed from the lake; restored", extra={"verified": verified.as_dict()})
    if result.kept.stuck:
        logger.error("fact rows held for too long: their dimension rows never arrived",
                     extra={"rows_stuck": result.kept.stuck, "stuck_sample": result.kept.stuck_sample})  # fmt: skip
    return {**result.as_dict(), **({"verified": verified.as_dict()} if verified is not None else {})}


def drift_metrics(verified: VerifyResult | None) -> list[EphemeralMetrics]:
    """`WarehouseDriftRows`: warehouse rows restored from the lake, published only when there are some, as one
    series for the whole load (the alarm's), the table a property of the record (see extract's drift_metrics)."""
    if verified is None or not verified.restored:
        return []
    total = EphemeralMetrics()
    total.add_metric(DRIFT_METRIC, MetricUnit.Count, verified.restored)
    total.add_metadata("table", verified.table)
    total.add_metadata("rows_restored", verified.restored)  # a scalar for Logs Insights (the metric's is a list)
    return [total]
