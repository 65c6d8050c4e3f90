"""The local command off the happy path: a mistake costs seconds and one line, and no password is ever shown."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pg8000.native
import pytest

from lambdas.common.db import connect, credentials_from_dsn, redact_dsn
from lambdas.common.errors import PipelineError, TransientError
from statemachine.local import postgres, sample_data
from tests.conftest import Databases

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "Sw0rdf1sh-" + uuid.uuid4().hex[:8]  # the secret the tests look for in every output
ROLE = "etl_with_password"


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TOTESYS_", "PGPASSWORD"))}
    return subprocess.run([sys.executable, "-m", "statemachine.local", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**clean, **(env or {})})  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.stdout.strip() == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def password_server() -> Iterator[dict[str, Any]]:
    """A private server where ROLE must give its password (the shared test server trusts every local login)."""
    data_dir = Path(tempfile.mkdtemp(prefix="totesys-test-pw-"))
    server = postgres.start(data_dir, keep_running=False)
    try:
        admin = server.admin
        hba = data_dir / "pg_hba.conf"
        hba.write_text(f"local all {ROLE} scram-sha-256\n" + hba.read_text())
        con = connect({**admin, "dbname": "postgres"})
        try:
            con.run(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
            con.run("SELECT pg_reload_conf()")
            con.run("CREATE DATABASE totesys")  # read through ROLE, as in production
            con.run(f"CREATE DATABASE warehouse OWNER {ROLE}")
        finally:
            con.close()
        yield {**admin, "username": ROLE, "password": PASSWORD, "admin": admin}
    finally:
        server.release()
        shutil.rmtree(data_dir, ignore_errors=True)


def dsn(credentials: dict[str, Any], database: str, *, password: str | None = None) -> str:
    secret = f":{password}" if password else ""
    return f"postgresql://{credentials['username']}{secret}@/{database}?host={credentials['host']}" \
           f"&port={credentials['port']}"  # fmt: skip


# --- 1. a bad DSN fails before the state machine starts, in seconds, with one line -----------------------------

# "In seconds": the preflight gives each database 2.5 s, against the 840 s statement timeout and TCP's two-minute
# connect timeout it must not wait for. The bound leaves room for a Python start-up on a loaded 2-core machine
# (these three took 5 to 7 s while seven test suites shared one); the figures themselves are not a benchmark.
IN_SECONDS = 15


def test_a_refused_port_fails_in_seconds_with_one_line_naming_the_database_and_the_port(tmp_path: Path) -> None:
    port = free_port()
    started = time.monotonic()
    result = cli("run", "--source-dsn", f"postgresql://etl@127.0.0.1:{port}/totesys",
                 "--warehouse-dsn", f"postgresql://etl@127.0.0.1:{port}/warehouse",
                 "--lake-dir", str(tmp_path))  # fmt: skip
    assert time.monotonic() - started < IN_SECONDS
    assert result.returncode == 69
    line = one_line_error(result)
    assert f"source database: cannot connect to 127.0.0.1:{port}, database 'totesys'" in line
    assert "connection refused" in line


def test_an_unknown_host_fails_in_seconds_with_one_line(tmp_path: Path) -> None:
    started = time.monotonic()
    result = cli("run", "--source-dsn", "postgresql://etl@no-such-host.invalid:5432/totesys",
                 "--warehouse-dsn", "postgresql://etl@no-such-host.invalid:5432/warehouse",
                 "--lake-dir", str(tmp_path))  # fmt: skip
    assert time.monotonic() - started < IN_SECONDS
    assert result.returncode == 69
    assert "no-such-host.invalid:5432" in one_line_error(result)
    assert "unknown host" in result.stderr


def test_a_host_that_accepts_tcp_and_never_answers_costs_seconds_not_the_statement_timeout(tmp_path: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever reads or writes
        port = silent.getsockname()[1]
        started = time.monotonic()
        result = cli("run", "--source-dsn", f"postgresql://etl@127.0.0.1:{port}/totesys?sslmode=disable",
                     "--warehouse-dsn", f"postgresql://etl@127.0.0.1:{port}/warehouse",
                     "--lake-dir", str(tmp_path))  # fmt: skip
        elapsed = time.monotonic() - started
    assert elapsed < IN_SECONDS, elapsed
    assert result.returncode == 69
    assert "no answer within 2.5 s" in one_line_error(result)


def test_a_missing_database_is_named_with_the_servers_reason(pg_admin: dict[str, Any], tmp_path: Path) -> None:
    missing = f"nowhere_{uuid.uuid4().hex[:6]}"
    result = cli("run", "--source-dsn", dsn(pg_admin, missing), "--warehouse-dsn", dsn(pg_admin, missing),
                 "--lake-dir", str(tmp_path))  # fmt: skip
    assert result.returncode == 69
    line = one_line_error(result)
    assert line.startswith("error: source database: cannot connect to socket ")
    assert f'database "{missing}" does not exist (SQLSTATE 3D000)' in line


def test_a_wrong_password_is_reported_as_such_every_time_and_never_retried(password_server: dict[str, Any]) -> None:
    wrong = {k: v for k, v in password_server.items() if k != "admin"} | {"dbname": "totesys", "password": "nope"}

    def refusal(_: int) -> BaseException | None:
        try:
            connect(wrong)
        except Exception as exc:
            return exc
        return None

    # pg8000's close on the server's hang-up used to mask the cause as "network error", mostly under concurrency
    with ThreadPoolExecutor(max_workers=6) as pool:
        refusals = list(pool.map(refusal, range(30)))
    for refused in refusals:
        assert isinstance(refused, PipelineError) and not isinstance(refused, TransientError), refused  # no retry
        assert f'password authentication failed for user "{ROLE}" (SQLSTATE 28P01)' in str(refused)


def test_a_wrong_password_fails_the_command_in_one_line_without_showing_any_password(
    password_server: dict[str, Any], tmp_path: Path
) -> None:
    wrong = "Wr0ng-" + uuid.uuid4().hex[:6]
    result = cli("run", "--source-dsn", dsn(password_server, "totesys", password=wrong),
                 "--warehouse-dsn", dsn(password_server, "warehouse"), "--lake-dir", str(tmp_path),
                 env={"PGPASSWORD": PASSWORD})  # fmt: skip
    assert result.returncode == 69
    line = one_line_error(result)
    assert "source database" in line and "password authentication failed" in line and "28P01" in line
    assert wrong not in result.stdout + result.stderr and PASSWORD not in result.stdout + result.stderr


def test_a_password_the_server_asks_for_and_nobody_gave_is_one_line_for_the_run_and_the_dashboard(
    password_server: dict[str, Any], tmp_path: Path
) -> None:
    run = cli("run", "--source-dsn", dsn(password_server, "totesys"), "--warehouse-dsn",
              dsn(password_server, "warehouse"), "--lake-dir", str(tmp_path))  # fmt: skip
    dashboard = subprocess.run([sys.executable, "-m", "analytics.dashboard", "--warehouse-dsn",
                                dsn(password_server, "warehouse"), "--lake-dir", str(tmp_path)], cwd=ROOT,
                               capture_output=True, text=True, timeout=60,
                               env={k: v for k, v in os.environ.items() if k != "PGPASSWORD"})  # fmt: skip
    for result in (run, dashboard):
        assert result.returncode == 69
        assert "asks for a password and none was given (in the DSN, PGPASSWORD or the secret)" in one_line_error(result)


def test_the_statement_timeout_still_applies_once_connected(pg_admin: dict[str, Any]) -> None:
    con = connect({**pg_admin, "dbname": "postgres"}, statement_timeout=1.0, connect_timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(pg8000.native.DatabaseError, match="statement timeout"):
            con.run("SELECT pg_sleep(3)")  # outlives the connect timeout, cancelled by the server at 1 s
        assert 0.9 < time.monotonic() - started < 2.5
    finally:
        con.close()


# --- 3. a user's mistake is one line with a documented exit code, never a traceback -----------------------------


def test_a_malformed_dsn_is_one_line_without_its_password(tmp_path: Path) -> None:
    for bad in (f"postgresql://etl:{PASSWORD}@host:notaport/totesys", f"mysql://etl:{PASSWORD}@host/totesys"):
        result = cli("run", "--source-dsn", bad, "--lake-dir", str(tmp_path))
        assert result.returncode == 2
        line = one_line_error(result)
        assert line.startswith("error: --source-dsn:") and "etl:***@host" in line
        assert PASSWORD not in result.stderr


def test_an_unwritable_lake_dir_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = cli("run", "--lake-dir", str(blocker / "lake"))
    assert result.returncode == 73
    assert "--lake-dir" in one_line_error(result) and "cannot write there" in result.stderr


def test_help_documents_the_exit_codes_and_the_environment() -> None:
    result = cli("run", "--help")
    assert result.returncode == 0
    for text in ("exit codes:", " 69 ", " 73 ", " 75 ", "TOTESYS_SOURCE_DSN", "TOTESYS_WAREHOUSE_DSN", "PGPASSWORD"):
        assert text in result.stdout, text


def test_duplicate_tables_run_once_and_unknown_ones_are_refused_in_one_short_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from statemachine.local.__main__ import _parser, main, run_request

    args = _parser().parse_args(["run", "--tables", "staff,department,staff", "--lake-dir", str(tmp_path)])
    assert run_request(args).execution_input == {"tables": ["staff", "department"]}
    assert main(["run", "--tables", "staff," + "x" * 5_000_000, "--lake-dir", str(tmp_path)]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and len(printed.err.splitlines()) == 1 and len(printed.err) < 1000


# --- 2 and 4. no password anywhere; the printed commands work when pasted ---------------------------------------


def test_dsns_are_redacted_wherever_their_password_is_written() -> None:
    assert redact_dsn(f"postgresql://etl:{PASSWORD}@db:5432/totesys") == "postgresql://etl:***@db:5432/totesys"
    assert redact_dsn(f"postgresql://etl@db/totesys?password={PASSWORD}&x=1") == \
           "postgresql://etl@db/totesys?password=***&x=1"  # fmt: skip
    assert PASSWORD not in redact_dsn(f"postgresql://etl:{PASSWORD}@db:bad/totesys")


def test_a_dsn_without_a_password_takes_pgpassword_as_libpq_does() -> None:
    assert credentials_from_dsn("postgresql://etl@db/totesys", environ={"PGPASSWORD": "pw"})["password"] == "pw"
    assert credentials_from_dsn("postgresql://etl:own@db/totesys", environ={"PGPASSWORD": "pw"})["password"] == "own"


def test_the_printed_commands_use_this_interpreter_or_make_and_keep_a_non_default_lake() -> None:
    from statemachine.local.__main__ import _parser, command_line, run_request, stop_command

    args = _parser().parse_args(["run", "--source-dsn", f"postgresql://etl:{PASSWORD}@db/totesys", "--lake-dir", "x"])
    request = run_request(args)
    words = shlex.split(command_line(request, ["--tables", "staff"]))
    assert (ROOT / words[0]).resolve() == Path(sys.executable).resolve()
    assert words[1:] == ["-m", "statemachine.local", "run", "--source-dsn", "postgresql://etl@db/totesys",
                         "--lake-dir", "x", "--tables", "staff"]  # fmt: skip
    assert shlex.split(stop_command(request))[1:] == ["-m", "statemachine.local", "stop", "--lake-dir", "x"]
    os.environ["TOTESYS_VIA_MAKE"] = "1"
    try:
        assert command_line(request, ["--tables", "staff"]) == \
               "make run ARGS='--source-dsn postgresql://etl@db/totesys --lake-dir x --tables staff'"  # fmt: skip
    finally:
        del os.environ["TOTESYS_VIA_MAKE"]


def test_a_failed_run_never_writes_a_password_and_its_pasted_rerun_completes(
    password_server: dict[str, Any], tmp_path: Path
) -> None:
    owner = {**password_server["admin"], "dbname": "totesys"}
    con = connect(owner)
    try:
        sample_data.create_schema(con)
        sample_data.seed(con, scale=0.02)
        postgres.grant_read_only(con, ROLE)
        # a table the pipeline cannot read changes from (a missing grant is refused before the run starts)
        con.run("ALTER TABLE design RENAME COLUMN last_updated TO last_changed")
    finally:
        con.close()
    lake = tmp_path / "lake"
    env = {"TOTESYS_WAREHOUSE_DSN": dsn(password_server, "warehouse", password=PASSWORD)}
    failed = cli("run", "--source-dsn", dsn(password_server, "totesys", password=PASSWORD), "--lake-dir", str(lake),
                 env=env, timeout=300)  # fmt: skip

    assert failed.returncode == 1, failed.stdout + failed.stderr
    written = [failed.stdout, failed.stderr] + [p.read_text(errors="replace") for p in lake.rglob("*") if p.is_file()]
    assert not [text for text in written if PASSWORD in text]
    assert "Traceback" not in failed.stderr
    last = failed.stdout.strip().splitlines()[-1]
    assert last.startswith("FAILED: 11 tables, ") and " 1 failed, " in last and last.endswith(" s"), last
    rerun_line = failed.stdout.split("Re-run only these tables with:")[1].strip().splitlines()[0]
    execution = failed.stdout.split("Execution ")[1].split(":")[0]
    kept = subprocess.run([sys.executable, "-m", "statemachine.rerun", execution, "--lake-dir", str(lake), "--dry-run"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert json.loads(kept.stdout) == {"tables": ["design"]}, kept.stderr  # the local history, kept
    assert f"-m statemachine.rerun {execution} --lake-dir {lake}" in failed.stdout
    assert "passwords are never printed: give them with PGPASSWORD" in failed.stdout
    because = failed.stdout.split("because:")[1]
    assert "design           its extract failed" in because
    assert "fact_sales_order" in failed.stdout and " held" in failed.stdout  # its rows wait for dim_design, loaded

    con = connect(owner)
    try:
        con.run("ALTER TABLE design RENAME COLUMN last_changed TO last_updated")
    finally:
        con.close()
    pasted = subprocess.run([*shlex.split(rerun_line), "--output", "json"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env={**os.environ, **env, "PGPASSWORD": PASSWORD})  # fmt: skip
    assert pasted.returncode == 0, pasted.stdout + pasted.stderr
    report = json.loads(pasted.stdout)
    assert report["status"] == "SUCCEEDED" and report["failures"] == 0 and report["rerun"] is None
    extracted = {i["table"] for i in report["invocations"] if i["stage"] == "extract"}
    assert extracted == {"design"}
    assert PASSWORD not in pasted.stdout + pasted.stderr


def test_rerun_given_a_local_execution_id_or_no_aws_credentials_says_so_in_one_line(tmp_path: Path) -> None:
    no_aws = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    no_aws |= {"AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
               "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
    arn = "arn:aws:states:eu-west-2:123456789012:execution:totesys-etl:local-1"
    for argument, code, text in (("local-20261127T124244-582ebd", 2, "nor a local execution kept in"),
                                 (arn, 69, "Unable to locate credentials")):  # fmt: skip
        result = subprocess.run([sys.executable, "-m", "statemachine.rerun", argument], cwd=ROOT, capture_output=True,
                                text=True, timeout=60, env=no_aws)  # fmt: skip
        assert result.returncode == code
        assert text in one_line_error(result)


# --- 6. database errors name the offending keys -------------------------------------------------------------------


def test_a_database_error_names_the_offending_key(databases: Databases) -> None:
    from lambdas.common.db import database_errors

    con = databases.warehouse_con()
    try:
        con.run("CREATE TABLE parent (id int PRIMARY KEY)")
        con.run("CREATE TABLE child (parent_id int REFERENCES parent (id))")
        with pytest.raises(PipelineError) as refused, database_errors("warehouse"):
            con.run("INSERT INTO child VALUES (42)")
    finally:
        con.close()
    assert 'violates foreign key constraint "child_parent_id_fkey"' in str(refused.value)
    assert "Key (parent_id)=(42) is not present in table" in str(refused.value)
    assert str(refused.value).endswith("(SQLSTATE 23503)")


def test_the_lambdas_logs_in_the_lake_never_hold_a_database_password(databases: Databases) -> None:
    from statemachine.local.runner import run

    source = {**databases.source, "password": PASSWORD}

    def careless_extract(event: dict[str, Any], context: Any) -> Any:
        raise PipelineError(f"could not connect with {source!r}")  # what a careless error message could do

    outcome = run(source=source, warehouse=databases.warehouse, lake_dir=databases.lake,
                  execution_input={"tables": ["staff"]}, handlers={"totesys-extract": careless_extract})  # fmt: skip

    files = list((databases.lake / "logs").glob("*"))
    assert [p.name for p in files] == [f"{outcome.execution_arn.rsplit(':', 1)[-1]}.jsonl"]  # named after the run
    logs = "".join(p.read_text() for p in files)
    assert "could not connect with" in logs and "'password': '***'" in logs  # the report logs each failure
    assert PASSWORD not in logs


def test_progress_shows_a_skip_with_its_reason_and_collapses_retries() -> None:
    from statemachine.local.report import Progress
    from statemachine.local.runner import Invocation

    def attempt(table: str, ok: bool, result: dict[str, Any]) -> Invocation:
        return Invocation("arn:x", "extract", table, 0.0, 0.5, ok, result)

    lines: list[str] = []
    progress = Progress(lines.append)
    transient = {"errorType": "TransientError", "errorMessage": "totesys: connection lost: network error"}
    for invocation in (
        attempt("staff", False, transient),
        attempt("staff", False, transient),
        attempt("staff", True, {"status": "succeeded", "rows": 20}),
        attempt("design", True, {"status": "skipped", "reason": "extract of design failed"}),
        attempt("payment", False, {"errorType": "PipelineError", "errorMessage": "x" * 100_000}),
    ):
        progress(invocation)

    staff = [line for line in lines if " staff " in line]
    assert len(staff) == 2, lines  # the first failure says it will be retried; the outcome counts the retries
    assert staff[0].endswith("(retrying)") and "connection lost" in staff[0]
    assert staff[1].endswith("20 rows  after 2 retries")
    assert next(line for line in lines if " design " in line).split("0.50s")[1].strip() == \
           "skipped: needs extract of design failed"  # fmt: skip
    assert len(next(line for line in lines if " payment " in line)) < 400  # an untrusted message is cut short


def test_a_successful_run_ends_with_its_summary_and_shows_the_graph_only_when_asked(databases: Databases) -> None:
    databases.seed(scale=0.02)
    options = ["--source-dsn", dsn(databases.source, databases.source["dbname"]),
               "--warehouse-dsn", dsn(databases.warehouse, databases.warehouse["dbname"]),
               "--lake-dir", str(databases.lake), "--tables", "staff,department"]  # fmt: skip

    verbose = cli("run", *options, "--verbose", timeout=300)
    quiet = cli("run", *options, timeout=300)

    for result in (quiet, verbose):
        assert result.returncode == 0, result.stdout + result.stderr
    assert verbose.stdout.strip().splitlines()[-1].startswith("SUCCEEDED: 2 tables, ")
    assert "Execution local-" in verbose.stdout and "Extract source tables" in verbose.stdout
    graph = [line for line in verbose.stdout.splitlines() if line.startswith("  ") and "SUCCEEDED" in line]
    assert len({line.index("SUCCEEDED") for line in graph}) == 1, graph  # states and tables in one column
    # the second run finds nothing new: its plan gives no table work, and no graph is shown unasked
    assert (
        quiet.stdout.strip()
        .splitlines()[-1]
        .startswith("SUCCEEDED: 0 tables, 0 rows extracted, 0 rows loaded, 0 failed")
    )
    assert "Execution local-" not in quiet.stdout and "Nothing to do" not in quiet.stdout
