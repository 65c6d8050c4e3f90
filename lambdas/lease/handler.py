"""Lambda entry point of the run lease: the first and the last task of every execution.

Taking the lease first checks the run's options (lambdas/report/options.py), in the same invocation, so that a
run costs one invocation before it knows what to do: a malformed input is refused before any lease is taken.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError

from lambdas.common.events import LEASE, AcquireLease, ReleaseLease, parsed
from lambdas.common.settings import LeaseSettings
from lambdas.common.tracing import traced, tracer
from lambdas.lease.lease import acquire, release
from lambdas.report.options import run_options

logger = Logger()


def _is_running(execution_arn: str) -> bool:
    """Only an execution that does not exist (a local run long gone) counts as not running without asking its
    status; any other error (e.g. a missing permission) is raised rather than taken as "dead"."""
    try:
        status = boto3.client("stepfunctions").describe_execution(executionArn=execution_arn)["status"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("ExecutionDoesNotExist", "InvalidArn"):
            return False
        raise
    return status in ("RUNNING", "PENDING_REDRIVE")


@logger.inject_lambda_context(correlation_id_path="execution_id", clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    request: AcquireLease | ReleaseLease = parsed(LEASE, event, subject="the lease event")
    settings = LeaseSettings.from_environ()
    s3, bucket = boto3.client("s3"), settings.ingestion_bucket
    if isinstance(request, ReleaseLease):
        with traced("s3: release the run lease"):
            released = release(s3, bucket, request.execution_id)
        logger.info("lease released" if released else "lease was not held by this run")
        return {"released": released}
    options = run_options(request.defaults, request.input)  # InvalidRunInput: nothing is taken
    with traced("s3: take the run lease"):
        result = acquire(s3, bucket, request.execution_id, now=datetime.now(UTC), ttl=settings.lease_ttl,
                         is_running=_is_running)  # fmt: skip
    (logger.info if result.acquired else logger.warning)(result.reason, extra=result.as_dict())
    return {"options": options, "lease": result.as_dict()}
