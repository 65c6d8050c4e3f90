"""The benchmark's figures: the table, the targets with PASS/MISS, the same as markdown, and as JSON."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.instrument import METHOD, Window
from lambdas.extract.partitioned import RANGE_EXTRACTED

# The Maps of pipeline.asl.json in their order (loads split as the ASL splits them); other tasks follow as seen.
MAPS = ("extract", "transform", "load dimensions", "load facts")
ROWS_KEY = {"load dimensions": "rows_written", "load facts": "rows_written"}  # the others report "rows"
MiB = 1 << 20
GiB = 1 << 30

STEP_HEADER = ["step", "seconds", "Lambda Σ s", "Σ CPU s", "rows", "rows/s", "× reference"]
MEMORY_HEADER = ["Map", "invocations", "Arrow peak MiB", "Python Δ MiB", "RSS Δ MiB", "est. Lambda MiB", "largest"]
TARGET_HEADER = ["target", "measured", "verdict", "margin", "how"]
TARGET_SALES_ORDERS = 1_000_000  # the scale the targets are stated for (and the benchmark's default)

STEP_NOTES = """\
seconds: wall time. runner.run: the whole local execution (moto set-up and lake restore included); pipeline: first
Lambda start to last Lambda end; a Map: its first invocation's start to its last one's end. Lambda Σ: the sum of
the invocations' wall times; side by side in threads they include waiting for the GIL and the cores, so the
serial run (one at a time, as separate Lambdas would run) is the one to read for Lambda work. Σ CPU: the invoking
threads' CPU time (without Arrow's worker threads and the server). × reference: seconds / reference total."""


@dataclass
class MapFigures:
    name: str
    invocations: int
    wall: float  # first invocation start to last invocation end
    work: float  # sum of the invocations' seconds
    cpu: float  # sum of the invoking threads' CPU seconds
    rows: int


def _span(windows: list[Window]) -> float:
    if not windows:
        return 0.0
    return max(w.started + w.seconds for w in windows) - min(w.started for w in windows)


@dataclass
class RunFigures:
    key: str  # full, incremental, no-change, no-change-serial
    label: str
    serial: bool
    wall: float  # the whole runner.run call, moto set-up and lake restore included
    windows: list[Window]
    status: str = "SUCCEEDED"
    error: str = ""
    maps: list[MapFigures] = field(default_factory=list)

    @staticmethod
    def of(
        key: str, label: str, serial: bool, wall: float, windows: list[Window], status: str, error: str
    ) -> RunFigures:
        run = RunFigures(key, label, serial, wall, sorted(windows, key=lambda w: w.started), status, error)
        names = list(MAPS) + [w.map for w in run.windows if w.map not in MAPS]
        for name in dict.fromkeys(names):
            mine = [w for w in run.windows if w.map == name]
            if mine:
                # a partitioned extract's ranges carry rows too: its commit counts them once, as the table's result
                rows = sum(int(w.result.get(ROWS_KEY.get(name, "rows"), 0) or 0) for w in mine
                           if w.result.get("status") != RANGE_EXTRACTED)  # fmt: skip
                work, cpu = sum(w.seconds for w in mine), sum(w.cpu for w in mine)
                # A task outside the Maps (the lease, the report) runs at both ends: its span would be the whole run.
                wall = _span(mine) if name in MAPS else work
                run.maps.append(MapFigures(name, len(mine), wall, work, cpu, rows))
        return run

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    @property
    def name(self) -> str:
        return self.label if self.succeeded else f"{self.label} ({self.status})"

    @property
    def pipeline(self) -> float:
        """From the first Lambda's start to the last one's end: the execution without the local harness."""
        return _span(self.windows)

    @property
    def work(self) -> float:
        return sum(w.seconds for w in self.windows)

    @property
    def cpu(self) -> float:
        return sum(w.cpu for w in self.windows)

    @property
    def rows_extracted(self) -> int:
        return sum(m.rows for m in self.maps if m.name == "extract")


@dataclass
class Step:
    step: str
    seconds: float
    work: float | None
    cpu: float | None
    rows: int
    ratio: float | None

    def cells(self) -> list[str]:
        return [
            self.step,
            f"{self.seconds:,.2f}",
            "" if self.work is None else f"{self.work:,.2f}",
            "" if self.cpu is None else f"{self.cpu:,.2f}",
            f"{self.rows:,}" if self.rows else "",
            f"{self.rows / self.seconds:,.0f}" if self.rows and self.seconds > 0 else "",
            "" if self.ratio is None else f"{self.ratio:.2f}",
        ]


@dataclass
class Verdict:
    target: str
    value: float | None  # None: not measured, because a run it needs did not succeed
    limit: float
    show: Callable[[float], str]
    detail: str

    @property
    def met(self) -> bool:
        return self.value is not None and self.value <= self.limit

    def cells(self) -> list[str]:
        if self.value is None:
            return [self.target, "n/a", "MISS", "", self.detail]
        margin = f"{'under' if self.met else 'over'} by {self.show(abs(self.limit - self.value))}"
        return [self.target, self.show(self.value), "PASS" if self.met else "MISS", margin, self.detail]

    def as_json(self) -> dict[str, Any]:
        return {"target": self.target, "value": self.value, "limit": self.limit, "met": self.met, "how": self.detail}


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MiB:,.0f}"


@dataclass
class Results:
    config: dict[str, Any]
    machine: dict[str, Any]
    source_rows: dict[str, int]
    reference: list[dict[str, Any]]  # per table: rows, bytes, out_seconds, in_seconds; measured before the runs
    runs: list[RunFigures]
    cold_rss: dict[str, int | None]
    memory_baseline: dict[str, Any]
    reference_after: list[dict[str, Any]] = field(default_factory=list)  # the same, measured after the runs

    def run(self, key: str) -> RunFigures | None:
        """The run, if it took place and succeeded."""
        return next((r for r in self.runs if r.key == key and r.succeeded), None)

    def missing(self, *keys: str) -> str:
        """Why a target cannot be measured: the first of its runs that failed or did not take place."""
        for key in keys:
            if self.run(key) is None:
                failed = next((r for r in self.runs if r.key == key), None)
                return f"{failed.name}: {failed.error}" if failed else "not run: an earlier run did not succeed"
        return ""

    @property
    def references(self) -> list[list[dict[str, Any]]]:
        """The reference as measured before the runs and, when it was, after them."""
        return [r for r in (self.reference, self.reference_after) if r]

    @property
    def reference_seconds(self) -> float:
        """The floor: the mean of the reference before and after the runs. The machines' speed drifts over a
        benchmark's minutes (runs of the same code measured 2.6 × to 3.2 ×), so one measurement at one end would
        move every ratio with it."""
        totals = [sum(r["out_seconds"] + r["in_seconds"] for r in ref) for ref in self.references]
        return sum(totals) / len(totals)

    def steps(self) -> list[Step]:
        rows, floor = sum(r["rows"] for r in self.reference), self.reference_seconds
        steps = []
        for when, ref in zip(("before", "after"), self.references, strict=False):
            copy_out, copy_in = (sum(r[k] for r in ref) for k in ("out_seconds", "in_seconds"))
            steps += [
                Step(f"reference {when}: COPY TO STDOUT, 11 tables", copy_out, None, None, rows, None),
                Step(f"reference {when}: COPY FROM STDIN, 11 tables", copy_in, None, None, rows, None),
            ]
        label = "mean of before and after" if len(self.references) > 1 else "total"
        steps.append(Step(f"reference: {label} (the floor)", floor, None, None, rows, 1.0))
        for run in self.runs:
            rows = run.rows_extracted
            steps.append(Step(f"{run.name}: runner.run", run.wall, run.work, run.cpu, rows, run.wall / floor))
            steps.append(Step(f"{run.name}: pipeline", run.pipeline, run.work, run.cpu, rows, run.pipeline / floor))
            for m in run.maps:
                failed = sum(1 for w in run.windows if w.map == m.name and not w.ok)
                name = f"  {m.name} ({m.invocations}" + (f", {failed} failed)" if failed else ")")
                steps.append(Step(name, m.wall, m.work, m.cpu, m.rows, m.wall / floor))
        return steps

    def lambda_peak(self, window: Window) -> int | None:
        cold, growth = self.cold_rss.get(window.function), window.rss_growth
        return None if cold is None or growth is None else cold + growth

    def memory_rows(self) -> list[list[str]]:
        """Per Map over all runs: the largest of each figure, and the invocation with the largest Lambda estimate."""
        rows = []
        for name in dict.fromkeys(m.name for run in self.runs for m in run.maps):
            windows = [(run, w) for run in self.runs for w in run.windows if w.map == name]
            run, worst = max(windows, key=lambda rw: (self.lambda_peak(rw[1]) or 0, rw[1].arrow_peak))
            python = [w.python_growth for _, w in windows if w.python_growth is not None]
            rss = [w.rss_growth for _, w in windows if w.rss_growth is not None]
            rows.append(
                [
                    name,
                    str(len(windows)),
                    _mib(max(w.arrow_peak for _, w in windows)),
                    _mib(max(python, default=None)),
                    _mib(max(rss, default=None)),
                    _mib(self.lambda_peak(worst)),
                    f"{worst.table or worst.function} ({run.name})",
                ]
            )
        return rows

    def targets(self) -> list[Verdict]:
        full, incremental = self.run("full"), self.run("incremental")
        no_change = self.run("no-change-serial") or self.run("no-change")
        peaks = [(p, run, w) for run in self.runs for w in run.windows if (p := self.lambda_peak(w)) is not None]
        peak, run, window = max(peaks, key=lambda p: p[0]) if peaks else (None, None, None)
        floor = self.reference_seconds

        def times(v: float) -> str:
            return f"{v:.2f} ×"

        def share(v: float) -> str:
            return f"{v:.1%}"

        def seconds(v: float) -> str:
            return f"{v:.2f} s"

        def gib(v: float) -> str:
            return f"{v:.2f} GiB"

        def rows(v: float) -> str:
            return f"{v:,.0f} rows"

        full_load = Verdict("full initial load ≤ 2 × reference", None, 2.0, times, self.missing("full"))
        incremental_run = Verdict(
            "incremental (1%) ≤ 5% of the full load", None, 0.05, share, self.missing("full", "incremental")
        )
        no_change_work = Verdict("no-change run ≤ 2 s Lambda work", None, 2.0, seconds, self.missing("no-change"))
        no_change_scans = Verdict(
            "no-change run scans no big source table", None, 0.0, rows,
            self.missing("no-change") or "not measured",
        )  # fmt: skip
        memory = Verdict("peak memory per invocation ≤ 1 GiB", None, 1.0, gib, "not measured")
        reconciliation = Verdict(
            "reconciliation, nothing drifted, the first, ≤ 25% of the full load", None, 0.25, share,
            self.missing("full", "reconcile"),
        )  # fmt: skip
        again = Verdict(
            "a later reconciliation (from its checkpoints), ≤ 25% of the full load", None, 0.25, share,
            self.missing("full", "reconcile-again"),
        )  # fmt: skip
        reconciled, later = self.run("reconcile"), self.run("reconcile-again")
        if full and later:
            again.value = later.pipeline / full.pipeline
            again.detail = f"pipeline {later.pipeline:.1f} s / {full.pipeline:.1f} s; the next content share"
        if full and reconciled:
            reconciliation.value = reconciled.pipeline / full.pipeline
            reconciliation.detail = (
                f"pipeline {reconciled.pipeline:.1f} s / {full.pipeline:.1f} s; source rows re-read "
                f"{self.config.get('reconcile_source_rows_read', 0):,}, "
                f"drifted rows {self.config.get('reconcile_drift', 0):,}"
            )
        if full:
            full_load.value = full.pipeline / floor
            full_load.detail = (
                f"pipeline {full.pipeline:.1f} s / reference {floor:.1f} s (whole runner.run {full.wall / floor:.2f} ×)"
            )
        if full and incremental:
            incremental_run.value = incremental.pipeline / full.pipeline
            incremental_run.detail = (
                f"pipeline {incremental.pipeline:.1f} s / {full.pipeline:.1f} s (whole runner.run "
                f"{incremental.wall / full.wall:.1%}, Lambda Σ {incremental.work / full.work:.1%})"
            )
        if no_change:
            no_change_work.value = no_change.work
            no_change_work.detail = (
                f"{no_change.label}: Σ of {len(no_change.windows)} invocations (Σ CPU {no_change.cpu:.2f} s)"
            )
        scanned = self.config.get("no_change_rows_scanned")
        if no_change and isinstance(scanned, dict):
            no_change_scans.value = float(sum(scanned.values()))
            no_change_scans.detail = "rows read by sequential scans on the source during the no-change runs: " + (
                ", ".join(f"{table} {n:,}" for table, n in scanned.items())
            )
        if peak is not None and run and window:
            memory.value = peak / GiB
            memory.detail = f"est. Lambda {_mib(peak)} MiB: {window.function} {window.table}, {run.name}"
        verdicts = [full_load, incremental_run, no_change_work, no_change_scans, memory, reconciliation, again]
        return verdicts

    # --- output ---

    def headline(self) -> str:
        mode = "one at a time (--serial)" if self.config["serial"] else "as the ASL runs them (Map concurrency)"
        profiled = f"; {self.config['profile']} profiled, its times include cProfile" if self.config["profile"] else ""
        if self.config["tracemalloc"]:
            profiled += "; tracemalloc on, times include it"
        return (
            f"{self.config['sales_orders']:,} sales orders, {sum(self.source_rows.values()):,} source rows; "
            f"{self.machine['cpus']} CPUs, Python {self.machine['python']}, pyarrow {self.machine['pyarrow']}, "
            f"PostgreSQL {self.machine['postgresql']} (embedded); invocations {mode}{profiled}"
        )

    def scale_note(self) -> str:
        """The targets are stated for production-like volume; a smaller run only hints at them."""
        measured = self.config["sales_orders"]
        if measured == TARGET_SALES_ORDERS:
            return f"The targets apply at {TARGET_SALES_ORDERS:,} sales orders, the scale of this run."
        return (f"The targets apply at {TARGET_SALES_ORDERS:,} sales orders; this run has {measured:,}, so its "
                "verdicts only hint at them (fixed costs weigh more in a small run).")  # fmt: skip

    def text(self) -> str:
        """Each figure once, for the terminal; `markdown()` holds the same for the README."""
        steps, memory, targets = [s.cells() for s in self.steps()], self.memory_rows(), self.targets()
        cold = ", ".join(f"{name} {_mib(size)} MiB" for name, size in self.cold_rss.items())
        return "\n".join(
            [
                self.headline(),
                "source rows: " + ", ".join(f"{table} {rows:,}" for table, rows in self.source_rows.items()),
                "",
                _table(STEP_HEADER, steps),
                STEP_NOTES,
                "",
                _table(MEMORY_HEADER, memory),
                f"cold RSS (fresh interpreter + handler import): {cold}",
                METHOD,
                "",
                _table(TARGET_HEADER, [v.cells() for v in targets]),
                self.scale_note(),
            ]
        )

    def markdown(self) -> str:
        steps, memory, targets = [s.cells() for s in self.steps()], self.memory_rows(), self.targets()
        return "\n".join(
            [
                self.headline() + ".",
                "",
                *_markdown(STEP_HEADER, steps),
                "",
                *_markdown(MEMORY_HEADER, memory),
                "",
                *_markdown(TARGET_HEADER, [v.cells() for v in targets]),
                "",
                self.scale_note(),
                "",
            ]
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "machine": self.machine,
            "source_rows": self.source_rows,
            "reference": {
                "seconds": self.reference_seconds,
                "tables": self.reference,
                "tables_after": self.reference_after,
            },
            "runs": [
                {
                    "key": run.key,
                    "label": run.label,
                    "status": run.status,
                    "error": run.error,
                    "serial": run.serial,
                    "wall_seconds": run.wall,
                    "pipeline_seconds": run.pipeline,
                    "lambda_seconds": run.work,
                    "lambda_cpu_seconds": run.cpu,
                    "rows_extracted": run.rows_extracted,
                    "maps": [vars(m) for m in run.maps],
                    "invocations": [self._invocation(w) for w in run.windows],
                }
                for run in self.runs
            ],
            "memory": {"method": METHOD, "cold_rss_bytes": self.cold_rss, "baseline": self.memory_baseline},
            "steps": [dict(zip(STEP_HEADER, s.cells(), strict=True)) for s in self.steps()],
            "targets": [v.as_json() for v in self.targets()],
        }

    def _invocation(self, w: Window) -> dict[str, Any]:
        return {
            "function": w.function,
            "map": w.map,
            "table": w.table,
            "seconds": w.seconds,
            "cpu_seconds": w.cpu,
            "ok": w.ok,
            "result": w.result,
            "arrow_peak_bytes": w.arrow_peak,
            "rss_growth_bytes": w.rss_growth,
            "python_growth_bytes": w.python_growth,
            "est_lambda_peak_bytes": self.lambda_peak(w),
        }


def _is_number(cell: str) -> bool:
    return cell in ("", "n/a") or cell.replace(",", "").replace(".", "").isdigit()


def _numeric(header: list[str], rows: list[list[str]]) -> list[bool]:
    return [i > 0 and all(_is_number(r[i]) for r in rows) for i in range(len(header))]


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    numeric = _numeric(header, rows)

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric, strict=True))

    return "\n".join([line(header).rstrip(), "  ".join("-" * w for w in widths), *(line(r).rstrip() for r in rows)])


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---:" if n else "---" for n in _numeric(header, rows)]
    # Leading spaces (a Map under its run) would vanish in markdown: an en space keeps the indent visible.
    cells = [[c.replace("  ", "\u2002\u2002", 1) if c.startswith("  ") else c for c in r] for r in rows]
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(align) + "|",
        *("| " + " | ".join(r) + " |" for r in cells),
    ]
