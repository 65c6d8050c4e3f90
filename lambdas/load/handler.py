"""Lambda entry point of the load stage: one warehouse table per invocation."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.common.db import connect, database_errors, read_secret
from lambdas.common.events import TableEvent, env
from lambdas.common.lake import Bucket
from lambdas.load.loader import STAGE, load_table

logger = Logger()


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
    logger.info("loaded", extra=result.as_dict())
    return result.as_dict()
