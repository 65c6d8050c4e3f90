"""Lambda entry point of the transform stage: one warehouse table per invocation."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.common.events import TransformTable, parsed
from lambdas.common.lake import Bucket
from lambdas.common.settings import TransformSettings
from lambdas.common.tracing import annotate, traced, tracer
from lambdas.transform.transformer import STAGE, transform_table

logger = Logger()


@logger.inject_lambda_context(correlation_id_path="execution_id", clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    request: TransformTable = parsed(TransformTable, event, subject="the transform event")
    settings = TransformSettings.from_environ()
    logger.thread_safe_append_keys(table=request.table, stage=STAGE)
    annotate(table=request.table, stage=STAGE)
    if request.blocked_by():
        logger.warning("skipped: an input failed in this run", extra={"blocked_by": request.blocked_by()})
        return request.skipped(STAGE)
    with traced("s3: remodel ingestion batches into the processed bucket"):
        result = transform_table(
            Bucket(settings.ingestion_bucket), Bucket(settings.processed_bucket), request.table, repair=request.repair
        )
    for warning in result.warnings:
        logger.warning(warning)
    logger.info("transformed", extra=result.as_dict())
    return result.as_dict()
