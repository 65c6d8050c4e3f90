"""What a failed run tells people: which tables failed where and why, and how to re-run only those.

Pure functions over the stage results the state machine collected; the handler only publishes.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass
from typing import Any

from lambdas.common.errors import repair_tables, truncated
from lambdas.common.events import FAILED, SKIPPED
from lambdas.common.tables import SOURCE_TABLES, TRANSFORM_INPUTS

STAGE_RESULTS = ("extracted", "transformed", "loaded_dimensions", "loaded_facts")


@dataclass(frozen=True)
class Failure:
    stage: str
    table: str
    status: str  # failed, or skipped because something it needs failed
    error: str
    message: str


def _message(result: dict[str, Any]) -> str:
    """The Lambda's own error message, out of the JSON cause Step Functions wraps it in."""
    if result.get("status") == SKIPPED:
        return str(result.get("reason", ""))
    cause = result.get("cause") or ""
    try:
        parsed = json.loads(cause)
    except (TypeError, ValueError):
        return str(cause)[:1000]
    return str(parsed.get("errorMessage", cause))[:1000] if isinstance(parsed, dict) else str(cause)[:1000]


def failures(run: Any) -> list[Failure]:
    """Every failed or skipped table; a result that is not what the stages return is a failure too, never ignored."""
    if not isinstance(run, dict):
        return [Failure("report", "(run)", FAILED, "MalformedResult", f"not an object: {truncated(repr(run), 200)}")]
    found = []
    for key in STAGE_RESULTS:
        results = run.get(key)
        if not isinstance(results, list):
            found.append(Failure(key, "(stage)", FAILED, "MalformedResult",
                                 f"{key!r} is not a list of results: {truncated(repr(results), 200)}"))  # fmt: skip
            continue
        for result in results:
            if not isinstance(result, dict) or not isinstance(result.get("table"), str):
                found.append(Failure(key, "(unknown)", FAILED, "MalformedResult", truncated(repr(result), 200)))
            elif result.get("status") in (FAILED, SKIPPED):
                error = truncated(str(result.get("error", "Skipped")), 100)
                found.append(Failure(str(result.get("stage", key)), truncated(result["table"], 100), result["status"],
                                     error, _message(result)))  # fmt: skip
    return found


