"""What a run has to do, decided once before any table is touched, so that a run in which nothing changed costs
a handful of states and no per-table invocation (issue 21; docs/state-machine.md).

The plan names, per stage, the tables that have work, and why:
- extract a source table when a run mode (full refresh, repair, reconciliation) or ignore_change_signal asks for
  it, or when its change signal does not prove it unchanged since a recent scan (lambdas/extract/signal.py: a
  counter moved, the forced scan is due, the head is new, edited or not believable, the role lost its grant, rows
  refused before wait to be read again). The decision is extract_table's own
  (extractor.skips_on_signal), so planning skips exactly the tables the extract would have skipped;
- transform a warehouse table when one of the source tables it is built from is extracted in this run, or when
  its cursor is behind an extract head (a transform that failed or was skipped before);
- load a warehouse table when it is transformed in this run, or when its load cursor is behind its transform
  head (a load that failed before), and a fact also whenever it holds rows back for a missing dimension row
  (lambdas/load/held.py): held rows are tried again in every run until they load, so they load in the run in
  which their dimension row arrives, and the stuck-rows alarm keeps its evidence.

The plan also says which child workflow runs the tables' work (docs/state-machine.md): ``express`` for an
incremental run, whose reads are bounded by the changes since each table's watermark, and ``standard`` for a run
it cannot bound within Express's five minutes: a run mode (full refresh, repair, reconciliation: whole tables,
possibly in key ranges), a table never extracted (its first load), a table whose state it could not read or
believe, or a run asked to (``standard_workflow``, as a re-run of failed tables is). An Express child that does not
finish anyway is done again by the Standard child within the same run (statemachine/definition.py).

"Nothing to do" is never the answer to "I could not tell": a table whose state cannot be read or believed is
planned, and its stage says what is wrong. What the plan does not see is what the stages themselves would not
act on either (a warehouse swapped under an unchanged lake is found by the next load that has work).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pg8000.native

from lambdas.common.errors import truncated
from lambdas.common.events import MODES, NEWEST_LOADED, WATERMARK
from lambdas.common.lake import BatchLog, Bucket, Head, ReaderState
from lambdas.common.tables import DIMENSIONS, FACTS, SOURCE_TABLES, TRANSFORM_INPUTS, WAREHOUSE_TABLES
from lambdas.extract.extractor import skips_on_signal

ACTION_PLAN = "plan"
# Which child workflow runs the tables' work (statemachine/definition.py names them alike).
EXPRESS, STANDARD = "express", "standard"
# A run option: run the tables' work in the Standard child whatever the plan finds (a re-run of failed tables).
STANDARD_WORKFLOW = "standard_workflow"
EXTRACT_STAGE, TRANSFORM_STAGE, LOAD_STAGE = "extract", "transform", "load"


@dataclass(frozen=True)
class RunPlan:
    """The tables each stage of this run processes (in the order the options give them), and why each is in."""

    extract: list[str]
    transform: list[str]
    dimensions: list[str]
    facts: list[str]
    reasons: dict[str, str] = field(default_factory=dict)  # "<stage> <table>" -> why it has work
    # What the run report needs of the tables this run does not touch, so that the freshness metric is published
    # in every run (lambdas/report/freshness.py): each source table's watermark, each fact's newest loaded version.
    state: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Source tables left out because their change signal proves them unchanged: a change committed in the last
    # seconds may not be counted yet (signal.py), which whoever just changed a row needs to be told.
    unchanged: list[str] = field(default_factory=list)
    # The child that runs the work, and why when it is the Standard one (None: an incremental run).
    heavy: str | None = None

    @property
    def work(self) -> bool:
        return bool(self.extract or self.transform or self.dimensions or self.facts)

    @property
    def workflow(self) -> str:
        return STANDARD if self.heavy else EXPRESS

    def as_dict(self) -> dict[str, object]:
        return {"extract": self.extract, "transform": self.transform, "dimensions": self.dimensions,
                "facts": self.facts, "work": self.work, "workflow": self.workflow, "why_standard": self.heavy,
                "reasons": self.reasons, "state": self.state, "unchanged": self.unchanged}  # fmt: skip


def _listed(options: dict[str, Any], key: str, allowed: Sequence[str]) -> list[str]:
    """The option's tables (already checked by the lease's options check), the contract's when absent."""
    value = options.get(key)
    return [t for t in value if t in allowed] if isinstance(value, list) else list(allowed)


