"""Lambda entry point of the run report: the last task of every execution."""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.report.summary import alert, cause, failures, held_facts, rerun_input

logger = Logger()


@logger.inject_lambda_context(correlation_id_path="execution_id", clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    found = failures(event)
    if not found:  # held rows alone do not fail a run: they are on the load results, the metrics and alarms
        return {"failed": False, "failures": [], "rerun_input": None, "cause": ""}
    rerun = rerun_input(found, event.get("options") or {})
    held = held_facts(event)
    subject, body = alert(str(event["execution_id"]), found, rerun, held)
    topic = os.environ.get("ALERT_TOPIC_ARN")
    if topic:
        boto3.client("sns").publish(TopicArn=topic, Subject=subject, Message=body)
    logger.error(subject, extra={"failures": [f.__dict__ for f in found], "rerun_input": rerun})
    return {"failed": True, "failures": [f.__dict__ for f in found], "rerun_input": rerun,
            "cause": cause(found, rerun, held)}  # fmt: skip
