"""What a person sees after a local run: the execution graph, rows per table, and where to look."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lambdas.common.errors import TransientError, repair_tables, truncated
from lambdas.common.events import SUCCEEDED
from lambdas.common.tables import TRANSFORM_INPUTS
from statemachine.local.runner import Invocation, RunOutcome

_MARK = {"SUCCEEDED": "✔", "FAILED": "✘", "RUNNING": "…", "SKIPPED": "·"}


def plural(count: int, word: str, many: str | None = None) -> str:
    """ "1 row", "2 rows", "1 retry", "3 retries"."""
    return f"{count:,} {word if count == 1 else many or word + 's'}"


def _rows(result: dict[str, Any]) -> str:
    for key in ("rows", "rows_written"):
        if key in result:
            return plural(int(result[key]), "row") + (" written" if key == "rows_written" else "")
    return ""


def _repaired(result: dict[str, Any]) -> str:
    """A repair's extract says it rebuilt the table's lake, so a repair does not read like a full refresh."""
    return ", repaired: its lake rebuilt from the source in a new epoch" if result.get("repaired") else ""


def _unread(result: dict[str, Any]) -> str:
    """An extract that skipped its table says why: its change signal had not moved since its last scan."""
    return ", not read: unchanged since its last scan (change signal)" if result.get("scanned") is False else ""


def signal_hint(outcome: RunOutcome) -> str:
    """One line when the change signal kept tables unread: a change made seconds ago may not be counted yet."""
    planned_out = {
        t for i in outcome.invocations if i.stage == "plan" and i.ok for t in i.result.get("unchanged") or []
    }
    skipped = {
        i.table for i in outcome.invocations if i.stage == "extract" and i.ok and i.result.get("scanned") is False
    }
    unread = sorted(planned_out | skipped)
    if not unread:
        return ""
    return (f"Not read, unchanged by their change signal: {', '.join(unread)}. A change committed in the last "
            "seconds may not be counted yet; --ignore-change-signal reads them anyway.")  # fmt: skip


def _held(result: dict[str, Any]) -> str:
    """A fact's rows held back for a missing dimension row, with the first reason."""
    if not result.get("rows_held"):
        return ""
    sample = (result.get("stuck_sample") or result.get("held_sample") or [{}])[0]
    stuck = f", {result['rows_stuck']:,} stuck" if result.get("rows_stuck") else ""
    return f", {result['rows_held']:,} held{stuck} (e.g. {sample.get('reason', '?')})"


def _error(result: dict[str, Any]) -> str:
    return f"{result.get('errorType', 'error')}: {truncated(str(result.get('errorMessage', '')), 160)}"


def _planned(plan: dict[str, Any]) -> str:
    """What the run plan gave work to, counted per stage ("nothing to do" for a quiet run)."""
    counts = {stage: len(plan.get(stage) or []) for stage in ("extract", "transform")}
    counts["load"] = len(plan.get("dimensions") or []) + len(plan.get("facts") or [])
    if not any(counts.values()):
        return "nothing to do"
    return ", ".join(f"{n} to {stage}" for stage, n in counts.items())


def progress_line(invocation: Invocation) -> str:
    if not invocation.ok:
        mark, detail = "✘", _error(invocation.result)
    elif invocation.result.get("status") == "skipped":
        mark, detail = "·", f"skipped: needs {invocation.result.get('reason')}"
    elif invocation.stage == "plan":
        mark, detail = "✔", _planned(invocation.result)
    elif invocation.result.get("status") == "partitioned":
        mark, detail = "✔", f"{len(invocation.result.get('ranges') or [])} key ranges planned"
    else:
        result = invocation.result
        mark, detail = "✔", _rows(result) + _repaired(result) + _held(result) + _unread(result)
    name = f"{invocation.table} {invocation.step}".strip()
    return f"  {mark} {invocation.stage:<9} {name:<20} {invocation.seconds:6.2f}s  {detail}"


