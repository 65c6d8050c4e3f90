"""What an execution cost, counted from its history: the figures docs/cost.md prices (benchmarks/cost.py).

Step Functions bills a Standard execution per state transition, an Express one per request and per GB-second of
its duration; Lambda bills each invocation. All are read from the events Step Functions itself records (the parent's
history followed by its children's, statemachine/history.py: with_children), so a count here is what the bill
counts, not what the code intends.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from statemachine.history import CHILD_EXECUTION, CHILD_TYPE


@dataclass(frozen=True)
class RunCounts:
    """One execution: the states it entered and the Lambda invocations (attempts, retries included) it made."""

    states: int  # the parent's own states
    invocations: int  # the parent's and its children's
    invocations_by_function: dict[str, int]
    child_states: dict[str, int] = field(default_factory=dict)  # states entered in children, by EXPRESS/STANDARD
    express_requests: int = 0  # Express executions started
    express_seconds: float = 0.0  # their summed duration, start to end

    @property
    def transitions(self) -> int:
        """What Standard bills: the parent's states and those of its Standard children."""
        return self.states + self.child_states.get("STANDARD", 0)

    def as_dict(self) -> dict[str, object]:
        return {"states": self.states, "invocations": self.invocations, "by_function": self.invocations_by_function,
                "child_states": self.child_states, "express_requests": self.express_requests,
                "express_seconds": round(self.express_seconds, 3)}  # fmt: skip


def _function(event: dict[str, Any]) -> str:
    """The function a lambda:invoke task was scheduled for: its name, out of the task's parameters."""
    details = event.get("taskScheduledEventDetails") or {}
    try:
        name = json.loads(details.get("parameters") or "{}").get("FunctionName", "")
    except ValueError:
        name = ""
    return str(name).rsplit(":", 1)[-1] or "unknown"


def _seconds(events: list[dict[str, Any]]) -> float:
    """An execution's duration, from its first event to its last (what Express bills, in 100 ms steps)."""
    stamps = [event["timestamp"] for event in events if hasattr(event.get("timestamp"), "timestamp")]
    return (max(stamps) - min(stamps)).total_seconds() if stamps else 0.0


def run_counts(history: list[dict[str, Any]]) -> RunCounts:
    """The states entered (the parent's apart from its children's) and the Lambda tasks scheduled in ``history``."""
    entered = [event for event in history if str(event.get("type", "")).endswith("StateEntered")]
    states = sum(1 for event in entered if CHILD_EXECUTION not in event)
    child_states = Counter(str(event[CHILD_TYPE]) for event in entered if CHILD_EXECUTION in event)
    express: dict[str, list[dict[str, Any]]] = {}
    for event in history:
        if event.get(CHILD_TYPE) == "EXPRESS":
            express.setdefault(str(event[CHILD_EXECUTION]), []).append(event)
    invoked = Counter(
        _function(event)
        for event in history
        if event.get("type") == "TaskScheduled"
        and (event.get("taskScheduledEventDetails") or {}).get("resourceType") == "lambda"
    )
    return RunCounts(states, sum(invoked.values()), dict(sorted(invoked.items())), dict(sorted(child_states.items())),
                     len(express), sum(_seconds(events) for events in express.values()))  # fmt: skip
