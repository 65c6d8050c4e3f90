"""The workflow, built in Python: the one place that says which states there are and how each retries.

Two definitions come out of it (docs/state-machine.md):

- ``pipeline``: the Standard parent the schedule starts. It takes the run lease, plans the run, hands the tables'
  work to a child workflow, reports and releases the lease. A quiet run is seven states; a run with work is eight,
  whatever the number of tables, because the per-table states are the child's.
- ``stages``: the child, the four per-table Maps (extract, transform, load dimensions, load facts). It is deployed
  twice from this one definition: as an Express state machine for ordinary incremental runs (billed per request
  and GB-second, not per state) and as a Standard one for heavy runs and re-runs (a first load, a full refresh,
  a repair or reconciliation, a re-run of failed tables, or an Express run that did not finish).

``python -m statemachine.definition --write`` writes them to ``pipeline.asl.json`` and ``stages.asl.json``, the
files CDK deploys (``cdk/`` may not import this package) and linters read; tests/test_definition.py fails when a
file differs from what this module builds. ``${...}`` placeholders stand for the ARNs: CDK substitutes them with
``definition_substitutions``, the local runner with the ARNs it created in moto (:func:`render`).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lambdas.common.tables import DIMENSIONS, FACTS, SOURCE_TABLES, WAREHOUSE_TABLES
from lambdas.extract.run_plan import EXPRESS, STANDARD
from lambdas.report.summary import STAGE_RESULTS  # what the report reads of the stages: the child's results

HERE = Path(__file__).resolve().parent
PIPELINE, STAGES = "pipeline", "stages"
PATHS = {PIPELINE: HERE / "pipeline.asl.json", STAGES: HERE / "stages.asl.json"}
ASL_PATH = PATHS[PIPELINE]
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")

State = dict[str, Any]

# The run lease is held for the parent's TimeoutSeconds (plus a margin, cdk/stack.py): the one timeout of a run.
EXECUTION_TIMEOUT_SECONDS = 3600
# Lambda ends every invocation by 15 minutes at the latest, whatever the function's own timeout: an Express child
# that did not finish may have left invocations running that long, and the next run must not overlap them.
STRAY_INVOCATION_SECONDS = 900
# The plan names the child that runs the tables' work (lambdas/extract/run_plan.py: RunPlan.workflow).
CHILD_ARN = {EXPRESS: "${StagesExpressArn}", STANDARD: "${StagesStandardArn}"}

# --- the retry policy, written once -----------------------------------------------------------------------------
# Lambda's own service errors (the invocation did not run, or its result was lost) and our TransientError (the
# handler says a retry may succeed: lambdas/common/errors.py) are retried with exponential backoff and full
# jitter. Anything else is the table's failure, caught where the table's iteration can end in its failed result.
LAMBDA_SERVICE_ERRORS = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.ClientExecutionTimeoutException",
]
THROTTLED = "Lambda.TooManyRequestsException"


def _backoff(errors: list[str], interval: int, attempts: int, *, rate: float = 2, max_delay: int = 30) -> State:
    return {
        "ErrorEquals": errors,
        "IntervalSeconds": interval,
        "MaxAttempts": attempts,
        "BackoffRate": rate,
        "MaxDelaySeconds": max_delay,
        "JitterStrategy": "FULL",
    }


def retry_policy(*, throttle_patient: bool = False) -> list[State]:
    """Every Lambda task's Retry. ``throttle_patient``: a throttled invocation waits its turn for up to about 25
    minutes (a key range throttled by the extract function's reserved concurrency), apart from the other errors."""
    if throttle_patient:
        service = [e for e in LAMBDA_SERVICE_ERRORS if e != THROTTLED]
        return [
            _backoff([THROTTLED], 5, 30, rate=1.5, max_delay=60),
            _backoff(service, 2, 5),
            _backoff(["TransientError"], 3, 3),
        ]
    return [_backoff(list(LAMBDA_SERVICE_ERRORS), 2, 5), _backoff(["TransientError"], 3, 3)]


def _catch(errors: list[str], result_path: str | None, next_state: str) -> list[State]:
    return [{"ErrorEquals": errors, "ResultPath": result_path, "Next": next_state}]


def lambda_task(
    function: str,
    payload: Mapping[str, Any] | str,
    *,
    comment: str = "",
    result_selector: Mapping[str, Any] | None = None,
    result_path: str | None = "$",
    output_path: str | None = None,
    throttle_patient: bool = False,
    catch: list[State] | None = None,
    next_state: str | None = None,
) -> State:
    """A Task invoking one of the pipeline's functions (``function``: 'Extract', 'Lease', ...) with the retry policy.

    ``payload`` is the event, or a JSONPath (e.g. '$') whose value is the event. ``next_state`` None ends the
    (sub)flow.
    """
    state: State = {"Type": "Task"}
    if comment:
        state["Comment"] = comment
    state["Resource"] = "arn:aws:states:::lambda:invoke"
    target = {"Payload.$": payload} if isinstance(payload, str) else {"Payload": dict(payload)}
    state["Parameters"] = {"FunctionName": "${" + function + "FunctionArn}", **target}
    if result_selector is not None:
        state["ResultSelector"] = dict(result_selector)
    if output_path is not None:
        state["OutputPath"] = output_path
    elif result_path != "$":
        state["ResultPath"] = result_path
    elif result_selector is not None:
        state["ResultPath"] = "$"
    state["Retry"] = retry_policy(throttle_patient=throttle_patient)
    if catch:
        state["Catch"] = catch
    state.update({"Next": next_state} if next_state else {"End": True})
    return state


def table_failed(stage: str) -> State:
    """The result of a table whose iteration failed: the other tables go on, the report names this one."""
    return {
        "Type": "Pass",
        "Comment": "Other tables go on; the run reports this one and ends FAILED.",
        "Parameters": {
            "table.$": "$.table",
            "stage": stage,
            "status": "failed",
            "error.$": "$.error.Error",
            "cause.$": "$.error.Cause",
        },
        "End": True,
    }


def per_table_task(
    function: str,
    *,
    failed: str,
    comment: str = "",
    next_state: str | None = None,
    payload: Mapping[str, Any] | str = "$",
) -> State:
    """One table's Task inside a Map iteration: the retry policy, and any other error ends the iteration in its
    ``failed`` state (``table_failed``) instead of failing the Map."""
    return lambda_task(
        function,
        payload,
        comment=comment,
        output_path="$.Payload",
        catch=_catch(["States.ALL"], "$.error", failed),
        next_state=next_state,
    )


def table_map(
    *,
    comment: str,
    items_path: str,
    max_concurrency: int,
    item_selector: Mapping[str, Any],
    start_at: str,
    states: Mapping[str, State],
    result_path: str | None,
    next_state: str | None,
    catch: list[State] | None = None,
) -> State:
    """A Map with one INLINE iteration per table (or key range) of ``items_path``."""
    state: State = {
        "Type": "Map",
        "Comment": comment,
        "ItemsPath": items_path,
        "MaxConcurrency": max_concurrency,
        "ItemSelector": dict(item_selector),
        "ItemProcessor": {"ProcessorConfig": {"Mode": "INLINE"}, "StartAt": start_at, "States": dict(states)},
        "ResultPath": result_path,
    }
    if catch:
        state["Catch"] = catch
    state.update({"Next": next_state} if next_state else {"End": True})
    return state


# --- the parent: lease, plan, the child, report ------------------------------------------------------------------
NO_STAGE_RESULTS: dict[str, list[Any]] = {key: [] for key in STAGE_RESULTS}
RUN_DEFAULTS = {
    "tables": list(SOURCE_TABLES),
    "full_refresh": False,
    "warehouse_tables": list(WAREHOUSE_TABLES),
    "dimensions": list(DIMENSIONS),
    "facts": list(FACTS),
    "repair": False,
    "reconcile": False,
    "ignore_change_signal": False,
}
PLAN_FIELDS = ("extract", "transform", "dimensions", "facts", "work", "workflow", "reasons", "state")
RUN_EXPRESS, RUN_STANDARD = "Run the tables' work (Express)", "Run the tables' work (Standard)"
REPORT = "Report run"


def _run_child(workflow: str, *, comment: str, catch: list[State]) -> State:
    """The Task that starts the stages child and waits for it (.sync:2: its output arrives as JSON)."""
    return {
        "Type": "Task",
        "Comment": comment,
        "Resource": "arn:aws:states:::states:startExecution.sync:2",
        "Parameters": {
            "StateMachineArn": CHILD_ARN[workflow],
            # a UUID: the parent's name plus a suffix may pass the 80 characters a name may have (a re-run's)
            "Name.$": "States.UUID()",
            "Input": {
                "options.$": "$.options",
                "plan.$": "$.plan",
                "execution_id.$": "$$.Execution.Id",  # the functions' results name the run, not the child
                "AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID.$": "$$.Execution.Id",
            },
        },
        "ResultSelector": {f"{key}.$": f"$.Output.{key}" for key in STAGE_RESULTS},
        "ResultPath": "$.stages",
        # Retried only when Step Functions refused to start it: a start whose answer was lost may have started a
        # child, and a second one would overlap it (an Express execution's name does not make a start idempotent).
        "Retry": [_backoff(["StepFunctions.ExecutionLimitExceededException"], 2, 5)],
        "Catch": catch,
        "Next": REPORT,
    }


def pipeline() -> dict[str, Any]:
    """The Standard parent the schedule starts."""
    states: dict[str, State] = {
        "Report the refused input": lambda_task(
            "Report",
            {"action": "refuse_input", "execution_id.$": "$$.Execution.Id", "error.$": "$"},
            comment="E-mails why the input was refused; nothing ran and no lease was taken.",
            result_selector={"cause.$": "$.Payload.cause"},
            result_path="$.report",
            next_state="Run input refused",
        ),
        "Run input refused": {
            "Type": "Fail",
            "Comment": "The cause says what is wrong with the execution input.",
            "Error": "InvalidRunInput",
            "CausePath": "$.report.cause",
        },
        "Take the run lease": lambda_task(
            "Lease",
            {
                "action": "acquire",
                "execution_id.$": "$$.Execution.Id",
                "defaults": RUN_DEFAULTS,
                "input.$": "$$.Execution.Input",
            },
            comment="Checks the execution input over the defaults given here (a malformed input ends the run here, "
            "with an alert, and no lease is taken), then takes the lease: one run at a time, a run that finds it "
            "held by a live execution does nothing. The stages' results start empty: a run with nothing to do "
            "reports them so.",
            result_selector={
                "options.$": "$.Payload.options",
                "lease.$": "$.Payload.lease",
                "stages": NO_STAGE_RESULTS,
            },
            catch=_catch(["InvalidRunInput"], "$", "Report the refused input"),
            next_state="Is another run in progress?",
        ),
        "Is another run in progress?": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.lease.acquired", "BooleanEquals": False, "Next": "Another run is in progress"}],
            "Default": "Plan which tables to extract, transform and load",
        },
        "Another run is in progress": {
            "Type": "Succeed",
            "Comment": "Nothing was processed; the output says which execution holds the lease.",
        },
        "Plan which tables to extract, transform and load": lambda_task(
            "Extract",
            {"action": "plan", "execution_id.$": "$$.Execution.Id", "options.$": "$.options"},
            comment="One invocation reads every table's change signal, heads and cursors: the tables with work in "
            "this run, and why, and which child runs their work: Express for an incremental run, Standard for "
            "one the plan cannot bound in Express's five minutes (lambdas/extract/run_plan.py). A table it cannot "
            "tell about has work.",
            result_selector={f"{key}.$": f"$.Payload.{key}" for key in PLAN_FIELDS},
            result_path="$.plan",
            catch=_catch(["States.ALL"], "$.plan_error", "Plan every table named"),
            next_state="Is there anything to do?",
        ),
        "Plan every table named": {
            "Type": "Pass",
            "Comment": "A plan that could not be made is no reason to skip work: every table the options name goes "
            "through every stage, in the Standard child, and each says what is wrong.",
            "Parameters": {
                "extract.$": "$.options.tables",
                "transform.$": "$.options.warehouse_tables",
                "dimensions.$": "$.options.dimensions",
                "facts.$": "$.options.facts",
                "work": True,
                "workflow": STANDARD,
                "reasons": {"every table": "the plan failed"},
                "error.$": "$.plan_error.Cause",
                "state": {},
            },
            "ResultPath": "$.plan",
            "Next": RUN_STANDARD,
        },
        "Is there anything to do?": {
            "Type": "Choice",
            "Comment": "No table has work: nothing is touched, and the report measures every fact from what the "
            "plan read. Otherwise the child the plan chose runs the tables' work.",
            "Choices": [
                {"Variable": "$.plan.work", "BooleanEquals": False, "Next": REPORT},
                {"Variable": "$.plan.workflow", "StringEquals": EXPRESS, "Next": RUN_EXPRESS},
            ],
            "Default": RUN_STANDARD,
        },
        RUN_EXPRESS: _run_child(
            EXPRESS,
            comment="An incremental run: the per-table Maps in the Express child (stages.asl.json), billed per "
            "request and GB-second rather than per state. Its graph is in the child's log group; its per-table "
            "results come back here. A child that fails or passes its five minutes is done again in the Standard "
            "child, once the invocations it started have ended.",
            catch=_catch(["States.ALL"], "$.express_error", "Let the Express child's invocations end"),
        ),
        "Let the Express child's invocations end": {
            "Type": "Wait",
            "Comment": "The Express child ended without its results, but the Lambda invocations it started may still "
            "run, up to Lambda's 15-minute limit: the lease stays held, so that no run overlaps them, before "
            "the Standard child does the same work again (extract, transform and load each resume from their "
            "heads and cursors).",
            "Seconds": STRAY_INVOCATION_SECONDS,
            "Next": RUN_STANDARD,
        },
        RUN_STANDARD: _run_child(
            STANDARD,
            comment="A heavy run (a first load, a full refresh, a repair or reconciliation, a re-run, a plan that "
            "failed) or an Express run that did not finish: the same per-table Maps in the Standard child, with its "
            "execution graph in the console and redrive.",
            catch=_catch(["States.ALL"], "$.stages_error", "The tables' work failed"),
        ),
        "The tables' work failed": {
            "Type": "Pass",
            "Comment": "The child failed as a whole (not one table: those are caught per table): the report fails the "
            "run with its error, and the next run plans the work again from the heads and cursors.",
            "Parameters": {
                "extracted": [
                    {
                        "table": "(the tables' work)",
                        "stage": "extract",
                        "status": "failed",
                        "error.$": "$.stages_error.Error",
                        "cause.$": "$.stages_error.Cause",
                    }
                ],
                "transformed": [],
                "loaded_dimensions": [],
                "loaded_facts": [],
            },
            "ResultPath": "$.stages",
            "Next": REPORT,
        },
        REPORT: lambda_task(
            "Report",
            {
                "execution_id.$": "$$.Execution.Id",
                "options.$": "$.options",
                **{f"{key}.$": f"$.stages.{key}" for key in STAGE_RESULTS},
                "plan.$": "$.plan",
            },
            comment="Lists failed tables, e-mails them with the re-run input, says whether the run failed, "
            "publishes how far each fact is behind, and releases the run lease.",
            result_selector={
                "failed.$": "$.Payload.failed",
                "failures.$": "$.Payload.failures",
                "rerun_input.$": "$.Payload.rerun_input",
                "cause.$": "$.Payload.cause",
            },
            result_path="$.report",
            catch=_catch(["States.ALL"], "$.report_error", "The report failed"),
            next_state="Did every table succeed?",
        ),
        "The report failed": {
            "Type": "Pass",
            "Comment": "A report that cannot be made fails the run, after the lease is released.",
            "Parameters": {
                "failed": True,
                "failures": [],
                "rerun_input": None,
                "cause.$": "States.Format('The run report failed: {}', $.report_error.Cause)",
            },
            "ResultPath": "$.report",
            "Next": "Release the run lease",
        },
        "Release the run lease": lambda_task(
            "Lease",
            {"action": "release", "execution_id.$": "$$.Execution.Id"},
            comment="Only when the report failed: the report releases the lease itself.",
            result_path=None,
            next_state="Did every table succeed?",
        ),
        "Did every table succeed?": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.report.failed", "BooleanEquals": True, "Next": "Pipeline failed"}],
            "Default": "Pipeline succeeded",
        },
        "Pipeline failed": {
            "Type": "Fail",
            "Comment": "The cause lists each failed table, its stage and error, and the input that re-runs them.",
            "Error": "TablesFailed",
            "CausePath": "$.report.cause",
        },
        "Pipeline succeeded": {"Type": "Succeed"},
    }
    return {
        "Comment": "Totesys ETL: extract changed source rows to the ingestion bucket, remodel them into the star "
        'schema in the processed bucket, load the warehouse. Input (optional): {"tables": [source tables], '
        '"full_refresh": true|false, "repair": true|false, "reconcile": true|false, "ignore_change_signal": '
        "true|false} (repair and reconcile: docs/operations.md).",
        "TimeoutSeconds": EXECUTION_TIMEOUT_SECONDS,
        "StartAt": "Take the run lease",
        "States": states,
    }