class Progress:
    """Live progress, one line per table and stage: a retried attempt does not add lines, it is counted."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self._attempts: dict[tuple[str, str, str], int] = defaultdict(int)
        self._lock = threading.Lock()

    def __call__(self, invocation: Invocation) -> None:
        key = (invocation.execution_id, invocation.stage, invocation.table, invocation.step)
        with self._lock:
            self._attempts[key] += 1
            attempt = self._attempts[key]
        transient = not invocation.ok and invocation.result.get("errorType") == TransientError.__name__
        if transient and attempt > 1:
            return  # the first transient failure said it will be retried; the outcome will say how it ended
        line = progress_line(invocation)
        if transient:
            line += "  (retrying)"
        elif attempt > 1:
            line += f"  after {plural(attempt - 1, 'retry', 'retries')}"
        self.say(line)


def top_level_states(history: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    """(state, status, seconds) for the states of the main flow, in the order they ran."""
    entered: dict[str, Any] = {}
    order: list[str] = []
    status: dict[str, str] = {}
    seconds: dict[str, float] = {}
    depth = 0
    for event in history:
        kind = event["type"]
        if kind == "MapIterationStarted":
            depth += 1
        elif kind in ("MapIterationSucceeded", "MapIterationFailed", "MapIterationAborted"):
            depth -= 1
        if depth:
            continue
        if kind.endswith("StateEntered"):
            name = event["stateEnteredEventDetails"]["name"]
            entered[name] = event["timestamp"]
            order.append(name)
            status[name] = "RUNNING"
        elif kind.endswith("StateExited"):
            name = event["stateExitedEventDetails"]["name"]
            status[name] = "SUCCEEDED"
            seconds[name] = (event["timestamp"] - entered[name]).total_seconds()
        elif kind in ("MapStateFailed", "ExecutionFailed", "TaskFailed") and order:
            status[order[-1]] = "FAILED"
    return [(name, status[name], seconds.get(name, 0.0)) for name in order]


def execution_graph(outcome: RunOutcome) -> str:
    per_stage: dict[str, dict[str, list[Invocation]]] = defaultdict(lambda: defaultdict(list))
    for invocation in outcome.invocations:
        per_stage[invocation.stage][invocation.table].append(invocation)
    stage_of_state = {"Extract": "extract", "Transform": "transform", "Load": "load"}
    lines = [f"Execution {outcome.execution_arn.rsplit(':', 1)[-1]}: {outcome.status}"]
    states = top_level_states(outcome.history)
    # one column for the states' names and the tables' (indented) ones, so the statuses and times line up
    width = max([len(name) for name, _, _ in states] + [len(t) + 4 for s in per_stage.values() for t in s] + [20])
    for name, status, seconds in states:
        lines.append(f"  {_MARK.get(status, '?')} {name:<{width}} {status:<9} {seconds:7.2f}s")
        stage = next((s for prefix, s in stage_of_state.items() if name.startswith(prefix)), None)
        if stage is None:
            continue
        tables = [t for t in per_stage[stage] if (stage != "load") or _belongs(name, t)]
        for table in tables:
            calls = per_stage[stage][table]
            last = calls[-1]
            retries = len(calls) - len({c.step for c in calls})  # a partitioned extract's ranges are not retries
            if not last.ok:
                state, detail = "FAILED", f"{last.result.get('errorType')}: {last.result.get('errorMessage')}"
            elif last.result.get("status") == "skipped":
                state, detail = "SKIPPED", f"needs {last.result.get('reason')}"
            else:
                state, detail = "SUCCEEDED", _rows(last.result) + _held(last.result)
            retry_text = f"  {plural(retries, 'retry', 'retries')}" if retries else ""
            seconds = sum(c.seconds for c in calls)
            lines.append(f"      {_MARK[state]} {table:<{width - 4}} {state:<9} {seconds:7.2f}s  {detail}{retry_text}")
    if outcome.error and outcome.error != "TablesFailed":  # those are listed by failure_summary
        lines.append(f"  error: {outcome.error}: {outcome.cause}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Rerun:
    """What re-runs the failed part of a run: its options, and why each table is in it."""

    tables: list[str]
    full_refresh: bool
    reasons: dict[str, str]
    repair: bool = False  # state that cannot be believed: the tables are rebuilt from the source

    @property
    def verb(self) -> str:
        return "repair" if self.repair else "run"

    @property
    def options(self) -> list[str]:
        return ["--tables", ",".join(self.tables), *(["--full-refresh"] if self.full_refresh else [])]


def _failed_tables(outcome: RunOutcome) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if outcome.error != "TablesFailed":
        return [], {}
    try:
        cause = json.loads(outcome.cause or "{}")
    except ValueError:
        return [], {}
    return list(cause.get("failed_tables") or []), dict(cause.get("rerun_input") or {})


def rerun(outcome: RunOutcome) -> Rerun | None:
    """None when there is nothing a re-run of some tables would fix (success, or a failure before any table)."""
    failed, rerun_input = _failed_tables(outcome)
    tables = [str(t) for t in rerun_input.get("tables") or []]
    if not tables:
        return None
    reasons: dict[str, list[str]] = defaultdict(list)
    downstream: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))  # source: table: stages
    for failure in failed:
        table, stage, status = failure.get("table"), failure.get("stage"), failure.get("status")
        if failure.get("error") == "StateError":
            for source in repair_tables(str(failure.get("message", ""))):
                reasons[source].append(f"state of {table} ({stage}) cannot be believed")
        elif stage == "extract":
            reasons[str(table)].append(f"its extract {status}")
        else:
            for source in TRANSFORM_INPUTS.get(str(table), ()):
                downstream[source][str(table)].append(f"{stage} {status}")
    for source, built in downstream.items():
        if reasons[source] and all(s.endswith("skipped") for stages in built.values() for s in stages):
            continue  # its own failure is the reason; the tables built from it only waited for it
        reasons[source].append("a source of " + ", ".join(f"{t} ({', '.join(s)})" for t, s in built.items()))
    why = {t: "; ".join(dict.fromkeys(reasons[t])) or "asked for by the run" for t in tables}
    return Rerun(tables, bool(rerun_input.get("full_refresh")), why, bool(rerun_input.get("repair")))


def failure_summary(
    outcome: RunOutcome, plan: Rerun | None, command: str | None, *, passwords_left_out: bool = False
) -> str:
    """For a failed run: each failed table with its stage and error, and the command that re-runs them."""
    if outcome.succeeded:
        return ""
    failed, _ = _failed_tables(outcome)
    if not failed:
        return f"The run failed: {outcome.error}: {truncated(str(outcome.cause), 2000)}"
    lines = ["Failed tables:"]
    for failure in failed:
        lines.append(f"  ✘ {failure.get('table')!s:<22} {failure.get('stage')!s:<9} {failure.get('status')!s:<8} "
                     f"{failure.get('error')}: {failure.get('message')}")  # fmt: skip
    for table, held in _held_facts(outcome).items():
        lines.append(f"  ⏸ {table:<22} {held['rows_held']:,} rows held back, {held['rows_stuck']:,} stuck; "
                     "they load by themselves once their dimension rows exist")  # fmt: skip
        for row in held["stuck_sample"] or held["sample"]:
            keys = ", ".join(f"{k}={v}" for k, v in row["key"].items())
            lines.append(f"      {keys}: {row['reason']} (held since {row['held_since']})")
    if plan and command:
        lines += ["", "Re-run only these tables with:", "  " + command, "because:"]
        lines += [f"  {table:<16} {reason}" for table, reason in plan.reasons.items()]
        if passwords_left_out:
            lines.append("(passwords are never printed: give them with PGPASSWORD or the TOTESYS_*_DSN variables)")
    return "\n".join(lines)


def _held_facts(outcome: RunOutcome) -> dict[str, Any]:
    try:
        return dict(json.loads(outcome.cause or "{}").get("held_facts") or {})
    except (ValueError, AttributeError):
        return {}


def drift_summary(outcome: RunOutcome) -> tuple[str, bool]:
    """What a reconciliation found, one line per table, and whether the source and the lake differed at all."""
    found = [i.result["reconciled"] for i in outcome.invocations if i.ok and "reconciled" in i.result]
    if not found:
        return warehouse_summary(outcome)
    lines = ["Reconciliation (source against what the pipeline has taken):"]
    drifted = False
    for r in sorted(found, key=lambda r: r["table"]):
        differs = bool(r["ranges_differing"])
        drifted |= differs
        detail = (
            f"{r['ranges_differing']} of {r['ranges_compared']} key ranges differ: {r['rows_changed']} changed "
            f"({r['rows_changed_quietly']} without a new last_updated), {r['rows_missing']} missing, "
            f"{r['rows_deleted']} deleted upstream"
            + (f" (keys {r['deleted_keys_sample']})" if r["rows_deleted"] else "")
            if differs
            else f"{r['ranges_compared']} key ranges agree"
        )
        lines.append(
            f"  {'!' if differs else '✔'} {r['table']:<16} {detail}; {r['source_rows_read']} source rows re-read"
        )
    if drifted:
        lines.append("The differing rows went through transform and load as new versions (a dimension takes a change")
        lines.append("without a new last_updated; a fact keeps the first content it saw of a version). Something")
        lines.append("upstream or in the lake's state changed unseen: docs/operations.md#reconciliation.")
    warehouse, restored = warehouse_summary(outcome)
    return "\n".join([*lines, *([warehouse] if warehouse else [])]), drifted or restored


def warehouse_summary(outcome: RunOutcome) -> tuple[str, bool]:
    """What the verification of the warehouse against the lake found (lambdas/load/verify.py), one line per table
    that differed, and whether any row was restored."""
    found = [i.result["verified"] for i in outcome.invocations if i.ok and "verified" in i.result]
    if not found:
        return "", False
    differing = [r for r in found if r["rows_restored"] or r["rows_not_in_lake"]]
    lines = [f"Warehouse against the lake: {len(found) - len(differing)} of {len(found)} tables agree"
             + (":" if differing else ".")]  # fmt: skip
    for r in sorted(differing, key=lambda r: r["table"]):
        lines.append(f"  ! {r['table']:<20} {r['rows_missing']} missing and {r['rows_changed']} changed rows restored"
                     f" from the lake; {r['rows_not_in_lake']} rows the lake does not have, kept"
                     + (f" ({'; '.join(r['not_in_lake_sample'][:3])})" if r["rows_not_in_lake"] else ""))  # fmt: skip
    return "\n".join(lines), any(r["rows_restored"] for r in found)


def _totals(outcome: RunOutcome) -> dict[str, int]:
    last: dict[tuple[str, str, str], Invocation] = {}
    for invocation in outcome.invocations:
        last[(invocation.stage, invocation.table, invocation.step)] = invocation
    final = list(last.values())
    # a partitioned extract's ranges carry rows too: its commit counts them once, as the table's result
    table_results = [i for i in final if i.stage == "extract" and i.ok and i.result.get("status") == SUCCEEDED]
    return {
        "tables": len({i.table for i in final if i.stage == "extract"}),
        "rows_extracted": sum(int(i.result.get("rows", 0)) for i in table_results),
        "rows_loaded": sum(int(i.result.get("rows_written", 0)) for i in final if i.stage == "load" and i.ok),
        "dates_generated": sum(
            int(i.result.get("rows_written", 0)) for i in final if i.stage == "load" and i.ok and i.table == "dim_date"
        ),
        "failures": sum(1 for i in final if not i.ok and i.stage in ("extract", "transform", "load")),
        "skipped": sum(1 for i in final if i.ok and i.result.get("status") == "skipped"),
        "retries": len(outcome.invocations) - len(final),
    }


def summary_line(outcome: RunOutcome, seconds: float) -> str:
    """The last line of every run: what a person reads first, and a script can grep."""
    t = _totals(outcome)
    dates = f" (of which {t['dates_generated']:,} dim_date days, made from the facts' dates, not extracted)" \
        if t["dates_generated"] else ""  # fmt: skip
    return (f"{outcome.status}: {plural(t['tables'], 'table')}, {plural(t['rows_extracted'], 'row')} extracted, "
            f"{plural(t['rows_loaded'], 'row')} loaded{dates}, {t['failures']} failed, {t['skipped']} skipped, "
            f"{plural(t['retries'], 'retry', 'retries')}, {seconds:.1f} s")  # fmt: skip


def as_json(outcome: RunOutcome, seconds: float, plan: Rerun | None, command: str | None, lake_dir: Any,
            warehouse: str) -> dict[str, Any]:  # fmt: skip
    """`--output json`: the run for scripts, in one document."""
    failed, _ = _failed_tables(outcome)
    return {
        "execution": outcome.execution_arn.rsplit(":", 1)[-1],
        "status": outcome.status,
        "seconds": round(seconds, 3),
        **_totals(outcome),
        "invocations": [
            {
                "stage": i.stage,
                "table": i.table,
                **({"step": i.step} if i.step else {}),
                "ok": i.ok,
                "seconds": round(i.seconds, 3),
                "status": i.result.get("status") if i.ok else "failed",
                "rows": i.result.get("rows", i.result.get("rows_written")),
                "error": None if i.ok else _error(i.result),
            }
            for i in outcome.invocations
        ],
        "failed_tables": failed,
        "error": None if outcome.succeeded or failed else f"{outcome.error}: {truncated(str(outcome.cause), 2000)}",
        "rerun": {
            "tables": plan.tables,
            "full_refresh": plan.full_refresh,
            "repair": plan.repair,
            "why": plan.reasons,
            "command": command,
        }
        if plan
        else None,
        "held_facts": _held_facts(outcome),
        "reconciled": [i.result["reconciled"] for i in outcome.invocations if i.ok and "reconciled" in i.result],
        "verified": [i.result["verified"] for i in outcome.invocations if i.ok and "verified" in i.result],
        "lake_dir": str(lake_dir),
        "warehouse": warehouse,
    }


def _belongs(state_name: str, table: str) -> bool:
    return ("facts" in state_name.lower()) == table.startswith("fact_")
