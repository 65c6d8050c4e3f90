"""What a person sees after a local run: the execution graph, rows per table, and where to look."""

from __future__ import annotations

import json
import shlex
from collections import defaultdict
from typing import Any

from statemachine.local.runner import Invocation, RunOutcome

_MARK = {"SUCCEEDED": "✔", "FAILED": "✘", "RUNNING": "…", "SKIPPED": "·"}


def _rows(result: dict[str, Any]) -> str:
    for key in ("rows", "rows_written"):
        if key in result:
            return f"{result[key]:,} rows" + (" written" if key == "rows_written" else "")
    return ""


def _held(result: dict[str, Any]) -> str:
    """A fact's rows held back for a missing dimension row, with the first reason."""
    if not result.get("rows_held"):
        return ""
    sample = (result.get("stuck_sample") or result.get("held_sample") or [{}])[0]
    stuck = f", {result['rows_stuck']:,} stuck" if result.get("rows_stuck") else ""
    return f", {result['rows_held']:,} held{stuck} (e.g. {sample.get('reason', '?')})"


def progress_line(invocation: Invocation) -> str:
    mark = "✔" if invocation.ok else "✘"
    detail = (
        _rows(invocation.result) + _held(invocation.result)
        if invocation.ok
        else invocation.result.get("errorType", "error")
    )
    return f"  {mark} {invocation.stage:<9} {invocation.table:<20} {invocation.seconds:6.2f}s  {detail}"


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
    for name, status, seconds in top_level_states(outcome.history):
        lines.append(f"  {_MARK.get(status, '?')} {name:<32} {status:<10} {seconds:7.2f}s")
        stage = next((s for prefix, s in stage_of_state.items() if name.startswith(prefix)), None)
        if stage is None:
            continue
        tables = [t for t in per_stage[stage] if (stage != "load") or _belongs(name, t)]
        for table in tables:
            calls = per_stage[stage][table]
            last = calls[-1]
            retries = len(calls) - 1
            if not last.ok:
                state, detail = "FAILED", f"{last.result.get('errorType')}: {last.result.get('errorMessage')}"
            elif last.result.get("status") == "skipped":
                state, detail = "SKIPPED", f"needs {last.result.get('reason')}"
            else:
                state, detail = "SUCCEEDED", _rows(last.result) + _held(last.result)
            retry_text = f"  {retries} retr{'y' if retries == 1 else 'ies'}" if retries else ""
            seconds = sum(c.seconds for c in calls)
            lines.append(f"      {_MARK[state]} {table:<22} {state:<10} {seconds:7.2f}s  {detail}{retry_text}")
    if outcome.error and outcome.error != "TablesFailed":  # those are listed by failure_summary
        lines.append(f"  error: {outcome.error}: {outcome.cause}")
    return "\n".join(lines)


def failure_summary(outcome: RunOutcome, passthrough: list[str]) -> str:
    """For a failed run: each failed table with its stage and error, and the command that re-runs them."""
    if outcome.succeeded:
        return ""
    if outcome.error != "TablesFailed":
        return f"The run failed: {outcome.error}: {outcome.cause}"
    cause = json.loads(outcome.cause or "{}")
    lines = ["Failed tables:"]
    for failure in cause.get("failed_tables", []):
        lines.append(f"  ✘ {failure['table']:<22} {failure['stage']:<9} {failure['status']:<8} "
                     f"{failure['error']}: {failure['message']}")  # fmt: skip
    for table, held in cause.get("held_facts", {}).items():
        lines.append(f"  ⏸ {table:<22} {held['rows_held']:,} rows held back, {held['rows_stuck']:,} stuck; "
                     "they load by themselves once their dimension rows exist")  # fmt: skip
        for row in held["stuck_sample"] or held["sample"]:
            keys = ", ".join(f"{k}={v}" for k, v in row["key"].items())
            lines.append(f"      {keys}: {row['reason']} (held since {row['held_since']})")
    tables = cause.get("rerun_input", {}).get("tables", [])
    verb = "repair" if cause.get("rerun_input", {}).get("repair") else "run"
    command = ["python", "-m", "statemachine.local", verb, *passthrough, "--tables", ",".join(tables)]
    if cause.get("rerun_input", {}).get("full_refresh"):
        command.append("--full-refresh")
    lines += ["", "Re-run only these tables with:", "  " + shlex.join(command)]
    return "\n".join(lines)


def drift_summary(outcome: RunOutcome) -> tuple[str, bool]:
    """What a reconciliation found, one line per table, and whether the source and the lake differed at all."""
    found = [i.result["reconciled"] for i in outcome.invocations if i.ok and "reconciled" in i.result]
    if not found:
        return "", False
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
    return "\n".join(lines), drifted


def _belongs(state_name: str, table: str) -> bool:
    return ("facts" in state_name.lower()) == table.startswith("fact_")
