"""`python -m statemachine.local run`: the whole pipeline on this machine, exit code 0 iff it succeeded.

Without DSNs it starts an embedded PostgreSQL in the lake directory with a seeded `totesys` and an
empty `warehouse`; the buckets and watermarks persist there too, so the next run is incremental.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analytics import WAREHOUSE_DSN_ENV, dashboard_hint, remember_warehouse, without_password
from lambdas.common.db import PASSWORD_ENV, connect, credentials_from_dsn, permission_denied, redact_dsn, where
from lambdas.common.errors import PipelineError, TransientError, truncated
from lambdas.common.tables import SOURCE_TABLES
from statemachine.local.redact import redacted_output

DEFAULT_LAKE = Path(".local")
SOURCE_DSN_ENV = "TOTESYS_SOURCE_DSN"
VIA_MAKE_ENV = "TOTESYS_VIA_MAKE"  # set by `make run`, so printed commands can be pasted the same way
PREFLIGHT_TIMEOUT = 2.5  # seconds to reach each database before the state machine starts

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_DRIFT = 3  # reconcile: the run succeeded and the warehouse is right now, but something differed on the way
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: a database cannot be reached or refuses us; nothing ran
EXIT_CANTCREAT = 73  # EX_CANTCREAT: the lake directory cannot be created or written
EXIT_BUSY = 75  # EX_TEMPFAIL: nothing ran; try again when the other run has finished
EXIT_CONFIG = 78  # EX_CONFIG: the CDK app does not synthesize, so there is no stack to run; nothing ran
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C; what finished is kept, the next run resumes
INTERRUPTED = "interrupted; the next run resumes where this one stopped"
EXIT_CODES = {
    EXIT_OK: "the execution succeeded",
    EXIT_FAILED: "the execution ran and failed (the failed tables and the command that re-runs them are printed)",
    EXIT_USAGE: "a mistake on the command line: unknown option or table, malformed DSN",
    EXIT_DRIFT: "reconcile succeeded, but the source and the lake differed (the differences were loaded), or the "
    "warehouse and the lake did (the warehouse's rows were restored)",
    EXIT_UNAVAILABLE: "a database cannot be reached, refuses the login, or lacks the tables or their grants; "
    "nothing ran",
    EXIT_CANTCREAT: "the lake directory cannot be created or written; nothing ran",
    EXIT_BUSY: "another run is using the same lake directory; nothing ran",
    EXIT_CONFIG: "the CDK app does not synthesize (the run executes the synthesized stack); nothing ran",
    EXIT_INTERRUPTED: f"Ctrl-C: {INTERRUPTED} (the execution is kept for statemachine.rerun)",
}


# The commands that start the state machine: their help, and what they add to the execution input. They share
# every option (add_run_options) and how options become credentials and input (run_request).
RUN_LIKE: dict[str, tuple[str, dict[str, Any]]] = {
    "run": ("execute pipeline.asl.json once, locally", {}),
    "repair": (
        "rebuild the chosen tables' lake from the source (a new epoch every reader follows) and bring the "
        "warehouse up to date: the fix a StateError names (docs/operations.md#repair)",
        {"repair": True},
    ),
    "reconcile": (
        "compare each chosen source table with what the pipeline has taken, per key range, and load what "
        "differs (docs/operations.md#reconciliation)",
        {"reconcile": True},
    ),
}


class UserError(Exception):
    """A mistake the person running the command can fix: shown as one line with its exit code, no traceback."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _epilog() -> str:
    environment = (
        f"environment:\n  {SOURCE_DSN_ENV}, {WAREHOUSE_DSN_ENV}  the DSNs when the options do not give them\n"
        f"  {PASSWORD_ENV}  the password of a DSN that has none (as libpq); passwords are never printed\n"
    )
    codes = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())
    return f"{environment}\nexit codes:\n{codes}"


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options of every command that starts the state machine (run, and the run-like ones to come)."""
    parser.add_argument(
        "--source-dsn",
        default=os.environ.get(SOURCE_DSN_ENV),
        help=f"totesys as a libpq URI (default: ${SOURCE_DSN_ENV}, else embedded sample data)",
    )
    parser.add_argument(
        "--warehouse-dsn",
        default=os.environ.get(WAREHOUSE_DSN_ENV),
        help=f"the warehouse as a libpq URI (default: ${WAREHOUSE_DSN_ENV}, else embedded)",
    )
    parser.add_argument("--lake-dir", type=Path, default=DEFAULT_LAKE, help="buckets, state, logs (default .local/)")
    parser.add_argument(
        "--tables", help=f"comma-separated source tables to extract (default: all 11: {', '.join(SOURCE_TABLES)})"
    )
    parser.add_argument("--full-refresh", action="store_true", help="re-read the chosen tables completely")
    parser.add_argument(
        "--ignore-change-signal",
        action="store_true",
        help="read the chosen tables' changes even when their change signal says unchanged (for a change "
        "committed seconds ago, not counted yet); incremental, not a full refresh",
    )
    parser.add_argument("--verbose", action="store_true", help="print the whole execution graph, also on success")
    parser.add_argument(
        "--output",
        choices=("text", "json"),
        default="text",
        help="json: one JSON document on stdout for scripts, no progress or graph",
    )


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="python -m statemachine.local", description=__doc__, epilog=_epilog(),
                                     formatter_class=formatter)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _) in RUN_LIKE.items():
        add_run_options(commands.add_parser(name, help=help_text, epilog=_epilog(), formatter_class=formatter))
    stop = commands.add_parser("stop", help="stop the embedded PostgreSQL a run left running")
    stop.add_argument("--lake-dir", type=Path, default=DEFAULT_LAKE)
    return parser


def _tables(value: str | None) -> list[str] | None:
    """The chosen tables, each once, in the order given."""
    if value is None:
        return None
    tables = list(dict.fromkeys(t.strip() for t in value.split(",") if t.strip()))
    unknown = [truncated(t, 60) for t in tables if t not in SOURCE_TABLES]
    if unknown or not tables:
        raise UserError(f"--tables: unknown table {', '.join(unknown[:5]) or '(none given)'}; "
                        f"choose from {', '.join(SOURCE_TABLES)}", EXIT_USAGE)  # fmt: skip
    return tables


def _credentials(option: str, dsn: str) -> dict[str, Any]:
    try:
        return credentials_from_dsn(dsn)
    except ValueError as exc:
        raise UserError(f"{option}: {exc}", EXIT_USAGE) from None


@dataclass
class RunRequest:
    """What a run-like command asks for, from its options: where to read and write, and the execution input."""

    source_dsn: str | None
    warehouse_dsn: str | None
    lake_dir: Path
    execution_input: dict[str, Any]
    source: dict[str, Any] | None = None  # None: the embedded server's
    warehouse: dict[str, Any] | None = None
    passwords: list[str] = field(default_factory=list)


def run_request(args: argparse.Namespace, **execution_input: Any) -> RunRequest:
    """Parse and check the shared options; `execution_input` adds what the command itself asks of the run."""
    tables = _tables(args.tables)
    request_input: dict[str, Any] = dict(execution_input)
    if tables:
        request_input["tables"] = tables
    if args.full_refresh:
        request_input["full_refresh"] = True
    if args.ignore_change_signal:
        request_input["ignore_change_signal"] = True
    request = RunRequest(args.source_dsn, args.warehouse_dsn, args.lake_dir, request_input)
    if args.source_dsn:
        request.source = _credentials("--source-dsn", args.source_dsn)
    if args.warehouse_dsn:
        request.warehouse = _credentials("--warehouse-dsn", args.warehouse_dsn)
    request.passwords = [c["password"] for c in (request.source, request.warehouse) if c and c.get("password")]
    return request


def preflight(name: str, credentials: dict[str, Any], *, tables: Sequence[str] = (),
              timeout: float = PREFLIGHT_TIMEOUT) -> None:  # fmt: skip
    """Reach the database before the state machine starts, so a wrong address costs seconds, not retries; and
    check that `tables` are there and readable, so a wrong database or a missing grant is one line, not a failed
    table and its skipped dependants for each of them."""
    try:
        con = connect(credentials, application_name="totesys-etl-preflight", statement_timeout=timeout,
                      connect_timeout=timeout)  # fmt: skip
        try:
            con.run("SELECT 1")
            missing, unreadable = unusable_tables(con, tables) if tables else ([], [])
        finally:
            con.close()
    except (TransientError, PipelineError) as exc:
        raise UserError(f"{name} database: {exc}", EXIT_UNAVAILABLE) from None
    if missing:
        which = f"none of the {len(tables)} tables" if len(missing) == len(tables) else "no table"
        raise UserError(f"{name} database: {where(credentials)} has {which} {', '.join(missing)}: is it totesys, "
                        "and are its tables on the role's search_path?", EXIT_UNAVAILABLE)  # fmt: skip
    if unreadable:
        raise UserError(f"{name} database: {permission_denied(unreadable, str(credentials['username']))}",
                        EXIT_UNAVAILABLE)  # fmt: skip


def unusable_tables(con: Any, tables: Sequence[str]) -> tuple[list[str], list[str]]:
    """The tables the connection's role cannot find (on its search_path, as the extract's unqualified names), and
    those it finds but may not SELECT from."""
    rows = con.run(
        "SELECT t, to_regclass(quote_ident(t)) IS NOT NULL, "
        "COALESCE(has_table_privilege(to_regclass(quote_ident(t)), 'SELECT'), false) "
        "FROM unnest(CAST(:tables AS text[])) WITH ORDINALITY AS chosen(t, n) ORDER BY n",
        tables=list(tables),
    )
    return [t for t, found, _ in rows if not found], [t for t, found, readable in rows if found and not readable]


def _python() -> str:
    """The interpreter that runs this, as short as it can be written and still work when pasted here."""
    executable = Path(sys.executable)
    try:
        return str(executable.relative_to(Path.cwd()))
    except ValueError:
        return str(executable)


def command_line(request: RunRequest, extra: list[str], verb: str = "run") -> str:
    """The command that runs this again with `extra` options, as it can be pasted; never with a password."""
    options = repeated_options(request)
    if os.environ.get(VIA_MAKE_ENV) and verb == "run":
        return f"make run ARGS={shlex.quote(shlex.join([*options, *extra]))}"
    return shlex.join([_python(), "-m", "statemachine.local", verb, *options, *extra])


def repeated_options(request: RunRequest) -> list[str]:
    """The options a re-run must repeat (where to read, write and keep state), without any password."""
    options = []
    for flag, dsn, env in (("--source-dsn", request.source_dsn, SOURCE_DSN_ENV),
                           ("--warehouse-dsn", request.warehouse_dsn, WAREHOUSE_DSN_ENV)):  # fmt: skip
        if dsn and dsn != os.environ.get(env):  # a DSN from the environment is still there when pasted
            options += [flag, without_password(dsn)]
    if request.lake_dir != DEFAULT_LAKE:
        options += ["--lake-dir", str(request.lake_dir)]
    return options


def _say(line: str) -> None:
    """One write per line: invocations report from the Map's worker threads."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _lake(lake_dir: Path) -> Path:
    lake = lake_dir.resolve()
    blocker = next((p for p in (lake, *lake.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"--lake-dir {lake_dir}: cannot write there: {blocker} is a file, not a directory",
                        EXIT_CANTCREAT)  # fmt: skip
    try:
        lake.mkdir(parents=True, exist_ok=True)
        (lake / ".run.lock").touch()
    except OSError as exc:
        raise UserError(f"--lake-dir {lake_dir}: cannot write there ({exc.strerror})", EXIT_CANTCREAT) from None
    return lake


def execute(request: RunRequest, *, verbose: bool, output: str) -> int:
    """Start the state machine once for `request` and report on it; the exit code says how it went."""
    from statemachine.local import deployment, history, postgres, report, runner

    text = output == "text"
    inform = (lambda line: print(line, flush=True)) if text else (lambda line: print(line, file=sys.stderr))
    lake_dir = _lake(request.lake_dir)
    lock = (lake_dir / ".run.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(f"Another run is using {lake_dir}; not starting a second one at the same time.",
                        EXIT_BUSY) from None  # fmt: skip
    started = time.monotonic()
    server = None
    try:
        chosen = request.execution_input.get("tables") or SOURCE_TABLES
        for name, given in (("source", request.source), ("warehouse", request.warehouse)):
            if given is not None:  # before anything starts: a wrong address costs seconds
                preflight(name, given, tables=chosen if name == "source" else ())
        source, warehouse = request.source, request.warehouse
        if source is None or warehouse is None:
            data_dir = lake_dir / "postgres"
            running = postgres.is_running(data_dir)
            inform(f"{'Using the embedded PostgreSQL running in' if running else 'Starting embedded PostgreSQL in'} "
                   f"{data_dir} …")  # fmt: skip
            server = postgres.start(data_dir)
            if source is None:
                postgres.ensure_database(server.admin, "totesys")
                seeded = postgres.seed_totesys(server.credentials("totesys"))
                if seeded:
                    inform(seeded_line(seeded))
                source = server.credentials("totesys", postgres.READER_ROLE)
                preflight("source", source, tables=chosen)  # e.g. its read-only role dropped since it was seeded
            if warehouse is None:
                postgres.ensure_database(server.admin, "warehouse")
                warehouse = server.credentials("warehouse")
        remember_warehouse(lake_dir, request.warehouse_dsn)
        if request.execution_input.get("repair"):
            named = (
                ", ".join(request.execution_input["tables"]) if "tables" in request.execution_input else "every table"
            )
            inform(f"Repair: the lake of {named} is rebuilt from the source in a new epoch, then the "
                   "warehouse is brought up to date from it (docs/operations.md#repair)")  # fmt: skip

        if not deployment.is_cached():
            inform("Synthesizing the CDK stack (cached for the next runs) …")
        try:
            stack = deployment.synthesized_deployment()
        except deployment.SynthError as error:
            raise UserError(str(error), EXIT_CONFIG) from None
        inform("Running statemachine/pipeline.asl.json …")
        stopping = threading.Event()  # after Ctrl-C the invocations in flight finish unreported
        progress = report.Progress((lambda line: None if stopping.is_set() else _say(line)) if text else lambda _: None)

        outcome = runner.run(source=source, warehouse=warehouse, lake_dir=lake_dir,
                             execution_input=request.execution_input, on_invocation=progress, deployment=stack,
                             on_interrupt=on_interrupt(request, lake_dir, text, stopping))  # fmt: skip
        seconds = time.monotonic() - started
        history.save(lake_dir, outcome, request.execution_input, repeated_options(request))
        warehouse_dsn = redact_dsn(request.warehouse_dsn) if request.warehouse_dsn else server.dsn("warehouse")
        rerun = report.rerun(outcome)
        rerun_command = command_line(request, rerun.options, rerun.verb) if rerun else None
        drift, drifted = report.drift_summary(outcome)
        succeeded = (EXIT_DRIFT if drifted else EXIT_OK) if outcome.succeeded else EXIT_FAILED
        if not text:
            print(json.dumps(report.as_json(outcome, seconds, rerun, rerun_command, lake_dir, warehouse_dsn), indent=1))
            return succeeded
        if verbose or not outcome.succeeded:
            print()
            print(report.execution_graph(outcome))
        print()
        if not outcome.succeeded:
            print(report.failure_summary(outcome, rerun, rerun_command, passwords_left_out=bool(request.passwords)))
            if rerun:
                print(f"or: {rerun_of(request, outcome.execution_arn.rsplit(':', 1)[-1])}")
            print()
        if drift:
            print(drift)
            print()
        if report.signal_hint(outcome):
            print(report.signal_hint(outcome))
            print()
        print(f"Lake (buckets, state, logs): {lake_dir}")
        print(f"Warehouse: {warehouse_dsn}")
        if server:
            print(f"  (the embedded server keeps running for queries; `{stop_command(request)}` stops it)")
        print(dashboard_hint(lake_dir, password_needed=_typed_password(request.warehouse_dsn, WAREHOUSE_DSN_ENV)))
        print(report.summary_line(outcome, seconds))
        return succeeded
    finally:
        if server is not None:
            server.release()


def _typed_password(dsn: str | None, env: str) -> bool:
    """Whether the DSN's password was typed on the command line: a pasted command, which leaves it out, then needs
    PGPASSWORD or the environment's DSN to give it."""
    if not dsn or dsn == os.environ.get(env):
        return False
    try:
        return bool(credentials_from_dsn(dsn, environ={})["password"])
    except ValueError:
        return False


def on_interrupt(request: RunRequest, lake_dir: Path, text: bool,
                 stopping: threading.Event) -> Callable[[Any], None]:  # fmt: skip
    """What Ctrl-C during the execution does: keep the stopped execution for statemachine.rerun, say so in one line,
    and end at once. The invocations still running in threads are cut off as a killed Lambda would be (the lake is
    written object by object, as S3 is, so the next run resumes from the last durable state)."""
    from statemachine.local import history

    def interrupted(outcome: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the keeping
        stopping.set()
        history.save(lake_dir, outcome, request.execution_input, repeated_options(request))
        name = outcome.execution_arn.rsplit(":", 1)[-1]
        if not text:
            print(json.dumps({"execution": name, "status": outcome.status, "error": INTERRUPTED,
                              "exit_code": EXIT_INTERRUPTED}, indent=1))  # fmt: skip
        print(f"{INTERRUPTED} (execution {name} is kept: `{rerun_of(request, name)}`)", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)

    return interrupted


def rerun_of(request: RunRequest, execution: str) -> str:
    """The same re-run, by the execution's name: what statemachine.rerun does for AWS executions too."""
    lake = [] if request.lake_dir == DEFAULT_LAKE else ["--lake-dir", str(request.lake_dir)]
    return shlex.join([_python(), "-m", "statemachine.rerun", execution, *lake])


def stop_command(request: RunRequest) -> str:
    lake = [] if request.lake_dir == DEFAULT_LAKE else ["--lake-dir", str(request.lake_dir)]
    if os.environ.get(VIA_MAKE_ENV):
        return "make stop" + (f" ARGS={shlex.quote(shlex.join(lake))}" if lake else "")
    return shlex.join([_python(), "-m", "statemachine.local", "stop", *lake])


def seeded_line(seeded: dict[str, int]) -> str:
    """What seeding loaded: the 11 tables the pipeline reads, and apart from them the migrations table it does
    not (so the run's "11 tables" and its row count agree with this line)."""
    business = {t: n for t, n in seeded.items() if t in SOURCE_TABLES}
    others = {t: n for t, n in seeded.items() if t not in SOURCE_TABLES}
    line = f"Seeded sample totesys: {plural(sum(business.values()), 'row')} in its {plural(len(business), 'table')}"
    if others:
        line += f" (and {plural(sum(others.values()), 'row')} in {', '.join(others)}, which the pipeline does not read)"
    return line


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "stop":
        from statemachine.local import postgres

        stopped = postgres.stop(args.lake_dir.resolve() / "postgres")
        print("stopped the embedded PostgreSQL" if stopped else "no embedded PostgreSQL was running")
        return EXIT_OK
    try:
        request = run_request(args, **RUN_LIKE[args.command][1])
    except UserError as exc:
        return _failed(exc, args.output)
    secrets = [*request.passwords, *([os.environ[PASSWORD_ENV]] if os.environ.get(PASSWORD_ENV) else [])]
    with redacted_output(secrets):
        try:
            return execute(request, verbose=args.verbose, output=args.output)
        except UserError as exc:
            return _failed(exc, args.output)
        except KeyboardInterrupt:  # before the execution started (or after it ended): nothing to keep
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            return _failed(UserError(INTERRUPTED, EXIT_INTERRUPTED), args.output, prefix="")


def _failed(error: UserError, output: str, *, prefix: str = "error: ") -> int:
    """A command that ends before (or without) a run: one line on stderr, and with --output json the same as a
    document on stdout, so a script always gets one."""
    if output == "json":
        print(json.dumps({"status": "NOT_RUN", "error": str(error), "exit_code": error.exit_code}, indent=1))
    print(f"{prefix}{error}", file=sys.stderr)
    return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
