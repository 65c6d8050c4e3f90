"""Lambda entry point of the extract stage: one source table per invocation."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.common.db import connect, database_errors, read_secret, statement_budget
from lambdas.common.events import TableEvent, env
from lambdas.common.lake import BatchLog, Bucket
from lambdas.extract.extractor import STAGE, extract_table

logger = Logger()


@logger.inject_lambda_context(correlation_id_path="execution_id", clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    request = TableEvent.parse(event)
    # thread-local: in the local runner several invocations share one process
    logger.thread_safe_append_keys(table=request.table, stage=STAGE)
    log = BatchLog(Bucket(env("INGESTION_BUCKET")), STAGE, request.table)
    lookback = timedelta(seconds=float(os.environ.get("EXTRACT_LOOKBACK_SECONDS", "900")))
    with database_errors("totesys"):
        con = connect(read_secret(env("TOTESYS_SECRET_ID")), application_name="totesys-etl-extract",
                      statement_timeout=statement_budget(context))  # fmt: skip
        try:
            result = extract_table(
                con, log, full_refresh=request.full_refresh, repair=request.repair, lookback=lookback
            )
        finally:
            con.close()
    logger.info("extracted", extra=result.as_dict())
    return result.as_dict()
