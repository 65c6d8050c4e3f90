"""The event every stage Lambda receives from its Map iteration, parsed and checked once."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from lambdas.common.errors import PipelineError
from lambdas.common.tables import TRANSFORM_INPUTS

SUCCEEDED, SKIPPED, FAILED = "succeeded", "skipped", "failed"
# Keys of the stage results that the run report's freshness metric compares (lambdas/report/freshness.py).
WATERMARK, NEWEST_LOADED = "watermark", "newest_loaded"
# The run modes an execution input may switch on, at most one at a time (docs/operations.md).
MODES = ("full_refresh", "repair", "reconcile")
# Run options that combine with any mode: the extract reads the asked tables incrementally even when their change
# signal says they are unchanged (lambdas/extract/signal.py): for a change committed seconds before the run.
FLAGS = ("ignore_change_signal",)


def _results(event: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = event.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise PipelineError(f"'{key}' must be a list of stage results, got {value!r:.200}")
    return value


@dataclass(frozen=True)
class TableEvent:
    table: str
    full_refresh: bool = False
    repair: bool = False
    reconcile: bool = False
    execution_id: str = ""
    upstream: list[dict[str, Any]] = field(default_factory=list)  # results of the previous stage in this run
    # Dimension loads of this run, passed to fact loads; informational: a fact never waits for them (it holds
    # the rows whose dimension row is missing, see lambdas/load/held.py).
    dimensions: list[dict[str, Any]] = field(default_factory=list)
    ignore_change_signal: bool = False  # FLAGS

    @staticmethod
    def parse(event: Any) -> TableEvent:
        if not isinstance(event, dict) or not isinstance(event.get("table"), str):
            raise PipelineError(f"expected an event like {{'table': 'sales_order'}}, got {event!r:.200}")
        flags = {name: event.get(name, False) for name in (*MODES, *FLAGS)}
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise PipelineError(f"'{name}' must be true or false, got {value!r:.100}")
        if sum(flags[n] for n in MODES) > 1:
            raise PipelineError(f"choose one of {', '.join(MODES)}, not {' and '.join(n for n in MODES if flags[n])}")
        return TableEvent(
            event["table"],
            flags["full_refresh"],
            flags["repair"],
            flags["reconcile"],
            str(event.get("execution_id", "")),
            _results(event, "upstream"),
            _results(event, "dimensions"),
            flags["ignore_change_signal"],
        )

    def blocked_by(self) -> list[str]:
        """Why this table must not be processed in this run: the work it depends on did not succeed.

        Only the table's lineage counts: a transform waits for the extracts of the source tables it is built
        from, a load for its own transform. A fact does not wait for its dimensions: a row whose dimension row
        is missing is held back by the load (lambdas/load/held.py) and the rest goes in. Skipping keeps the
        cursors where they are, so the next run does the work once its inputs are there.
        """
        needs = set(TRANSFORM_INPUTS.get(self.table, ())) | {self.table}
        return [
            f"{r.get('stage')} of {r.get('table')} {r.get('status')}"
            for r in self.upstream
            if r.get("table") in needs and r.get("status") in (FAILED, SKIPPED)
        ]

    def skipped(self, stage: str) -> dict[str, object]:
        return {"table": self.table, "stage": stage, "status": SKIPPED, "reason": "; ".join(self.blocked_by())}


def env(name: str) -> str:
    """A required setting from the function's environment, with an error that names it."""
    value = os.environ.get(name)
    if not value:
        raise PipelineError(f"environment variable {name} is not set")
    return value
