"""Lambda entry point of the run report: the last task of every execution."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.common.errors import truncated
from lambdas.common.tracing import traced, tracer
from lambdas.report.freshness import behind_seconds, freshness_metrics
from lambdas.report.summary import alert, cause, failures, held_facts, refusal, rerun_input

logger = Logger()


def _publish(subject: str, body: str) -> None:
    topic = os.environ.get("ALERT_TOPIC_ARN")
    if topic:
        with traced("sns: publish the alert"):
            boto3.client("sns").publish(TopicArn=topic, Subject=subject, Message=body)


@logger.inject_lambda_context(correlation_id_path="execution_id", clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: Any, context: LambdaContext) -> dict[str, object]:
    """The run's last word (the report), or the alert for an input the lease's options check refused."""
    event = event if isinstance(event, dict) else {"run": event}
    execution_id = str(event.get("execution_id") or "unknown:execution")
    if event.get("action") == "refuse_input":
        subject, body = refusal(execution_id, event.get("error"))
        _publish(subject, body)
        logger.error(subject, extra={"error": truncated(str(event.get("error")), 2000)})
        return {"failed": True, "cause": body}
    for metric_set in freshness_metrics(behind_seconds(event, now=datetime.now(UTC))):
        metric_set.flush_metrics()  # every run, also one that loaded nothing: the freshness alarm's evidence
    found = failures(event)
    if not found:  # held rows alone do not fail a run: they are on the load results, the metrics and alarms
        return {"failed": False, "failures": [], "rerun_input": None, "cause": ""}
    rerun = rerun_input(found, event.get("options") or {})
    held = held_facts(event)
    subject, body = alert(execution_id, found, rerun, held)
    _publish(subject, body)
    logger.error(subject, extra={"failures": [f.__dict__ for f in found], "rerun_input": rerun})
    return {"failed": True, "failures": [f.__dict__ for f in found], "rerun_input": rerun,
            "cause": cause(found, rerun, held)}  # fmt: skip