# --- the child: the per-table Maps ------------------------------------------------------------------------------
# The parent's execution id, which the child's input carries: the functions' results and logs name the run.
RUN_ID = "$$.Execution.Input.execution_id"


def _extract_iteration() -> dict[str, State]:
    """One source table: its extract, or a partitioned whole-table read (a plan, its key ranges, the commit)."""
    return {
        "Extract table": per_table_task(
            "Extract",
            failed="Extract failed",
            comment="Extracts the table, or, for a whole-table read larger than EXTRACT_PARTITION_ROWS, returns a "
            "plan of key ranges (lambdas/extract/partitioned.py).",
            next_state="Is the table partitioned?",
        ),
        "Is the table partitioned?": {
            "Type": "Choice",
            "Comment": 'A plan (status "partitioned") names its key ranges and its S3 object, never rows.',
            "Choices": [{"Variable": "$.status", "StringEquals": "partitioned", "Next": "Extract key ranges"}],
            "Default": "Table extracted",
        },
        "Table extracted": {"Type": "Succeed"},
        "Extract key ranges": table_map(
            comment="One iteration per key range of the plan, each in its own snapshot; nothing is visible "
            "downstream until the commit.",
            items_path="$.ranges",
            max_concurrency=2,
            item_selector={
                "table.$": "$.table",
                "action": "extract_range",
                "plan.$": "$.plan",
                "range.$": "$$.Map.Item.Value",
                "execution_id.$": RUN_ID,
            },
            start_at="Extract key range",
            states={
                "Extract key range": lambda_task(
                    "Extract",
                    "$",
                    comment="Throttled by the extract function's reserved concurrency (max_source_connections), a "
                    "range waits its turn: up to about 25 minutes.",
                    output_path="$.Payload",
                    throttle_patient=True,
                )
            },
            result_path=None,
            catch=_catch(["States.ALL"], "$.error", "Extract failed"),
            next_state="Commit partitioned extract",
        ),
        "Commit partitioned extract": per_table_task(
            "Extract",
            failed="Extract failed",
            comment="Checks every range's output and that the head did not move, then writes the batch manifest "
            "and, last, the head with the watermark.",
            payload={"table.$": "$.table", "action": "commit", "plan.$": "$.plan", "execution_id.$": RUN_ID},
        ),
        "Extract failed": table_failed("extract"),
    }


