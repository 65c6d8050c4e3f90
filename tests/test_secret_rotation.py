"""A rotated database password is picked up by warm containers, between runs and in the middle of one.

The server here requires a password of the pipeline's role (the shared test server trusts local logins), the
credentials live in moto's Secrets Manager as in AWS, and rotating means what a rotation Lambda does: the role's
password changes on the server, then the secret's value changes. Containers that read the secret before keep
their cached copy; the first refused login makes them read it again.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import pg8000.native
import pytest

from lambdas.common.db import AuthenticationError, connect, connect_with_secret, forget_secrets
from lambdas.extract import handler as extract
from lambdas.extract.bulk import record_batches
from lambdas.extract.source import snapshot
from statemachine.local import postgres, runner
from statemachine.local.deployment import synthesized_deployment
from tests.conftest import Databases

ROLE = "etl_rotating"


class _SecretIds(dict):
    """The secret names the synthesized functions read (extract: the source's; load: the warehouse's)."""

    def __missing__(self, which: str) -> str:
        functions = synthesized_deployment().functions
        self.update(source=functions["extract"].environment["TOTESYS_SECRET_ID"],
                    warehouse=functions["load"].environment["WAREHOUSE_SECRET_ID"])  # fmt: skip
        return self[which]


SECRETS = _SecretIds()


def set_password(admin: dict[str, Any], password: str) -> None:
    """The server quotes the name and the password itself: neither is pasted into SQL here."""
    con = connect({**admin, "dbname": "postgres"})
    try:
        statement = con.run("SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', CAST(:role AS text), "
                            "CAST(:password AS text))", role=ROLE, password=password)[0][0]  # fmt: skip
        con.run(statement)
    finally:
        con.close()


def new_password() -> str:
    return "rot-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def rotating_server() -> Iterator[dict[str, Any]]:
    """A private server on which ROLE must give its password."""
    data_dir = Path(tempfile.mkdtemp(prefix="totesys-test-rotation-"))
    server = postgres.start(data_dir, keep_running=False)
    try:
        hba = data_dir / "pg_hba.conf"
        hba.write_text(f"local all {ROLE} scram-sha-256\n" + hba.read_text())
        con = connect({**server.admin, "dbname": "postgres"})
        try:
            con.run(f"CREATE ROLE {pg8000.native.identifier(ROLE)} LOGIN")
            con.run("SELECT pg_reload_conf()")
        finally:
            con.close()
        yield server.admin
    finally:
        server.release()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def rotating(rotating_server: dict[str, Any], tmp_path: Path) -> Iterator[tuple[Databases, dict[str, Any]]]:
    """Seeded databases checked through the admin, and the credentials the pipeline gets (ROLE, a password)."""
    admin = rotating_server
    suffix = uuid.uuid4().hex[:10]
    source_db, warehouse_db = f"totesys_{suffix}", f"warehouse_{suffix}"
    for name in (source_db, warehouse_db):
        postgres.ensure_database(admin, name)
    checked = Databases(admin, {**admin, "dbname": source_db}, {**admin, "dbname": warehouse_db}, tmp_path / "lake")
    con = checked.seed(scale=0.02).source_con()
    try:
        postgres.grant_read_only(con, ROLE)
    finally:
        con.close()
    con = checked.warehouse_con()
    try:
        con.run(f"ALTER SCHEMA public OWNER TO {pg8000.native.identifier(ROLE)}")
    finally:
        con.close()
    password = new_password()
    set_password(admin, password)
    role = {**admin, "username": ROLE, "password": password}
    yield checked, {"source": {**role, "dbname": source_db}, "warehouse": {**role, "dbname": warehouse_db}}
    con = connect({**admin, "dbname": "postgres"})
    try:
        for name in (source_db, warehouse_db):
            con.run(f"DROP DATABASE IF EXISTS {pg8000.native.identifier(name)} WITH (FORCE)")
    finally:
        con.close()


def rotate(admin: dict[str, Any], credentials: dict[str, Any]) -> str:
    """What a rotation does: a new password on the server, then in both secrets (in moto's Secrets Manager)."""
    password = new_password()
    set_password(admin, password)
    secrets = boto3.client("secretsmanager", region_name=runner.REGION)
    for secret_id, which in ((SECRETS["source"], "source"), (SECRETS["warehouse"], "warehouse")):
        secrets.put_secret_value(SecretId=secret_id,
                                 SecretString=json.dumps({**credentials[which], "password": password}))  # fmt: skip
    return password


def change_the_source(checked: Databases) -> None:
    checked.source_sql("UPDATE staff SET email_address = 'rotated@terrifictotes.com', last_updated = now() "
                       "WHERE staff_id = 1")  # fmt: skip
    checked.source_sql("UPDATE sales_order SET units_sold = units_sold + 1, last_updated = now() "
                       "WHERE sales_order_id <= 2")  # fmt: skip


def test_a_password_rotated_between_two_runs_is_used_by_the_warm_containers_of_the_next(
    rotating: tuple[Databases, dict[str, Any]],
) -> None:
    checked, credentials = rotating
    with runner.local_pipeline(source=credentials["source"], warehouse=credentials["warehouse"],
                               lake_dir=checked.lake) as pipeline:  # fmt: skip
        first = pipeline.wait(pipeline.start({}))
        assert first.succeeded, first
        rotate(checked.admin, credentials)
        with pytest.raises(AuthenticationError, match="28P01"):  # the cached password is really refused now
            connect(credentials["warehouse"]).close()
        change_the_source(checked)
        second = pipeline.wait(pipeline.start({}))

    assert second.succeeded, second
    assert all(invocation.ok for invocation in second.invocations)  # no retry needed: the refresh is in-process
    assert checked.differences() == {}


def test_a_password_rotated_in_the_middle_of_a_run_does_not_fail_its_tables(
    rotating: tuple[Databases, dict[str, Any]],
) -> None:
    checked, credentials = rotating
    rotated: list[str] = []
    lock = threading.Lock()

    started: list[str] = []
    rotation_done = threading.Event()

    def extract_then_rotate(event: dict[str, Any], context: Any) -> dict[str, object]:
        """The first table extracted caches the secret; the rotation happens before the others connect.

        The others wait for the rotation to be complete (password and secrets both changed): a rotation is not
        atomic, and a connection between its two steps would be refused with the old password and, fresh from
        the secret, again, which is another test's case (a secret that is wrong after a fresh read).
        """
        if "table" not in event:  # the run's plan: not a table's extract
            return extract.handler(event, context)
        with lock:
            first = not started
            started.append(event["table"])
        if not first:
            assert rotation_done.wait(timeout=60)
        result = extract.handler(event, context)
        if first:  # done by the rotation, not by the function: another thread, outside its sandbox
            rotation = threading.Thread(target=lambda: rotated.append(rotate(checked.admin, credentials)))
            rotation.start()
            rotation.join()
            rotation_done.set()
        return result

    replaced = {"totesys-extract": extract_then_rotate}
    with runner.local_pipeline(source=credentials["source"], warehouse=credentials["warehouse"],
                               lake_dir=checked.lake, handlers=replaced) as pipeline:  # fmt: skip
        outcome = pipeline.wait(pipeline.start({}))

    assert rotated
    assert outcome.succeeded, outcome
    extracted_after = [i for i in outcome.invocations if i.stage == "extract"]
    assert len(extracted_after) == 11 and all(i.ok for i in extracted_after)
    assert checked.differences() == {}


def test_a_secret_that_is_wrong_after_a_fresh_read_fails_naming_the_refusal(
    rotating: tuple[Databases, dict[str, Any]],
) -> None:
    """One refresh, not a loop: a secret that is simply wrong is refused twice and reported as it is."""
    checked, credentials = rotating
    with runner.local_pipeline(source=credentials["source"], warehouse=credentials["warehouse"],
                               lake_dir=checked.lake):  # fmt: skip
        boto3.client("secretsmanager", region_name=runner.REGION).put_secret_value(
            SecretId=SECRETS["warehouse"], SecretString=json.dumps({**credentials["warehouse"], "password": "no"})
        )
        forget_secrets()
        with pytest.raises(AuthenticationError, match="password authentication failed"):
            connect_with_secret(SECRETS["warehouse"])


def test_a_password_the_server_refuses_to_the_bulk_reader_is_an_authentication_error_that_never_shows_it(
    rotating: tuple[Databases, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    """The bulk reader (libpq, through ADBC) logs in with the password in its URI: a refusal is classified as
    pg8000's is (so the handler re-reads the secret), and neither the password nor its URI form is shown."""
    _, credentials = rotating
    wrong = "w@r:ng/pa ss%" + uuid.uuid4().hex
    con = connect(credentials["source"])
    try:
        con.settings = replace(con.settings, credentials={**credentials["source"], "password": wrong})
        with (
            snapshot(con),
            pytest.raises(AuthenticationError, match=r"password authentication failed.*28P01") as refused,
            record_batches(con, "SELECT 1", {}, batch_bytes=1024),
        ):
            pass
    finally:
        con.close()
    shown = str(refused.value) + repr(refused.value) + "".join(capsys.readouterr())
    assert wrong not in shown and quote(wrong, safe="") not in shown and wrong[-32:] not in shown
