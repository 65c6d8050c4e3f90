"""`python -m statemachine.local run`: the whole pipeline on this machine, exit code 0 iff it succeeded.

Without DSNs it starts an embedded PostgreSQL in the lake directory with a seeded `totesys` and an
empty `warehouse`; the buckets and watermarks persist there too, so the next run is incremental.
"""

from __future__ import annotations

import argparse
import fcntl
import sys
from pathlib import Path
from typing import Any

from analytics import dashboard_hint
from lambdas.common.db import credentials_from_dsn
from lambdas.common.tables import SOURCE_TABLES

RUN_COMMANDS = {
    "run": "execute pipeline.asl.json once, locally",
    "repair": "rebuild the chosen tables' lake from the source (new epoch) and bring the warehouse up to date; "
    "the fix for state that cannot be believed (docs/operations.md)",
    "reconcile": "compare each chosen source table with what the pipeline has taken, per key range, and feed "
    "the differences through the normal stages (docs/operations.md)",
}
EXIT_DRIFT = 3  # reconcile: the run succeeded and the warehouse is right now, but the source and the lake differed
EXIT_BUSY = 75  # EX_TEMPFAIL: nothing ran; try again when the other run has finished


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m statemachine.local", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in RUN_COMMANDS.items():
        run = commands.add_parser(name, help=text, description=text)
        run.add_argument("--source-dsn", help="totesys as a libpq URI (default: embedded, seeded sample data)")
        run.add_argument("--warehouse-dsn", help="the warehouse as a libpq URI (default: embedded)")
        run.add_argument("--lake-dir", type=Path, default=Path(".local"), help="buckets, state, logs (default .local/)")
        run.add_argument("--tables", help="comma-separated source tables (default: all 11)")
        run.add_argument("--full-refresh", action="store_true", help="re-read the chosen tables completely")
    stop = commands.add_parser("stop", help="stop the embedded PostgreSQL a run left running")
    stop.add_argument("--lake-dir", type=Path, default=Path(".local"))
    return parser


def _tables(value: str | None) -> list[str] | None:
    if value is None:
        return None
    tables = [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in tables if t not in SOURCE_TABLES]
    if unknown or not tables:
        raise SystemExit(f"--tables: unknown table {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(SOURCE_TABLES)}")  # fmt: skip
    return tables


def _passthrough(args: argparse.Namespace) -> list[str]:
    """The options of this command that a re-run must repeat (where to read, write and keep state)."""
    options = []
    for flag, value in (("--source-dsn", args.source_dsn), ("--warehouse-dsn", args.warehouse_dsn)):
        if value:
            options += [flag, value]
    if args.lake_dir != Path(".local"):
        options += ["--lake-dir", str(args.lake_dir)]
    return options


def _say(line: str) -> None:
    """One write per line: invocations report from the Map's worker threads."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from statemachine.local import postgres, report, runner

    if args.command == "stop":
        stopped = postgres.stop(args.lake_dir.resolve() / "postgres")
        print("stopped the embedded PostgreSQL" if stopped else "no embedded PostgreSQL was running")
        return 0
    tables = _tables(args.tables)

    lake_dir: Path = args.lake_dir.resolve()
    lake_dir.mkdir(parents=True, exist_ok=True)
    lock = (lake_dir / ".run.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"Another run is using {lake_dir}; not starting a second one at the same time.", file=sys.stderr)
        return EXIT_BUSY
    server = None
    try:
        if not (args.source_dsn and args.warehouse_dsn):
            print(f"Starting embedded PostgreSQL in {lake_dir / 'postgres'} …", flush=True)
            server = postgres.start(lake_dir / "postgres")
        if args.source_dsn:
            source: dict[str, Any] = credentials_from_dsn(args.source_dsn)
        else:
            assert server is not None
            postgres.ensure_database(server.admin, "totesys")
            seeded = postgres.seed_totesys(server.credentials("totesys"))
            if seeded:
                print(f"Seeded sample totesys: {sum(seeded.values()):,} rows in {len(seeded)} tables", flush=True)
            source = server.credentials("totesys", postgres.READER_ROLE)
        if args.warehouse_dsn:
            warehouse: dict[str, Any] = credentials_from_dsn(args.warehouse_dsn)
        else:
            assert server is not None
            postgres.ensure_database(server.admin, "warehouse")
            warehouse = server.credentials("warehouse")

        execution_input: dict[str, Any] = {}
        if tables:
            execution_input["tables"] = tables
        if args.full_refresh:
            execution_input["full_refresh"] = True
        if args.command in ("repair", "reconcile"):
            execution_input[args.command] = True
        print("Running statemachine/pipeline.asl.json …", flush=True)
        outcome = runner.run(
            source=source,
            warehouse=warehouse,
            lake_dir=lake_dir,
            execution_input=execution_input,
            on_invocation=lambda inv: _say(report.progress_line(inv)),
        )
        print()
        print(report.execution_graph(outcome))
        print()
        if not outcome.succeeded:
            print(report.failure_summary(outcome, _passthrough(args)))
            print()
        drift, drifted = report.drift_summary(outcome)
        if drift:
            print(drift)
            print()
        print(f"Lake (buckets, state, logs): {lake_dir}")
        warehouse_dsn = args.warehouse_dsn or (server.dsn("warehouse") if server else "")
        print(f"Warehouse: {warehouse_dsn}")
        print(dashboard_hint(lake_dir, args.warehouse_dsn))
        if server:
            print("  (the embedded server keeps running for queries; `python -m statemachine.local stop` stops it)")
        return (EXIT_DRIFT if drifted else 0) if outcome.succeeded else 1
    finally:
        if server is not None:
            server.release()


if __name__ == "__main__":
    sys.exit(main())