def stages() -> dict[str, Any]:
    """The child: one Map per stage over the tables the plan gave work. Its input is the parent's options, plan
    and execution id; its output adds each stage's per-table results (STAGE_RESULTS)."""
    options = {key: f"$.options.{key}" for key in ("full_refresh", "repair", "reconcile", "ignore_change_signal")}

    def selector(*keys: str, **more: str) -> dict[str, str]:
        return {
            "table.$": "$$.Map.Item.Value",
            **{f"{k}.$": options[k] for k in keys},
            "execution_id.$": RUN_ID,
            **{f"{k}.$": v for k, v in more.items()},
        }

    return {
        "Comment": "Totesys ETL, the tables' work: one Map per stage over the tables the run's plan gave work "
        "(statemachine/pipeline.asl.json starts it, as an Express or a Standard execution).",
        "StartAt": "Extract source tables",
        "States": {
            "Extract source tables": table_map(
                comment="One iteration per source table the plan gives work: rows changed since its watermark, "
                "written as new Parquet objects.",
                items_path="$.plan.extract",
                max_concurrency=4,
                item_selector=selector("full_refresh", "repair", "reconcile", "ignore_change_signal"),
                start_at="Extract table",
                states=_extract_iteration(),
                result_path="$.extracted",
                next_state="Transform warehouse tables",
            ),
            "Transform warehouse tables": table_map(
                comment="One iteration per warehouse table the plan gives work; a table whose source failed to "
                "extract in this run is skipped.",
                items_path="$.plan.transform",
                max_concurrency=4,
                item_selector=selector("full_refresh", "repair", upstream="$.extracted"),
                start_at="Transform table",
                states={
                    "Transform table": per_table_task("Transform", failed="Transform failed"),
                    "Transform failed": table_failed("transform"),
                },
                result_path="$.transformed",
                next_state="Load dimensions",
            ),
            "Load dimensions": table_map(
                comment="Dimensions with work first, so that the facts find the rows they reference; skipped where "
                "the transform failed.",
                items_path="$.plan.dimensions",
                max_concurrency=4,
                item_selector=selector("full_refresh", "repair", "reconcile", upstream="$.transformed"),
                start_at="Load dimension",
                states={
                    "Load dimension": per_table_task("Load", failed="Load dimension failed"),
                    "Load dimension failed": table_failed("load"),
                },
                result_path="$.loaded_dimensions",
                next_state="Load facts",
            ),
            "Load facts": table_map(
                comment="Facts with work (also every fact holding rows back): each observed source version becomes "
                "one fact row, once; a row whose dimension row is missing is held back and loads in a later run.",
                items_path="$.plan.facts",
                max_concurrency=3,
                item_selector=selector(
                    "full_refresh", "repair", "reconcile", upstream="$.transformed", dimensions="$.loaded_dimensions"
                ),
                start_at="Load fact",
                states={
                    "Load fact": per_table_task("Load", failed="Load fact failed"),
                    "Load fact failed": table_failed("load"),
                },
                result_path="$.loaded_facts",
                next_state=None,
            ),
        },
    }


