"""The event every stage Lambda receives from its Map iteration, parsed and checked once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from lambdas.common.errors import PipelineError


@dataclass(frozen=True)
class TableEvent:
    table: str
    full_refresh: bool
    execution_id: str

    @staticmethod
    def parse(event: Any) -> TableEvent:
        if not isinstance(event, dict) or not isinstance(event.get("table"), str):
            raise PipelineError(f"expected an event like {{'table': 'sales_order'}}, got {event!r:.200}")
        full_refresh = event.get("full_refresh", False)
        if not isinstance(full_refresh, bool):
            raise PipelineError(f"'full_refresh' must be true or false, got {full_refresh!r}")
        return TableEvent(event["table"], full_refresh, str(event.get("execution_id", "")))


def env(name: str) -> str:
    """A required setting from the function's environment, with an error that names it."""
    value = os.environ.get(name)
    if not value:
        raise PipelineError(f"environment variable {name} is not set")
    return value