def _doubt(error: Exception) -> str:
    return f"its state could not be read or believed ({type(error).__name__}: {truncated(str(error), 200)})"


def _head(bucket: Bucket, stage: str, table: str) -> Head:
    """A stage's head as stored: a missing one is a log never written (the stage itself finds a lost one)."""
    return BatchLog(bucket, stage, table).stored_head()


def _reached(head: Head) -> dict[str, Any] | None:
    """The cursor of a reader that has taken everything up to ``head`` (None while the log was never written),
    as BatchLog.follow hands it out."""
    return head.cursor() if head.stored else None


def transform_behind(ingestion: Bucket, processed: Bucket, table: str) -> str | None:
    """Why the table's transform has work left from earlier runs (an input's head is past its cursor), or None."""
    cursors = _head(processed, TRANSFORM_STAGE, table).state.get("cursors") or {}
    behind = [
        source
        for source in TRANSFORM_INPUTS[table]
        if (cursors.get(source) if isinstance(cursors, dict) else None)
        != _reached(_head(ingestion, EXTRACT_STAGE, source))
    ]
    return f"its cursor is behind the extract of {', '.join(behind)}" if behind else None


def load_behind(processed: Bucket, table: str) -> str | None:
    """Why the table's load has work left from earlier runs (a transform batch it has not taken, or fact rows it
    holds back), or None."""
    saved = ReaderState(processed, LOAD_STAGE, table).read()
    if saved is not None and saved.get("held"):
        return "it holds fact rows back for a missing dimension row"
    if table in FACTS and saved is not None and not _remembered(saved):
        return "its cursor does not remember the newest version it loaded (the load reads it again)"
    head = _head(processed, TRANSFORM_STAGE, table)
    if saved is None:  # never loaded: work as soon as the transform has written a batch
        return "its transform has batches it never loaded" if head.stored and head.seq >= head.base else None
    return "its cursor is behind its transform" if saved.get("cursor") != _reached(head) else None


def known_state(ingestion: Bucket, processed: Bucket) -> dict[str, dict[str, Any]]:
    """Each source table's watermark (its extract head) and each fact's newest loaded version (its load cursor),
    as stored; one that cannot be read is left out (the report then measures nothing for the facts it concerns)."""
    watermarks: dict[str, Any] = {}
    newest: dict[str, Any] = {}
    for table in SOURCE_TABLES:
        try:
            watermarks[table] = _head(ingestion, EXTRACT_STAGE, table).state.get(WATERMARK)
        except Exception:  # noqa: S112 - not believed, not measured
            continue
    for fact in FACTS:
        try:
            saved = ReaderState(processed, LOAD_STAGE, fact).read()
        except Exception:  # noqa: S112 - not believed, not measured
            continue
        if saved is not None and _remembered(saved):
            newest[fact] = saved[NEWEST_LOADED]
    return {WATERMARK: watermarks, NEWEST_LOADED: newest}


def _remembered(saved: dict[str, Any]) -> bool:
    """Whether a fact's load cursor holds a believable newest loaded version (None: the fact is empty)."""
    if NEWEST_LOADED not in saved:
        return False
    value = saved[NEWEST_LOADED]
    try:
        return value is None or (isinstance(value, str) and datetime.fromisoformat(value) is not None)
    except ValueError:
        return False


def _checked(reasons: dict[str, str], key: str, why: Callable[[], str | None]) -> bool:
    """Record why the table has work; a check that raises is a doubt, and a doubt is work."""
    try:
        found = why()
    except Exception as error:  # any doubt plans the table, whose stage then reports it
        found = _doubt(error)
    if found:
        reasons[key] = found
    return bool(found)


