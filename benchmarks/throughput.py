"""Throughput of the pipeline against the floor PostgreSQL sets, on generated totesys data.

    python -m benchmarks.throughput [--sales-orders N] [--serial] [--tracemalloc] [--profile STAGE] [--keep]
                                    [--partition-rows N]

In one process, on one machine and one copy of the data, it measures:

1. reference: `COPY (SELECT * FROM t) TO STDOUT` of the eleven source tables into memory, then `COPY t FROM
   STDIN` of the same bytes into empty copies of the tables (primary keys, no foreign keys) in a scratch
   database, one table after another: the least any pipeline must spend to move these rows;
2. the full initial load: `statemachine.local.runner.run` (the real state machine on moto, the real handlers)
   into a fresh warehouse and a fresh lake;
3. an incremental run after 1% of the sales orders changed;
4. a run in which nothing changed;
5. a reconciliation (`{"reconcile": true}`): every source table compared with the lake per key range, and every
   warehouse table with the processed lake; the first one builds the ledgers from the logs' bases, so a second
   one follows (the next night's: from the checkpoints, with the next content share);
6. with --partition-rows N, a full refresh whose whole-table reads are split into key ranges of about N rows
   (EXTRACT_PARTITION_ROWS forced small: lambdas/extract/partitioned.py), each range its own invocation;
7. the memory of every Lambda invocation (see benchmarks/instrument.py for the method).

The totesys is generated once per size with `statemachine.local.sample_data` in an embedded PostgreSQL under
benchmarks/.data/ and kept there with --keep, so the next run at that size skips the seeding; every run works
on a fresh copy of it. Figures go to stdout once (the tables and the targets, with the scale the targets apply
at), and to benchmarks/results/latest.json and, as markdown for the README, latest.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import platform
import pstats
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from benchmarks import report
from benchmarks.instrument import Instruments, MemoryProbe, cold_rss
from lambdas.common.db import connect, identifier
from lambdas.common.tables import SOURCE_TABLES
from lambdas.extract.partitioned import PARTITION_ROWS_ENV
from statemachine.local import postgres, runner, sample_data
from statemachine.local.deployment import Deployment, synthesized_deployment
from statemachine.local.report import progress_line

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA_DIR = HERE / ".data"
RESULTS = HERE / "results" / "latest.json"
MARKDOWN = RESULTS.with_suffix(".md")
SOURCE_DB, WAREHOUSE_DB, SCRATCH_DB = "bench_source", "bench_warehouse", "bench_scratch"
CHANGE_1_PERCENT = (
    "UPDATE sales_order SET units_sold = units_sold + 1, last_updated = now() WHERE sales_order_id % 100 = 0"
)
STAGES = ("extract", "transform", "load")
RUNS = (("full", "full load"), ("incremental", "incremental 1%"), ("no-change", "no change"),
        ("reconcile", "reconciliation"), ("reconcile-again", "reconciliation again"))  # fmt: skip
RUN_INPUTS: dict[str, dict[str, Any]] = {"reconcile": {"reconcile": True}, "reconcile-again": {"reconcile": True},
                                         "partitioned": {"full_refresh": True}}  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sales-orders",
        type=int,
        default=report.TARGET_SALES_ORDERS,
        metavar="N",
        help="size of the generated totesys (default 1,000,000; purchase orders, transactions, "
        "payments and designs grow with it as sample_data makes them)",
    )
    parser.add_argument(
        "--serial",
        action="store_true",
        help="one Lambda invocation at a time (a lock around the handlers): memory figures per invocation, and "
        "Lambda work as separate Lambdas would do it; wall times are then not the pipeline's",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also trace the Python heap (slows Python code several-fold: read memory, not times, from such a run)",
    )
    parser.add_argument(
        "--profile",
        choices=STAGES,
        action="append",
        default=[],
        metavar="STAGE",
        help="cProfile the invocations of a stage (extract, transform or load; repeat for several) in one run "
        "(--profile-run) and print its top 25 functions by cumulative time",
    )
    parser.add_argument(
        "--profile-run",
        choices=[key for key, _ in RUNS],
        default="full",
        help="the run whose invocations --profile profiles (default: full)",
    )
    parser.add_argument(
        "--partition-rows",
        type=int,
        default=0,
        metavar="N",
        help="add a full refresh whose whole-table reads are split into key ranges of about N rows (the extract's "
        "EXTRACT_PARTITION_ROWS forced to N; every table with more rows is read by several invocations)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the generated totesys (reused by the next run of this size) and the last "
        "run's warehouse and lake under benchmarks/.data/",
    )
    return parser


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# --- the data ---------------------------------------------------------------------------------------------------


def _template_name(sales_orders: int) -> str:
    return f"totesys_{sales_orders}"


def _database_exists(admin: dict[str, Any], name: str) -> bool:
    con = connect({**admin, "dbname": "postgres"})
    try:
        return bool(con.run("SELECT 1 FROM pg_database WHERE datname = :n", n=name))
    finally:
        con.close()


def _drop_database(admin: dict[str, Any], name: str) -> None:
    con = connect({**admin, "dbname": "postgres"})
    try:
        con.run(f"DROP DATABASE IF EXISTS {identifier(name)} WITH (FORCE)")
    finally:
        con.close()


def _generate(server: postgres.EmbeddedServer, sales_orders: int) -> tuple[str, bool]:
    """The seeded totesys of this size (generated unless a kept one exists); True when generated now."""
    name = _template_name(sales_orders)
    if _database_exists(server.admin, name):
        con = connect(server.credentials(name))
        try:
            if sample_data.is_seeded(con):
                return name, False
        finally:
            con.close()
        _drop_database(server.admin, name)  # a seeding that was interrupted
    # sample_data makes round(11,200 x scale) sales orders (its scale-1 volume), so this scale gives exactly N.
    scale = sales_orders / sample_data._SALES_ORDERS
    _say(f"Generating totesys with {sales_orders:,} sales orders (sample_data scale {scale:.2f}) …")
    started = time.monotonic()
    postgres.ensure_database(server.admin, name)
    counts = postgres.seed_totesys(server.credentials(name), scale=scale) or {}
    con = connect(server.credentials(name))
    try:
        con.run("VACUUM (FREEZE, ANALYZE)")  # as a production database would be: hint bits set, statistics known
    finally:
        con.close()
    _say(f"  {sum(counts.values()):,} rows in {len(counts)} tables, {time.monotonic() - started:.0f} s")
    return name, True


def _fresh_databases(server: postgres.EmbeddedServer, template: str) -> None:
    """A copy of the generated totesys (the runs change it), an empty warehouse and an empty scratch database."""
    for name in (SOURCE_DB, WAREHOUSE_DB, SCRATCH_DB):
        _drop_database(server.admin, name)
    con = connect({**server.admin, "dbname": "postgres"})
    try:
        con.run(f"CREATE DATABASE {identifier(SOURCE_DB)} TEMPLATE {identifier(template)} STRATEGY FILE_COPY")
    finally:
        con.close()
    postgres.ensure_database(server.admin, WAREHOUSE_DB)
    postgres.ensure_database(server.admin, SCRATCH_DB)


def _table_rows(credentials: dict[str, Any]) -> dict[str, int]:
    con = connect(credentials)
    try:
        return {table: int(con.run(f"SELECT count(*) FROM {identifier(table)}")[0][0]) for table in SOURCE_TABLES}  # noqa: S608 - contract table quoted by identifier()
    finally:
        con.close()


# --- 1. the reference -------------------------------------------------------------------------------------------


@dataclass
class CopyFigures:
    table: str
    rows: int
    bytes: int
    out_seconds: float
    in_seconds: float


def _chunks(buffer: io.BytesIO, size: int = 1 << 20) -> Iterator[memoryview]:
    """pg8000 sends each item of an iterable as one CopyData message (a file goes in 8 KiB messages)."""
    view = buffer.getbuffer()
    for start in range(0, len(view), size):
        yield view[start : start + size]


def _reference(server: postgres.EmbeddedServer) -> list[CopyFigures]:
    _drop_database(server.admin, SCRATCH_DB)  # measured twice (before and after the runs): empty tables each time
    postgres.ensure_database(server.admin, SCRATCH_DB)
    source, scratch = connect(server.credentials(SOURCE_DB)), connect(server.credentials(SCRATCH_DB))
    try:
        sample_data.create_schema(scratch)
        # Foreign keys would be checked row by row; the floor is moving the bytes into indexed tables.
        for table, constraint in scratch.run(
            "SELECT conrelid::regclass::text, conname FROM pg_constraint WHERE contype = 'f'"
        ):
            scratch.run(f"ALTER TABLE {identifier(table)} DROP CONSTRAINT {identifier(constraint)}")
        figures = []
        for table in SOURCE_TABLES:
            buffer = io.BytesIO()
            started = time.monotonic()
            source.run(f"COPY (SELECT * FROM {identifier(table)}) TO STDOUT", stream=buffer)  # noqa: S608 - contract table quoted by identifier()
            out_seconds = time.monotonic() - started
            rows = source.row_count
            started = time.monotonic()
            scratch.run(f"COPY {identifier(table)} FROM STDIN", stream=_chunks(buffer))
            in_seconds = time.monotonic() - started
            figures.append(CopyFigures(table, rows, buffer.getbuffer().nbytes, out_seconds, in_seconds))
            del buffer
        return figures
    finally:
        source.close()
        scratch.close()


# --- 2-4. pipeline runs -----------------------------------------------------------------------------------------


def _progress(invocation: runner.Invocation) -> None:
    _say(progress_line(invocation))
    if not invocation.ok:
        _say(f"      {invocation.result.get('errorMessage', '')}"[:300])


def _failure(outcome: runner.RunOutcome) -> str:
    """One line for the report: the failed tables and their first error, or the execution's error."""
    try:
        failed = json.loads(outcome.cause or "")["failed_tables"]
        tables = ", ".join(f"{f['stage']} {f['table']}" for f in failed)
        return f"{outcome.error}: {tables} ({failed[0]['error']}: {failed[0]['message']})"[:300]
    except (ValueError, KeyError, IndexError, TypeError):
        return " ".join(f"{outcome.error}: {outcome.cause}".split())[:300]


