"""The secret RDS manages for a master user holds only username and password: where the database is comes from the
function's environment (the CDK context), and a secret that says neither is refused naming what is missing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from lambdas.common.db import DBNAME_ENV, HOST_ENV, PORT_ENV, connect_with_secret, forget_secrets
from lambdas.common.errors import PipelineError

REGION = "eu-west-2"


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for variable in (HOST_ENV, PORT_ENV, DBNAME_ENV):
        monkeypatch.delenv(variable, raising=False)
    with mock_aws():
        forget_secrets()
        yield boto3.client("secretsmanager", region_name=REGION)
        forget_secrets()


def _secret(client: Any, value: dict[str, Any]) -> str:
    name = f"rds!db-{uuid.uuid4()}"  # the name RDS gives the secret it manages
    client.create_secret(Name=name, SecretString=json.dumps(value))
    return name


def test_an_rds_managed_secret_connects_with_the_location_from_the_environment(
    secrets: Any, pg_admin: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = _secret(secrets, {"username": pg_admin["username"], "password": pg_admin["password"]})
    monkeypatch.setenv(HOST_ENV, str(pg_admin["host"]))
    monkeypatch.setenv(PORT_ENV, str(pg_admin["port"]))
    monkeypatch.setenv(DBNAME_ENV, "template1")
    con = connect_with_secret(secret)
    try:
        assert con.run("SELECT current_database(), current_user") == [["template1", pg_admin["username"]]]
    finally:
        con.close()


def test_the_secrets_own_location_wins_over_the_environment(
    secrets: Any, pg_admin: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = _secret(secrets, {**pg_admin, "dbname": "postgres"})
    monkeypatch.setenv(HOST_ENV, "nowhere.invalid")
    monkeypatch.setenv(DBNAME_ENV, "template1")
    con = connect_with_secret(secret)
    try:
        assert con.run("SELECT current_database()") == [["postgres"]]
    finally:
        con.close()


def test_a_login_only_secret_without_a_location_is_refused_in_one_line_naming_the_missing_keys(
    secrets: Any, pg_admin: dict[str, Any]
) -> None:
    secret = _secret(secrets, {"username": pg_admin["username"], "password": pg_admin["password"]})
    with pytest.raises(PipelineError) as raised:
        connect_with_secret(secret)
    message = str(raised.value)
    assert "\n" not in message
    assert f"secret {secret!r} has no host, dbname:" in message
    assert HOST_ENV in message and DBNAME_ENV in message


def test_a_secret_with_neither_login_nor_location_names_every_missing_key(secrets: Any) -> None:
    secret = _secret(secrets, {"engine": "postgres"})
    with pytest.raises(PipelineError, match=r"has no username, password, host, dbname:"):
        connect_with_secret(secret)
