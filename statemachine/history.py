"""An execution's whole history from Step Functions, page by page.

Its own module because two sides read it: the AWS re-run (`statemachine.rerun`) and the local runner, which keeps
each local execution's history in the lake; neither should import the other for it.
"""

from __future__ import annotations

import json
from typing import Any


def history(sfn: Any, execution_arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
    while True:
        page = sfn.get_execution_history(**kwargs)
        events.extend(page["events"])
        if not page.get("nextToken"):
            return events
        kwargs["nextToken"] = page["nextToken"]


CHILD_EXECUTION, CHILD_TYPE = "childExecutionArn", "childStateMachineType"  # keys this module adds to child events


def started_children(events: list[dict[str, Any]]) -> list[str]:
    """The executions a parent started with a Step Functions task (``states:startExecution``), in order."""
    found = []
    for event in events:
        details = event.get("taskSubmittedEventDetails") or {}
        if event.get("type") == "TaskSubmitted" and details.get("resourceType") == "states":
            try:
                arn = json.loads(details.get("output") or "{}").get("ExecutionArn")
            except ValueError:
                continue
            if arn:
                found.append(str(arn))
    return found


def with_children(sfn: Any, execution_arn: str) -> list[dict[str, Any]]:
    """The execution's history followed by each child's, every child event marked with the child's execution ARN
    and its state machine's type (EXPRESS or STANDARD), so that the parent's own events stay apart.

    Only where the children's histories can be read: AWS keeps none of an Express execution (its log group has
    it); the local runner's moto does.
    """
    events = history(sfn, execution_arn)
    for child in started_children(events):
        machine = sfn.describe_execution(executionArn=child)["stateMachineArn"]
        kind = sfn.describe_state_machine(stateMachineArn=machine).get("type", "STANDARD")
        events += [{**event, CHILD_EXECUTION: child, CHILD_TYPE: kind} for event in history(sfn, child)]
    return events