BUILDERS = {PIPELINE: pipeline, STAGES: stages}


def text(name: str = PIPELINE) -> str:
    """The definition as its file holds it."""
    return json.dumps(BUILDERS[name](), indent=2, ensure_ascii=False) + "\n"


def placeholders(text_or_name: str | None = None) -> set[str]:
    """The names a definition expects to be substituted: of one definition (its name, or its text), or of both."""
    if text_or_name is None:
        return placeholders(PIPELINE) | placeholders(STAGES)
    source = PATHS[text_or_name].read_text(encoding="utf-8") if text_or_name in PATHS else text_or_name
    return set(_PLACEHOLDER.findall(source))


def render(substitutions: Mapping[str, str], name: str = PIPELINE) -> str:
    """The definition file with every placeholder replaced; a missing or unknown name is an error."""
    source = PATHS[name].read_text(encoding="utf-8")
    expected = placeholders(source)
    if set(substitutions) != expected:
        raise KeyError(f"substitutions {sorted(substitutions)} do not match placeholders {sorted(expected)}")
    return _PLACEHOLDER.sub(lambda m: substitutions[m.group(1)], source)


def load(substitutions: Mapping[str, str] | None = None, name: str = PIPELINE) -> dict[str, Any]:
    """A definition file, parsed (with its placeholders substituted when ``substitutions`` are given)."""
    return json.loads(render(substitutions, name) if substitutions is not None else PATHS[name].read_text("utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m statemachine.definition",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--write", action="store_true", help="write the .asl.json files instead of checking them")
    args = parser.parse_args(argv)
    stale = [name for name, path in PATHS.items() if not path.is_file() or path.read_text("utf-8") != text(name)]
    if args.write:
        for name in stale:
            PATHS[name].write_text(text(name), encoding="utf-8")
        return 0
    for name in stale:
        print(f"{PATHS[name].name} differs from what statemachine/definition.py builds: run with --write")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