reconciled: dict[str, int] = {}  # what the reconciliation run found, for the report


def _pipeline_run(
    key: str,
    label: str,
    serial: bool,
    server: postgres.EmbeddedServer,
    lake: Path,
    instruments: Instruments,
    deployment: Deployment | None = None,
) -> report.RunFigures:
    _say(f"Pipeline run: {label}")
    started = time.monotonic()
    outcome = runner.run(
        source=server.credentials(SOURCE_DB, postgres.READER_ROLE),
        warehouse=server.credentials(WAREHOUSE_DB),
        lake_dir=lake,
        execution_input=RUN_INPUTS.get(key, {}),
        on_invocation=_progress,
        handlers=instruments.handlers(),
        deployment=deployment,
    )
    wall = time.monotonic() - started
    found = [i.result["reconciled"] for i in outcome.invocations if i.ok and "reconciled" in i.result]
    if found and key == "reconcile":
        reconciled.update(
            reconcile_source_rows_read=sum(r["source_rows_read"] for r in found),
            reconcile_drift=sum(r["rows_changed"] + r["rows_missing"] + r["rows_deleted"] for r in found),
            reconcile_ranges=sum(r["ranges_compared"] for r in found),
        )
        _say(
            f"  reconciled {reconciled['reconcile_ranges']:,} key ranges; re-read "
            f"{reconciled['reconcile_source_rows_read']:,} source rows; {reconciled['reconcile_drift']:,} drifted"
        )
    error = "" if outcome.succeeded else _failure(outcome)
    figures = report.RunFigures.of(key, label, serial, wall, instruments.windows, outcome.status, error)
    _say(f"  {outcome.status} in {wall:.1f} s, Lambda work {figures.work:.1f} s")
    return figures


