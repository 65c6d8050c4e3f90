"""What each Lambda accepts: one pydantic model per action, one discriminated union per function, parsed in one place.

A handler's first line says what it accepts (`parsed(EXTRACT, event)`); the models are what the workflow's Tasks
send (statemachine/pipeline.asl.json). An event that does not fit is refused by `parsed` with the pipeline's
one-line error (lambdas/common/errors.py one_line), naming the field and what is wrong with it: a PipelineError,
an UnknownTableError for a table outside the contract, or the error class the caller names (the lease refuses a
run's options as InvalidRunInput, which the workflow catches by that name).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_origin

from aws_lambda_powertools.utilities.parser import parse
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    StrictInt,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from lambdas.common.errors import PipelineError, UnknownTableError, one_line
from lambdas.common.tables import (
    DIMENSIONS,
    FACTS,
    SOURCE_TABLES,
    TRANSFORM_INPUTS,
    WAREHOUSE_TABLES,
    Dimensions,
    Facts,
    SourceTable,
    SourceTables,
    WarehouseTable,
    WarehouseTables,
)

SUCCEEDED, SKIPPED, FAILED = "succeeded", "skipped", "failed"
# Keys of the stage results that the run report's freshness metric compares (lambdas/report/freshness.py).
WATERMARK, NEWEST_LOADED = "watermark", "newest_loaded"
# The run modes an execution input may switch on, at most one at a time (docs/operations.md).
MODES = ("full_refresh", "repair", "reconcile")
# Run options that combine with any mode: the extract reads the asked tables incrementally even when their change
# signal says they are unchanged (lambdas/extract/signal.py): for a change committed seconds before the run.
FLAGS = ("ignore_change_signal",)

# A switch is true or false: 1 or "yes" is refused rather than read as a wish.
Flag = Annotated[bool, Strict()]
# Results of an earlier stage of this run, as the workflow collects them (null: none).
StageResults = Annotated[list[dict[str, Any]], BeforeValidator(lambda value: [] if value is None else value)]


def _one_mode(values: BaseModel) -> None:
    chosen = [mode for mode in MODES if getattr(values, mode, False)]
    if len(chosen) > 1:
        raise PydanticCustomError("one_mode", "choose one of {modes}, not {chosen}",
                                  {"modes": ", ".join(MODES), "chosen": " and ".join(chosen)})  # fmt: skip


class Event(BaseModel):
    """What every event carries: the execution it belongs to (the logs' correlation id). Keys an event does not
    declare are ignored, as the workflow may pass more than a function reads."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    execution_id: str = ""


class RunOptions(BaseModel):
    """A run's options: the execution input over the defaults the workflow gives (its first Task). Each table
    list holds each table once, every name of the contract; keys not declared here pass through untouched."""

    model_config = ConfigDict(extra="allow")

    tables: SourceTables = Field(default_factory=lambda: list(SOURCE_TABLES))
    warehouse_tables: WarehouseTables = Field(default_factory=lambda: list(WAREHOUSE_TABLES))
    dimensions: Dimensions = Field(default_factory=lambda: list(DIMENSIONS))
    facts: Facts = Field(default_factory=lambda: list(FACTS))
    full_refresh: Flag = False
    repair: Flag = False
    reconcile: Flag = False
    ignore_change_signal: Flag = False  # FLAGS
    # The tables' work in the Standard child workflow, whatever the plan would choose (re-runs of failed tables:
    # their graph in the console, redrive; lambdas/extract/run_plan.py STANDARD_WORKFLOW).
    standard_workflow: Flag = False

    @model_validator(mode="after")
    def _one_mode_at_a_time(self) -> RunOptions:
        _one_mode(self)
        return self

    def given(self) -> dict[str, Any]:
        """The options as they were given (no defaults added): what the workflow carries on."""
        return self.model_dump(exclude_unset=True)


class TableEvent(Event):
    """A table's turn in a stage's Map: the run's mode, and what the stages before it did in this run."""

    table: str
    full_refresh: Flag = False
    repair: Flag = False
    reconcile: Flag = False
    ignore_change_signal: Flag = False  # FLAGS
    upstream: StageResults = []  # results of the previous stage in this run
    # Dimension loads of this run, passed to fact loads; informational: a fact never waits for them (it holds
    # the rows whose dimension row is missing, see lambdas/load/held.py).
    dimensions: StageResults = []

    @model_validator(mode="after")
    def _one_mode_at_a_time(self) -> TableEvent:
        _one_mode(self)
        return self

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


# --- extract -------------------------------------------------------------------------------------------------------


class ExtractTable(TableEvent):
    """Extract one source table (an incremental read, a full refresh, a repair or a reconciliation)."""

    action: Literal["extract"] = "extract"
    table: SourceTable


class KeyRange(BaseModel):
    """One item of a partitioned extract's ranges, as its plan listed them; only its number is read."""

    model_config = ConfigDict(frozen=True, extra="allow")

    range: StrictInt = Field(ge=0)


class ExtractRange(Event):
    """Read one key range of a partitioned whole-table extract (the plan is an object in the ingestion bucket)."""

    action: Literal["extract_range"]
    table: SourceTable
    plan: str = Field(min_length=1)
    range: KeyRange


class CommitExtract(Event):
    """Commit a partitioned extract once all its ranges are read: one batch, the head moved once."""

    action: Literal["commit"]
    table: SourceTable
    plan: str = Field(min_length=1)


class PlanRun(Event):
    """Plan the run: which tables have work (lambdas/extract/run_plan.py), from the options the lease checked."""

    action: Literal["plan"]
    options: RunOptions


def _action(default: str | None) -> Any:
    """The discriminator of a union: the event's `action`, or `default` for an event without one (or a null one;
    "" where an action is required, which reads as an unknown action). Not an object: no tag, refused as such."""

    def tag(value: Any) -> str | None:
        if isinstance(value, dict):
            return str(value.get("action") or default or "")
        return getattr(value, "action", None)

    return Discriminator(tag)


EXTRACT = Annotated[
    Annotated[ExtractTable, Tag("extract")]
    | Annotated[ExtractRange, Tag("extract_range")]
    | Annotated[CommitExtract, Tag("commit")]
    | Annotated[PlanRun, Tag("plan")],
    _action("extract"),
]
ExtractEvent = ExtractTable | ExtractRange | CommitExtract | PlanRun


# --- transform and load --------------------------------------------------------------------------------------------


class TransformTable(TableEvent):
    """Remodel one warehouse table from the ingestion batches of its source tables."""

    table: WarehouseTable


class LoadTable(TableEvent):
    """Load one warehouse table from the processed bucket (and, reconciling, verify it against the lake)."""

    table: WarehouseTable


# --- report --------------------------------------------------------------------------------------------------------

# The report always reports, also for an execution it cannot name.
ReportedExecution = Annotated[str, BeforeValidator(lambda value: str(value or "unknown:execution"))]


class RunReport(Event):
    """The run's results as the workflow gathered them. Only the execution is typed: a result that is not what the
    stages return is reported as a failure (lambdas/report/summary.py), so the report reads every other key as is."""

    model_config = ConfigDict(frozen=True, extra="allow")

    action: Literal["report"] = "report"
    execution_id: ReportedExecution = "unknown:execution"

    def run(self) -> dict[str, Any]:
        """The results, as the summary reads them."""
        return {**(self.model_extra or {}), "execution_id": self.execution_id}


class RefuseInput(Event):
    """Alert on an execution input the lease's options check refused (the error Step Functions caught)."""

    action: Literal["refuse_input"]
    execution_id: ReportedExecution = "unknown:execution"
    error: Any = None


REPORT = Annotated[
    Annotated[RunReport, Tag("report")] | Annotated[RefuseInput, Tag("refuse_input")],
    _action("report"),
]


# --- lease ---------------------------------------------------------------------------------------------------------


class AcquireLease(Event):
    """Take the run lease, after checking the run's options: the execution input over the workflow's defaults."""

    action: Literal["acquire"]
    execution_id: str = Field(min_length=1)
    defaults: dict[str, Any] = {}
    input: Any = None  # the execution input as it was given; checked by lambdas/report/options.py run_options


class ReleaseLease(Event):
    """Give the run lease back (the workflow's last Task, when the report could not)."""

    action: Literal["release"]
    execution_id: str = Field(min_length=1)


LEASE = Annotated[
    Annotated[AcquireLease, Tag("acquire")] | Annotated[ReleaseLease, Tag("release")],
    _action(None),
]


# --- parsing -------------------------------------------------------------------------------------------------------

_ADAPTERS: dict[int, TypeAdapter[Any]] = {}


def parsed(
    accepts: Any, event: Any, *, subject: str = "the event", error: type[PipelineError] = PipelineError,
    example: str = "",
) -> Any:  # fmt: skip
    """`event` as the model (or union) it must be, or the one-line error naming the field at fault.

    Powertools' parser validates; its refusal (pydantic's ValidationError, many lines) becomes one line here, for
    every function alike. A string is refused as not an object: Powertools would decode it as JSON, and an
    execution input given as a JSON string is a mistake to name, not to guess through. Not `@event_parser`: the
    logger's correlation id is read from the raw event first, and the refusal must be the pipeline's error.
    """
    adapter = _ADAPTERS.get(id(accepts))
    if adapter is None:
        adapter = _ADAPTERS[id(accepts)] = TypeAdapter(accepts)
    try:
        return adapter.validate_python(event) if isinstance(event, str | bytes) else parse(event=event, model=adapter)
    except ValidationError as refused:
        unknown_table = refused.errors()[0]["type"] == "unknown_table"
        message = one_line(refused, subject=subject, example=example, tagged=get_origin(accepts) is Annotated)
        raise (UnknownTableError if unknown_table else error)(message) from None
