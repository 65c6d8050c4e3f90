"""How far the warehouse is behind what the extract has seen of totesys: the freshness alarm's metric.

Liveness ("a load succeeded") cannot tell a warehouse that is up to date from one whose runs all succeed with
zero rows while totesys moves on. Age alone ("the newest row is old") cannot tell a stuck pipeline from a quiet
source at night. So each run compares two points on the source's own clock: the newest change the extract has
seen of a fact's source table (its watermark) and the newest version of that fact in the warehouse. On a quiet
source both stand still and the gap stays at zero; when changes are extracted but never reach the warehouse,
the gap grows with every change. Published on every run, also one with nothing to do: a table the run does not
touch is measured from what its plan read (with_known_state). Dimensions carry no source timestamps in the
warehouse contract and are not measured.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from lambdas.common.events import NEWEST_LOADED, SUCCEEDED, WATERMARK
from lambdas.common.tables import FACTS, TRANSFORM_INPUTS

BEHIND_METRIC = "WarehouseBehindSeconds"


def _when(value: Any) -> datetime | None:
    """A stage result's timestamp, naive on the source's clock; anything unreadable is treated as absent."""
    try:
        return datetime.fromisoformat(value).replace(tzinfo=None) if isinstance(value, str) and value else None
    except ValueError:
        return None


def with_known_state(run: dict[str, Any]) -> dict[str, Any]:
    """The run's stage results, completed with what the run's plan read of the tables it did not touch (their
    watermarks and newest loaded versions did not move in this run), so that every fact is measured in every run,
    also in one with nothing to do (lambdas/extract/run_plan.py)."""
    state = (run.get("plan") or {}).get("state") or {}
    if not isinstance(state, dict):
        return run
    extracted = [r for r in run.get("extracted") or [] if isinstance(r, dict)]
    loaded = [r for r in run.get("loaded_facts") or [] if isinstance(r, dict)]
    seen, taken = {r.get("table") for r in extracted}, {r.get("table") for r in loaded}
    extracted += [{"table": table, "status": SUCCEEDED, WATERMARK: value}
                  for table, value in (state.get(WATERMARK) or {}).items() if table not in seen]  # fmt: skip
    loaded += [{"table": fact, "status": SUCCEEDED, NEWEST_LOADED: value}
               for fact, value in (state.get(NEWEST_LOADED) or {}).items() if fact not in taken]  # fmt: skip
    return {**run, "extracted": extracted, "loaded_facts": loaded}


def behind_seconds(run: dict[str, Any], *, now: datetime) -> dict[str, float]:
    """Per fact: seconds between the newest source change extracted and the newest loaded (what this run's stages
    returned, else what its plan read: with_known_state).

    A fact whose warehouse table is still empty while its source has changes is behind by at least the age of
    the newest change (`now`, on the source's clock taken as UTC, as the load's source_lag_seconds does).
    """
    run = with_known_state(run)
    watermarks = {
        result["table"]: _when(result.get(WATERMARK))
        for result in run.get("extracted") or []
        if isinstance(result, dict) and result.get("status") == SUCCEEDED and isinstance(result.get("table"), str)
    }
    found: dict[str, float] = {}
    for result in run.get("loaded_facts") or []:
        if not isinstance(result, dict) or result.get("status") != SUCCEEDED or result.get("table") not in FACTS:
            continue
        fact = result["table"]
        sources = TRANSFORM_INPUTS[fact]
        if not all(source in watermarks for source in sources):
            continue  # a run without this fact's source tables saw nothing to compare with
        seen = [watermarks[source] for source in sources if watermarks[source] is not None]
        if not seen:
            found[fact] = 0.0  # an empty source: nothing to be behind
            continue
        newest_seen, loaded = max(seen), _when(result.get(NEWEST_LOADED))
        if loaded is None:  # the warehouse has none of this fact yet
            found[fact] = max((now.replace(tzinfo=None) - newest_seen).total_seconds(), 0.0)
        else:
            found[fact] = max((newest_seen - loaded).total_seconds(), 0.0)
    return found


def freshness_metrics(behind: dict[str, float]) -> list[EphemeralMetrics]:
    """One value per run: the maximum over the facts measured (the alarm's one series), with each fact's value as
    the record's `behind_seconds` property, which the dashboard queries with Logs Insights.

    A series per fact would cost $0.30 a month each (docs/cost.md) for a graph; the alarm needs only the worst.
    Published in every run that measured a fact, also one with nothing to do: a series that stops is how an
    operator sees that the evidence itself is missing.
    """
    if not behind:
        return []
    worst = EphemeralMetrics()
    worst.add_metric(BEHIND_METRIC, MetricUnit.Seconds, max(behind.values()))
    worst.add_metadata("behind_seconds", dict(behind))
    return [worst]
