"""Lambda entry point of the run report: the last task of every execution, which also gives the run lease back.

Releasing here, rather than in a task of its own, keeps a run with nothing to do at three invocations (the lease,
the plan, the report). A release that fails is logged, not raised: the next run takes over a lease whose holder
is no longer running (lambdas/lease/lease.py), and a report that fails is followed by the lease's own release.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.common.errors import PipelineError, truncated
from lambdas.common.events import REPORT, RefuseInput, RunReport, parsed
from lambdas.common.settings import ReportSettings
from lambdas.common.tracing import traced, tracer
from lambdas.lease.lease import release
from lambdas.report.freshness import behind_seconds, freshness_metrics
from lambdas.report.summary import alert, cause, failures, held_facts, refusal, rerun_input

logger = Logger()


def _publish(settings: ReportSettings, subject: str, body: str) -> None:
    topic = settings.alert_topic_arn
    if topic:
        with traced("sns: publish the alert"):
            boto3.client("sns").publish(TopicArn=topic, Subject=subject, Message=body)


@logger.inject_lambda_context(correlation_id_path="execution_id", clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: Any, context: LambdaContext) -> dict[str, object]:
    """The run's last word (the report), or the alert for an input the lease's options check refused."""
    # A run that is not an object is reported as malformed (summary.failures), not refused: the report always reports.
    request: RunReport | RefuseInput = parsed(REPORT, event if isinstance(event, dict) else {"run": event},
                                              subject="the report event")  # fmt: skip
    settings = ReportSettings.from_environ()
    execution_id = request.execution_id
    if isinstance(request, RefuseInput):
        subject, body = refusal(execution_id, request.error)
        _publish(settings, subject, body)
        logger.error(subject, extra={"error": truncated(str(request.error), 2000)})
        return {"failed": True, "cause": body}
    event = request.run()
    for metric_set in freshness_metrics(behind_seconds(event, now=datetime.now(UTC))):
        metric_set.flush_metrics()  # every run, also one that loaded nothing: the freshness alarm's evidence
    found = failures(event)
    if not found:  # held rows alone do not fail a run: they are on the load results, the metrics and alarms
        _release(settings, execution_id)
        return {"failed": False, "failures": [], "rerun_input": None, "cause": ""}
    rerun = rerun_input(found, event.get("options") or {})
    held = held_facts(event)
    subject, body = alert(execution_id, found, rerun, held)
    _publish(settings, subject, body)
    logger.error(subject, extra={"failures": [f.__dict__ for f in found], "rerun_input": rerun})
    _release(settings, execution_id)
    return {"failed": True, "failures": [f.__dict__ for f in found], "rerun_input": rerun,
            "cause": cause(found, rerun, held)}  # fmt: skip


def _release(settings: ReportSettings, execution_id: str) -> None:
    """Give the run lease back (best effort: see the module's docstring)."""
    try:
        if not settings.ingestion_bucket:
            raise PipelineError(f"{ReportSettings.variable('ingestion_bucket')} is not set")
        with traced("s3: release the run lease"):
            released = release(boto3.client("s3"), settings.ingestion_bucket, execution_id)
    except (ClientError, BotoCoreError, PipelineError) as error:
        logger.warning("the run lease was not released; the next run takes it over", extra={"error": str(error)})
        return
    logger.info("lease released" if released else "lease was not held by this run")
