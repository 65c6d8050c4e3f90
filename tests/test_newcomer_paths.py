"""What a newcomer meets off the happy path: Ctrl-C, a source without its tables or grants, scripts reading JSON,
the dashboard's command, and the run's own words. Each ends in one line with a documented exit code."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from analytics import dashboard_hint, dashboard_path, remember_warehouse
from analytics.dashboard import main as dashboard_main
from lambdas.common.db import connect, database_errors
from lambdas.common.errors import PipelineError
from lambdas.extract.bulk import record_batches
from statemachine.local import postgres, sample_data
from statemachine.local.__main__ import EXIT_CODES, INTERRUPTED
from statemachine.local.report import rerun, summary_line
from statemachine.local.runner import Invocation, RunOutcome
from tests import analytics_warehouse
from tests.conftest import Databases, as_admin

ROOT = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("TOTESYS_", "PGPASSWORD"))}, **extra}


def command(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env or clean_env())  # fmt: skip


def dsn(credentials: dict[str, Any], database: str | None = None) -> str:
    return (f"postgresql://{credentials['username']}@/{database or credentials['dbname']}"
            f"?host={credentials['host']}&port={credentials['port']}")  # fmt: skip


def options(db: Databases) -> list[str]:
    return ["--source-dsn", dsn(db.source), "--warehouse-dsn", dsn(db.warehouse), "--lake-dir", str(db.lake)]


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- 1. the exit codes are the documented command's -------------------------------------------------------------


def test_the_readme_documents_the_exit_codes_of_the_command_scripts_call_and_what_make_does_with_them() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("| exit code | meaning |")[1].split("\n\n")[0]
    assert {int(code) for code in re.findall(r"^\|\s*(\d+) \|", table, re.MULTILINE)} == set(EXIT_CODES)
    before = readme.split("| exit code | meaning |")[0].rstrip().rsplit("\n\n", 1)[1]
    assert ".venv/bin/python -m statemachine.local" in before  # the codes belong to the command a script calls
    assert "make" in before and "2" in before  # and make's own 2 is explained where the table is


# --- 2. Ctrl-C -------------------------------------------------------------------------------------------------


def test_ctrl_c_mid_run_is_one_line_exit_130_and_the_kept_execution_reruns_to_a_correct_warehouse(
    databases: Databases,
) -> None:
    databases.seed(scale=0.02)
    run = subprocess.Popen(
        [sys.executable, "-m", "statemachine.local", "run", *options(databases)], cwd=ROOT, env=clean_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background job starts with it ignored
    )  # fmt: skip
    assert run.stdout is not None
    seen = []
    for line in run.stdout:  # interrupt once the execution is under way: the first table extracted
        seen.append(line)
        if "✔ extract" in line:
            break
    os.killpg(run.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole foreground group
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, "".join(seen) + out + err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(INTERRUPTED)

    kept = list((databases.lake / "executions").glob("local-*.json"))
    assert len(kept) == 1
    record = json.loads(kept[0].read_text(encoding="utf-8"))
    assert record["status"] == "ABORTED" and kept[0].stem in err
    planned = command("statemachine.rerun", kept[0].stem, "--lake-dir", str(databases.lake), "--dry-run")
    assert planned.returncode == 0 and json.loads(planned.stdout) == {}, planned.stderr  # the same run again

    resumed = command("statemachine.rerun", kept[0].stem, "--lake-dir", str(databases.lake))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert databases.differences() == {}


# --- 4. the source's tables and grants are checked before the run ---------------------------------------------


def test_a_source_without_the_tables_is_one_line_and_nothing_runs(databases: Databases) -> None:
    result = command("statemachine.local", "run", *options(databases))
    assert result.returncode == 69
    line = one_line(result)
    assert line.startswith("error: source database: ") and "has none of the 11 tables address, " in line
    assert not (databases.lake / "executions").exists()


def test_a_revoked_grant_names_the_grant_before_the_run(reader: Databases) -> None:
    role = reader.source["username"]
    as_admin(reader, f"REVOKE SELECT ON staff FROM {role}")
    result = command("statemachine.local", "run", *options(reader), "--output", "json")
    assert result.returncode == 69
    expected = f"source database: permission denied for table staff: GRANT SELECT ON staff TO {role}"
    assert one_line(result) == f"error: {expected}"
    assert json.loads(result.stdout) == {"status": "NOT_RUN", "error": expected, "exit_code": 69}


def test_a_revoked_grant_met_by_the_bulk_read_or_pg8000_names_the_grant_not_the_query(reader: Databases) -> None:
    role = reader.source["username"]
    as_admin(reader, f"REVOKE SELECT ON staff FROM {role}")
    con = connect(reader.source)
    try:
        con.run("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        with pytest.raises(PipelineError) as bulk, record_batches(con, "SELECT staff_id FROM staff", {},
                                                                   batch_bytes=1 << 20) as batches:  # fmt: skip
            list(batches)
        con.run("ROLLBACK")
        with pytest.raises(PipelineError) as direct, database_errors("totesys", role=role):
            con.run("SELECT count(*) FROM staff")
    finally:
        con.close()
    grant = f"permission denied for table staff: GRANT SELECT ON staff TO {role}"
    assert str(bulk.value) == f"totesys: bulk read: {grant}"
    assert str(direct.value) == f"totesys: {grant}"


def test_a_missing_embedded_reader_role_is_one_line_and_exit_69(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    server = postgres.start(lake / "postgres")
    try:
        postgres.ensure_database(server.admin, "totesys")
        con = connect(server.credentials("totesys"))
        try:  # seeded, but its read-only role is gone (dropped by hand, or the data restored without it)
            sample_data.create_schema(con)
            sample_data.seed(con, scale=0.02)
        finally:
            con.close()
        result = command("statemachine.local", "run", "--lake-dir", str(lake))
    finally:
        postgres.stop(lake / "postgres")
    assert result.returncode == 69, result.stdout + result.stderr
    assert f'role "{postgres.READER_ROLE}" does not exist' in one_line(result)
    assert result.stdout.strip().startswith("Using the embedded PostgreSQL running in")  # it was already up


# --- 5. --output json always prints a document --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "code", "words"),
    [
        (["--tables", "staff,nope"], 2, "--tables: unknown table nope; choose from address,"),
        (["--source-dsn", "postgresql://etl@127.0.0.1:{port}/totesys"], 69, "source database: cannot connect"),
    ],
)
def test_with_output_json_a_command_that_fails_before_the_run_prints_its_error_as_json(
    tmp_path: Path, arguments: list[str], code: int, words: str
) -> None:
    arguments = [a.format(port=unused_port()) for a in arguments]
    result = command("statemachine.local", "run", *arguments, "--lake-dir", str(tmp_path), "--output", "json")
    assert result.returncode == code
    document = json.loads(result.stdout)
    assert document["status"] == "NOT_RUN" and document["exit_code"] == code and words in document["error"]
    assert words in one_line(result)


# --- 3. the dashboard takes the warehouse as `run` does, and fails in one line ---------------------------------


def test_the_dashboard_honours_totesys_warehouse_dsn_and_fails_in_one_line(tmp_path: Path) -> None:
    port = unused_port()
    result = command("analytics.dashboard", "--lake-dir", str(tmp_path),
                     env=clean_env(TOTESYS_WAREHOUSE_DSN=f"postgresql://etl@127.0.0.1:{port}/warehouse"))  # fmt: skip
    assert result.returncode == 69
    line = one_line(result)
    assert line.startswith("error: warehouse database: ") and f"127.0.0.1:{port}" in line
    assert not dashboard_path(tmp_path.resolve()).exists()


def test_the_dashboard_of_a_warehouse_no_run_has_loaded_is_one_line(databases: Databases) -> None:
    result = command("analytics.dashboard", "--warehouse-dsn", dsn(databases.warehouse), "--lake-dir",
                     str(databases.lake))  # fmt: skip
    assert result.returncode == 1
    assert "has a run loaded it?" in one_line(result)


def test_given_only_the_lake_the_dashboard_finds_the_warehouse_its_runs_load(databases: Databases) -> None:
    con = databases.warehouse_con()
    try:
        analytics_warehouse.build(con)
    finally:
        con.close()
    databases.lake.mkdir(parents=True)
    remember_warehouse(databases.lake, dsn(databases.warehouse))  # as a run with --warehouse-dsn does
    assert dashboard_main(["--lake-dir", str(databases.lake)]) == 0
    assert dashboard_path(databases.lake.resolve()).is_file()
    assert not (databases.lake / "postgres").exists()  # no new, empty embedded server


def test_the_printed_dashboard_command_never_carries_a_dsn_and_says_when_a_password_is_needed(tmp_path: Path) -> None:
    default_lake = Path(".local").resolve()
    page = f"{default_lake.as_uri()}/dashboard.html"
    assert dashboard_hint(default_lake) == f"Dashboard: `make dashboard` draws it at {page}"
    hint = dashboard_hint(tmp_path, password_needed=True)
    assert hint.startswith(f'Dashboard: `make dashboard ARGS="--lake-dir {tmp_path}"` (with the warehouse\'s '
                           "password in PGPASSWORD or TOTESYS_WAREHOUSE_DSN)")  # fmt: skip
    assert "postgresql://" not in hint and "***" not in hint


@pytest.mark.parametrize("module", ["analytics.dashboard", "analytics.screenshot", "statemachine.local"])
def test_help_works_for_every_command_of_the_readme(module: str) -> None:
    result = command(module, "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: python -m ") and result.stderr == ""


# --- 6. the run's own words ----------------------------------------------------------------------------------------


def outcome(failed: list[dict[str, Any]], tables: list[str], invocations: list[Invocation]) -> RunOutcome:
    cause = json.dumps({"failed_tables": failed, "rerun_input": {"tables": tables}})
    return RunOutcome("FAILED", "arn:x:local-1", None, "TablesFailed", cause, [], invocations)


def test_the_reasons_for_a_rerun_say_each_thing_once() -> None:
    failed = [
        {"table": "staff", "stage": "extract", "status": "failed", "error": "PipelineError", "message": "x"},
        {"table": "dim_staff", "stage": "transform", "status": "skipped", "error": "Skipped", "message": "y"},
        {"table": "dim_staff", "stage": "load", "status": "skipped", "error": "Skipped", "message": "z"},
    ]
    plan = rerun(outcome(failed, ["department", "staff"], []))
    assert plan is not None
    assert plan.reasons == {"department": "a source of dim_staff (transform skipped, load skipped)",
                            "staff": "its extract failed"}  # fmt: skip


def test_the_summary_counts_in_words_and_says_which_loaded_rows_were_not_extracted() -> None:
    invocations = [
        Invocation("arn:x:local-1", "extract", "staff", 0, 0.1, True, {"status": "succeeded", "rows": 1}),
        Invocation("arn:x:local-1", "load", "dim_staff", 0, 0.1, True, {"rows_written": 1}),
        Invocation("arn:x:local-1", "load", "dim_date", 0, 0.1, True, {"rows_written": 677}),
    ]
    line = summary_line(outcome([], [], invocations), 1.0)
    assert line.startswith("FAILED: 1 table, 1 row extracted, 678 rows loaded (of which 677 dim_date days, made ")
    assert line.endswith(", 0 failed, 0 skipped, 0 retries, 1.0 s")


def test_a_lake_dir_that_is_a_file_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "lake").write_text("a file")
    result = command("statemachine.local", "run", "--lake-dir", str(tmp_path / "lake"))
    assert result.returncode == 73
    assert one_line(result).endswith(f"{tmp_path / 'lake'} is a file, not a directory")
