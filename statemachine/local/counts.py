"""What an execution cost, counted from its history: the figures docs/cost.md prices (benchmarks/cost.py).

Step Functions (Standard) bills each state transition; Lambda bills each invocation. Both are read from the
events Step Functions itself records, so a count here is what the bill counts, not what the code intends.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunCounts:
    """One execution: the states it entered and the Lambda invocations (attempts, retries included) it made."""

    states: int
    invocations: int
    invocations_by_function: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {"states": self.states, "invocations": self.invocations, "by_function": self.invocations_by_function}


def _function(event: dict[str, Any]) -> str:
    """The function a lambda:invoke task was scheduled for: its name, out of the task's parameters."""
    details = event.get("taskScheduledEventDetails") or {}
    try:
        name = json.loads(details.get("parameters") or "{}").get("FunctionName", "")
    except ValueError:
        name = ""
    return str(name).rsplit(":", 1)[-1] or "unknown"


def run_counts(history: list[dict[str, Any]]) -> RunCounts:
    """The states entered (every one is a billed transition) and the Lambda tasks scheduled in ``history``."""
    states = sum(1 for event in history if str(event.get("type", "")).endswith("StateEntered"))
    invoked = Counter(
        _function(event)
        for event in history
        if event.get("type") == "TaskScheduled"
        and (event.get("taskScheduledEventDetails") or {}).get("resourceType") == "lambda"
    )
    return RunCounts(states, sum(invoked.values()), dict(sorted(invoked.items())))