def held_facts(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per fact table, the rows its load held back for a missing dimension row: counts and a few keys."""
    found = {}
    for result in run.get("loaded_facts") or []:
        if result.get("rows_held"):
            found[str(result.get("table"))] = {
                "rows_held": result["rows_held"],
                "rows_stuck": result.get("rows_stuck", 0),
                "sample": result.get("held_sample") or [],
                "stuck_sample": result.get("stuck_sample") or [],
            }
    return found


def _held_lines(held: dict[str, dict[str, Any]]) -> list[str]:
    if not held:
        return []
    lines = ["", "Fact rows held back (the rest of each fact loaded; these load by themselves in the first run in "
             "which their dimension rows exist):"]  # fmt: skip
    for table, entry in held.items():
        lines.append(f"  - {table}: {entry['rows_held']} rows held, {entry['rows_stuck']} of them stuck")
        for row in entry["stuck_sample"] or entry["sample"]:
            keys = ", ".join(f"{k}={v}" for k, v in row["key"].items())
            lines.append(f"      {keys}: {row['reason']} (held since {row['held_since']})")
    return lines


def rerun_input(found: list[Failure], options: dict[str, Any]) -> dict[str, Any]:
    """The execution input that re-runs only what failed.

    Transforms and loads follow cursors, so they always finish whatever earlier runs left; re-running a
    warehouse table therefore means re-running the extract of its sources.
    """
    repair = bool(options.get("repair")) or any(f.error == "StateError" for f in found)
    wanted = set()
    for failure in found:
        if failure.error == "StateError":
            wanted |= set(repair_tables(failure.message))  # what cannot be believed, not all its neighbours
        elif failure.stage == "extract":
            wanted.add(failure.table)
        elif not (repair and failure.status == SKIPPED):  # a repair re-reads whole tables: only what failed
            wanted |= set(TRANSFORM_INPUTS.get(failure.table, ()))
    wanted &= set(SOURCE_TABLES)
    tables = [t for t in SOURCE_TABLES if t in wanted]
    result: dict[str, Any] = {"tables": tables}
    if repair:
        result["repair"] = True  # state that cannot be believed is rebuilt from the source, not re-read
    elif isinstance(options, dict) and options.get("full_refresh") is True:
        result["full_refresh"] = True
    return result


def local_command(rerun: dict[str, Any]) -> str:
    verb = "repair" if rerun.get("repair") else "run"
    command = f"python -m statemachine.local {verb} --tables {','.join(rerun['tables'])}"
    return command + (" --full-refresh" if rerun.get("full_refresh") else "")


def cause(found: list[Failure], rerun: dict[str, Any], held: dict[str, dict[str, Any]] | None = None) -> str:
    """The execution's failure cause: JSON a program can parse and a person can read."""
    return json.dumps(
        {
            "failed_tables": [asdict(f) for f in found],
            "held_facts": held or {},
            "rerun_input": rerun,
            "local_rerun": local_command(rerun),
        },
        indent=1,
        ensure_ascii=False,
    )


def console_link(execution_arn: str) -> str:
    if len(execution_arn.split(":")) < 8:
        return f"(no link: {truncated(execution_arn, 200)!r} is not an execution ARN)"
    region = execution_arn.split(":")[3]
    return f"https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{execution_arn}"


def state_machine_arn(execution_arn: str) -> str:
    """arn:aws:states:REGION:ACCOUNT:execution:MACHINE:NAME -> arn:aws:states:REGION:ACCOUNT:stateMachine:MACHINE"""
    parts = execution_arn.split(":")
    if len(parts) < 8:
        return "STATE_MACHINE_ARN"
    return ":".join([*parts[:5], "stateMachine", parts[6]])


def alert(
    execution_arn: str, found: list[Failure], rerun: dict[str, Any], held: dict[str, dict[str, Any]] | None = None
) -> tuple[str, str]:
    """(subject, body) of the e-mail sent once per failed run."""
    names = sorted({f.table for f in found if f.status == FAILED})
    subject = f"Totesys ETL failed: {', '.join(names)}"
    if len(subject) > 99:
        subject = f"Totesys ETL failed: {len(names)} tables"
    lines = [f"The pipeline run {execution_arn.rsplit(':', 1)[-1]} ended FAILED.", "", "Failed tables:"]
    if not rerun["tables"]:
        lines = [*lines[:2], "Nothing a re-run of some tables would fix (see below); fix the cause, then run.", "",
                 *lines[2:]]  # fmt: skip
    lines += [f"  - {f.table} ({f.stage}, {f.status}): {f.error}: {f.message}" for f in found]
    lines += _held_lines(held or {})
    lines += [
        "",
        f"Execution: {execution_arn}",
        f"Console: {console_link(execution_arn)}",
        "",
        "Re-run only these tables (new execution, current definition):",
        f"  aws stepfunctions start-execution --state-machine-arn {state_machine_arn(execution_arn)} "
        f"--input {shlex.quote(json.dumps(rerun))}",
        "or: python -m statemachine.rerun " + execution_arn,
        "Doing nothing is safe too: the next scheduled run finishes whatever this one left, once the cause is gone.",
        "Locally:",
        f"  {local_command(rerun)}",
    ]
    return subject, "\n".join(lines)


def refusal(execution_arn: str, error: Any) -> tuple[str, str]:
    """(subject, body) of the e-mail sent when a run refused its input and did nothing."""
    message = error.get("Cause", error) if isinstance(error, dict) else error
    try:
        parsed = json.loads(message) if isinstance(message, str) else message
        message = parsed.get("errorMessage", message) if isinstance(parsed, dict) else message
    except ValueError:
        pass
    lines = [
        f"The pipeline run {execution_arn.rsplit(':', 1)[-1]} refused its input and did nothing:",
        f"  {truncated(str(message), 1000)}",
        "",
        f"Execution: {execution_arn}",
        f"Console: {console_link(execution_arn)}",
        'Start it again with an input like {"tables": ["sales_order"], "full_refresh": false}, or {} for everything.',
    ]
    return "Totesys ETL failed: invalid run input", "\n".join(lines)
