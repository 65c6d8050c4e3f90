"""Lambda entry point of the load stage: one warehouse table per invocation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.common.db import connect, database_errors, read_secret
from lambdas.common.events import TableEvent, env
from lambdas.common.lake import Bucket
from lambdas.load.loader import STAGE, LoadResult, load_table

logger = Logger()
metrics = Metrics()  # namespace and service from POWERTOOLS_METRICS_NAMESPACE / POWERTOOLS_SERVICE_NAME


def record_metrics(metrics: Metrics, result: LoadResult, *, now: datetime) -> None:
    """What the alarms and the dashboard watch: rows per table, freshness, and lag behind the source.

    `LoadsSucceeded` carries only the service dimension, so one alarm can say "nothing loaded for 30
    minutes"; the source's timestamps are taken as UTC.
    """
    metrics.add_dimension("table", result.table)
    metrics.add_metric("RowsLoaded", MetricUnit.Count, result.written)
    if result.newest_change is not None:
        lag = (now.replace(tzinfo=None) - result.newest_change).total_seconds()
        metrics.add_metric("SourceLagSeconds", MetricUnit.Seconds, max(lag, 0.0))
    with single_metric(name="LoadsSucceeded", unit=MetricUnit.Count, value=1, namespace=metrics.namespace) as one:
        one.add_dimension("service", metrics.service or "totesys-load")


@metrics.log_metrics
@logger.inject_lambda_context(correlation_id_path="execution_id", clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    request = TableEvent.parse(event)
    logger.append_keys(table=request.table, stage=STAGE)
    if request.blocked_by():
        logger.warning("skipped: an input failed in this run", extra={"blocked_by": request.blocked_by()})
        return request.skipped(STAGE)
    with database_errors("warehouse"):
        con = connect(read_secret(env("WAREHOUSE_SECRET_ID")), application_name="totesys-etl-load")
        try:
            result = load_table(con, Bucket(env("PROCESSED_BUCKET")), request.table)
        finally:
            con.close()
    record_metrics(metrics, result, now=datetime.now(UTC))
    logger.info("loaded", extra=result.as_dict())
    return result.as_dict()
