"""An execution's whole history from Step Functions, page by page.

Its own module because two sides read it: the AWS re-run (`statemachine.rerun`) and the local runner, which keeps
each local execution's history in the lake; neither should import the other for it.
"""

from __future__ import annotations

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
