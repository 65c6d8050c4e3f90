"""Re-run only the tables a failed execution could not finish.

    python -m statemachine.rerun EXECUTION_ARN [--dry-run]
    python -m statemachine.rerun LOCAL_EXECUTION_ID [--lake-dir DIR] [--dry-run]

Reads the failed execution's history, works out which source tables must be extracted again (those that
failed, and the sources of every warehouse table that failed or was skipped), and starts a new execution
of the same state machine with just those tables, its work in the Standard child (``standard_workflow``: its graph
in the console, and redrive); the per-table results are read from the parent's own history, where the child's
output arrives (an Express child keeps no history to read); a local execution interrupted by Ctrl-C is started again
with its own input (the watermarks moved only for what was durable, so it resumes). `--dry-run` prints the
input instead. A local execution
(`local-…`, as `python -m statemachine.local run` names them) is read from the lake directory that ran it,
and re-run locally with the options it had. For a transient
failure, `aws stepfunctions redrive-execution` (same input, same definition) is the other way.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.common.errors import truncated
from lambdas.extract.run_plan import STANDARD_WORKFLOW
from lambdas.report.summary import STAGE_RESULTS, Failure, rerun_input, state_machine_arn
from statemachine.history import history


def _results(output: Any) -> list[Any]:
    """A state's output and, where it holds them, the per-table results of the stages: a Lambda task's Payload, a
    Map iteration's result, or the child workflow's results as the parent's task received them (``Output``, as
    .sync:2 returns them) and kept them (``stages``)."""
    if isinstance(output, dict) and "Payload" in output:
        output = output["Payload"]
    found = [output]
    for holder in (output.get("Output"), output.get("stages")) if isinstance(output, dict) else ():
        if isinstance(holder, dict):
            found += [r for key in STAGE_RESULTS if isinstance(holder.get(key), list) for r in holder[key]]
    return found


def failures_in(events: list[dict[str, Any]]) -> list[Failure]:
    """The per-table failures and skips recorded in the execution history: by the Map iterations, or in the child's
    results the parent received."""
    found = []
    for event in events:
        details = event.get("stateExitedEventDetails") or event.get("taskSucceededEventDetails") or {}
        try:
            parsed = json.loads(details.get("output") or "null")
        except ValueError:
            continue
        for output in _results(parsed):
            if not (isinstance(output, dict) and output.get("status") in ("failed", "skipped") and "table" in output):
                continue
            failure = Failure(
                stage=str(output.get("stage")),
                table=str(output["table"]),
                status=output["status"],
                error=str(output.get("error", "Skipped")),
                message=str(output.get("reason") or output.get("cause", "")),
            )
            if failure not in found:
                found.append(failure)
    return found


def plan(sfn: Any, execution_arn: str) -> dict[str, Any]:
    """The input of the re-run; an error if the execution did not fail or nothing can be re-run."""
    described = sfn.describe_execution(executionArn=execution_arn)
    if described["status"] not in ("FAILED", "TIMED_OUT", "ABORTED"):
        raise SystemExit(f"{execution_arn} is {described['status']}: there is nothing to re-run")
    found = failures_in(history(sfn, execution_arn))
    if not found:
        raise SystemExit(f"{execution_arn} failed before any table did ({described.get('error')}); "
                         "redrive it or start a full run")  # fmt: skip
    execution_input = rerun_input(found, json.loads(described.get("input") or "{}"))
    if not execution_input["tables"]:  # e.g. the child workflow failed as a whole: no table of its own failed
        named = ", ".join(sorted({f.table for f in found}))
        raise SystemExit(f"{execution_arn} failed, but in no table a re-run could name ({named}); start a full run")
    # the re-run's work in the Standard child (lambdas/extract/run_plan.py): its graph in the console, and redrive
    return {**execution_input, STANDARD_WORKFLOW: True}


EXIT_USAGE, EXIT_UNAVAILABLE = 2, 69
_EXECUTION_ARN = re.compile(r"arn:aws[\w-]*:states:[\w-]+:\d{12}:execution:[^:\s]+:[^:\s]+")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m statemachine.rerun", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="exit codes: 0 started (or printed), 1 nothing to re-run, "
                                            "2 no such execution, 69 AWS cannot be reached or refused")  # fmt: skip
    parser.add_argument("execution_arn")
    parser.add_argument("--dry-run", action="store_true", help="print the input instead of starting the run")
    parser.add_argument("--lake-dir", type=Path, default=Path(".local"), help="where a local execution ran")
    return parser.parse_args(argv)


def _local(args: argparse.Namespace) -> int:
    """Re-run what a local execution could not finish, from the history its run kept in the lake."""
    from statemachine.local import history as local_history

    record = local_history.load(args.lake_dir, args.execution_arn)
    if record is None:
        print(f"error: {truncated(args.execution_arn, 100)!r} is neither a Step Functions execution ARN "
              f"(arn:aws:states:REGION:ACCOUNT:execution:MACHINE:NAME) nor a local execution kept in "
              f"{args.lake_dir} (give --lake-dir)", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    if record.get("status") == "SUCCEEDED":
        print(f"{args.execution_arn} SUCCEEDED: there is nothing to re-run", file=sys.stderr)
        return 1
    found = failures_in(record.get("history") or [])
    kept_input = record.get("input") or {}
    if found:
        execution_input = rerun_input(found, kept_input)
    elif record.get("status") == "ABORTED":  # interrupted (Ctrl-C): the same run again resumes where it stopped
        execution_input = dict(kept_input)
    else:
        print(f"{args.execution_arn} failed before any table did ({record.get('error')}); start a full run",
              file=sys.stderr)  # fmt: skip
        return 1
    if args.dry_run:
        print(json.dumps(execution_input))
        return 0
    from statemachine.local.__main__ import main as local_main

    verb = "repair" if execution_input.get("repair") else "reconcile" if execution_input.get("reconcile") else "run"
    tables = ["--tables", ",".join(execution_input["tables"])] if execution_input.get("tables") else []
    return local_main([verb, *record.get("options", []), *tables,
                       *(["--full-refresh"] if execution_input.get("full_refresh") else [])])  # fmt: skip


def main(argv: list[str] | None = None, *, client: Any | None = None) -> int:
    args = _parse(argv)
    if not _EXECUTION_ARN.fullmatch(args.execution_arn):
        return _local(args)
    try:
        sfn = client or boto3.client("stepfunctions", region_name=args.execution_arn.split(":")[3])
        execution_input = plan(sfn, args.execution_arn)
        if args.dry_run:
            print(json.dumps(execution_input))
            return 0
        name = f"rerun-{datetime.now(UTC):%Y%m%dT%H%M%S}-{args.execution_arn.rsplit(':', 1)[-1]}"[:80]
        started = sfn.start_execution(stateMachineArn=state_machine_arn(args.execution_arn), name=name,
                                      input=json.dumps(execution_input))  # fmt: skip
    except (BotoCoreError, ClientError) as exc:
        print(f"error: AWS Step Functions: {truncated(str(exc), 300)}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(f"started {started['executionArn']} with {json.dumps(execution_input)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