def plan_run(
    options: dict[str, Any],
    *,
    con: Callable[[], pg8000.native.Connection],
    ingestion: Bucket,
    processed: Bucket,
    signal_max_age: timedelta,
) -> RunPlan:
    """The tables with work in this run. ``con`` opens the source connection, only when a change signal must be
    read (a run mode plans every table it names without asking the source)."""
    tables = _listed(options, "tables", SOURCE_TABLES)
    warehouse = _listed(options, "warehouse_tables", WAREHOUSE_TABLES)
    dimensions = [t for t in _listed(options, "dimensions", DIMENSIONS) if t in warehouse]
    facts = [t for t in _listed(options, "facts", FACTS) if t in warehouse]
    mode = next((m for m in MODES if options.get(m) is True), None)
    reasons: dict[str, str] = {}
    if mode is not None:  # a full refresh, repair or reconciliation does every table it names, as asked
        reasons = {f"{EXTRACT_STAGE} {t}": f"the run is a {mode.replace('_', ' ')}" for t in tables}
        return RunPlan(tables, warehouse, dimensions, facts, reasons, heavy=f"the run is a {mode.replace('_', ' ')}")

    if options.get("ignore_change_signal") is True:  # read the named tables without trusting their counters
        reasons = {f"{EXTRACT_STAGE} {t}": "the run ignores the change signal" for t in tables}
        extract = list(tables)
    else:
        extract = []

    opened: dict[str, Any] = {}

    def source() -> pg8000.native.Connection:
        """The source connection, opened once; a failure to open it is every table's doubt, raised again."""
        if "error" in opened:
            raise opened["error"]
        if "con" not in opened:
            try:
                opened["con"] = con()
            except Exception as error:
                opened["error"] = error
                raise
        return opened["con"]

    def changed(table: str) -> str | None:
        log = BatchLog(ingestion, EXTRACT_STAGE, table)
        if skips_on_signal(source(), log, signal_max_age=signal_max_age):
            return None
        return "its change signal moved, cannot tell, or its scan is due"

    extract = extract or [t for t in tables if _checked(reasons, f"{EXTRACT_STAGE} {t}", lambda t=t: changed(t))]

    transform = []
    for table in warehouse:
        fed = [name for name in TRANSFORM_INPUTS[table] if name in extract]
        if fed:
            reasons[f"{TRANSFORM_STAGE} {table}"] = (
                f"{', '.join(fed)} {'is' if len(fed) == 1 else 'are'} extracted in this run"
            )
            transform.append(table)
        elif _checked(reasons, f"{TRANSFORM_STAGE} {table}", lambda t=table: transform_behind(ingestion, processed, t)):
            transform.append(table)

    def loads(candidates: list[str]) -> list[str]:
        chosen = []
        for table in candidates:
            if table in transform:
                reasons[f"{LOAD_STAGE} {table}"] = "it is transformed in this run"
                chosen.append(table)
            elif _checked(reasons, f"{LOAD_STAGE} {table}", lambda t=table: load_behind(processed, t)):
                chosen.append(table)
        return chosen

    unchanged = [t for t in tables if t not in extract]
    return RunPlan(extract, transform, loads(dimensions), loads(facts), reasons, known_state(ingestion, processed),
                   unchanged, heavy=_heavy(options, extract, reasons, ingestion))  # fmt: skip


def _heavy(options: dict[str, Any], extract: list[str], reasons: dict[str, str], ingestion: Bucket) -> str | None:
    """Why this incremental run's work goes to the Standard child, or None (Express): what the plan cannot bound."""
    if options.get(STANDARD_WORKFLOW) is True:
        return "the run asks for the Standard workflow (a re-run)"
    doubted = sorted(key for key, why in reasons.items() if why.startswith("its state could not be read"))
    if doubted:
        return f"the plan could not tell about {doubted[0]}"
    for table in extract:
        try:
            first = not _head(ingestion, EXTRACT_STAGE, table).stored
        except Exception:  # not believed: its extract says what is wrong, in the Standard child
            first = True
        if first:
            return f"{table} was never extracted: its first load reads the whole table"
    return None