# The tables a no-change run must not scan: the largest of totesys, and the ones without an index on last_updated
# that a window would read by a sequential scan.
BIG_TABLES = ("sales_order", "transaction", "payment", "purchase_order")


def _rows_scanned(server: postgres.EmbeddedServer) -> dict[str, int]:
    """Rows read so far by sequential scans of the big source tables, by the server's own statistics."""
    con = connect(server.credentials(SOURCE_DB))
    try:
        con.run("SELECT pg_stat_clear_snapshot()")
        rows = con.run(
            "SELECT relname, seq_tup_read FROM pg_stat_user_tables WHERE relname = ANY(:tables)",
            tables=list(BIG_TABLES),
        )
        return {name: int(n) for name, n in rows}
    finally:
        con.close()


def _change_one_percent(server: postgres.EmbeddedServer) -> int:
    con = connect(server.credentials(SOURCE_DB))
    try:
        con.run(CHANGE_1_PERCENT)
        return con.row_count
    finally:
        con.close()


def _print_profile(profiles: list[cProfile.Profile], stage: str, run: str) -> None:
    if not profiles:
        return
    text = io.StringIO()
    stats = pstats.Stats(*profiles, stream=text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    dump = RESULTS.parent / f"profile-{stage}-{run}.prof"
    stats.dump_stats(dump)
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(15)
    _say(
        f"\nProfile of the {len(profiles)} {stage} invocations of the {run} run, summed over threads (Arrow's C++ "
        f"and the server's time show as the Python call that waited for them); saved as {dump.relative_to(REPO)}"
    )
    _say(text.getvalue())


# --- main -------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.sales_orders < 1:
        raise SystemExit("--sales-orders must be at least 1")
    if args.partition_rows < 0:
        raise SystemExit("--partition-rows must be at least 1 (or 0, the default: no partitioned run)")
    lake = DATA_DIR / "lake"  # the runner writes the handlers' logs under lake/logs/
    shutil.rmtree(lake, ignore_errors=True)

    server = postgres.start(DATA_DIR / "postgres", keep_running=False)
    generated = False
    template = _template_name(args.sales_orders)
    try:
        template, generated = _generate(server, args.sales_orders)
        _fresh_databases(server, template)
        source_rows = _table_rows(server.credentials(SOURCE_DB))

        _say("Reference: COPY out of totesys and into a scratch database …")
        reference = _reference(server)

        runs: list[report.RunFigures] = []
        scanned: dict[str, int] = {}  # rows the no-change runs read by sequential scans of the big source tables
        profiled: dict[str, list[cProfile.Profile]] = {}
        changed = 0
        with MemoryProbe(trace_python=args.tracemalloc) as probe:
            baseline = {"arrow_bytes": pa.total_allocated_bytes(), "exact_rss_peaks": probe.exact_rss_peaks}
            plan = [(key, label, args.serial) for key, label in RUNS]
            if not args.serial:  # the Lambda work of a no-change run, without threads competing for the GIL
                plan.append(("no-change-serial", "no change, serial", True))
            partitioned = None
            if args.partition_rows:
                plan.append(("partitioned", f"full refresh, key ranges of {args.partition_rows:,} rows", args.serial))
                partitioned = synthesized_deployment().with_environment(
                    "extract", **{PARTITION_ROWS_ENV: str(args.partition_rows)}
                )
            for key, label, serial in plan:
                if key == "incremental":
                    changed = _change_one_percent(server)
                    _say(f"Changed {changed:,} sales orders (1%).")
                profile = args.profile if key == args.profile_run else ()
                instruments = Instruments(probe, serial=serial, profile=profile)
                before = _rows_scanned(server) if key.startswith("no-change") else {}
                deployment = partitioned if key == "partitioned" else None
                runs.append(_pipeline_run(key, label, serial, server, lake, instruments, deployment))
                if before:
                    after = _rows_scanned(server)
                    for table, rows in after.items():
                        scanned[table] = scanned.get(table, 0) + rows - before[table]
                profiled.update(instruments.profiles)
                if not runs[-1].succeeded:
                    _say("Stopping here: the next runs would redo the failed work rather than measure their own.")
                    break
        for stage, profiles in profiled.items():
            _print_profile(profiles, stage, args.profile_run)
        _say("Reference again, after the runs …")
        reference_after = _reference(server)

        results = report.Results(
            config={
                "sales_orders": args.sales_orders,
                "serial": args.serial,
                "tracemalloc": args.tracemalloc,
                "profile": ", ".join(args.profile),
                "changed_rows": changed,
                **({"no_change_rows_scanned": scanned} if scanned else {}),
                "partition_rows": args.partition_rows,
                **reconciled,
            },
            machine=_machine(server),
            source_rows=source_rows,
            reference=[vars(r) for r in reference],
            runs=runs,
            cold_rss=cold_rss(REPO),
            memory_baseline=baseline,
            reference_after=[vars(r) for r in reference_after],
        )
        _say("")
        _say(results.text())
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results.as_json(), indent=1, default=str) + "\n", encoding="utf-8")
        MARKDOWN.write_text(results.markdown(), encoding="utf-8")
        _say(f"\nThe same as JSON: {RESULTS.relative_to(REPO)}; as markdown for the README: "
             f"{MARKDOWN.relative_to(REPO)}")  # fmt: skip
        return 0 if all(run.succeeded for run in runs) else 1
    finally:
        if not args.keep:
            for name in (SOURCE_DB, WAREHOUSE_DB, SCRATCH_DB) + ((template,) if generated else ()):
                _drop_database(server.admin, name)
            shutil.rmtree(lake, ignore_errors=True)
        server.release()


def _machine(server: postgres.EmbeddedServer) -> dict[str, Any]:
    import os
    import subprocess

    con = connect(server.credentials("postgres"))
    try:
        postgres_version = con.run("SHOW server_version")[0][0]
    finally:
        con.close()

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)  # noqa: S603, S607 - git from PATH with fixed arguments, to label the figures
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": git("status", "--porcelain", "--", "lambdas", "statemachine").splitlines(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pyarrow": pa.__version__,
        "postgresql": postgres_version,
    }


if __name__ == "__main__":
    sys.exit(main())
