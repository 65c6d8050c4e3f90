"""A warm container reads each secret once an hour, not once per invocation, and at once when told to.

Secrets Manager bills each GetSecretValue ($0.05 per 10,000, docs/cost.md); with a run every 5 minutes, a cache
that expires with the schedule would read the secret in every run of every warm container. Rotation does not
depend on the cache's age: a refused login reads again at once (tests/test_secret_rotation.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters import base
from moto import mock_aws

from lambdas.common import credentials

SECRET = "totesys/source"
CREDENTIALS = {"host": "db.example.org", "port": 5432, "username": "etl", "password": "p", "dbname": "totesys"}


class Clock(datetime):
    """The Powertools cache's clock, moved forward by the test."""

    offset = timedelta()

    @classmethod
    def now(cls, tz: Any = None) -> Clock:  # type: ignore[override]
        return super().now(tz) + cls.offset


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """GetSecretValue calls made by this container's provider, with a fresh cache and a clock the test moves."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    monkeypatch.setattr(base, "datetime", Clock)
    monkeypatch.setattr(Clock, "offset", timedelta())
    with mock_aws():
        boto3.client("secretsmanager").create_secret(Name=SECRET, SecretString=json.dumps(CREDENTIALS))
        credentials.forget_secrets()
        calls: list[str] = []
        credentials._secrets_provider().client.meta.events.register(
            "provide-client-params.secrets-manager.GetSecretValue", lambda params, **_: calls.append(params["SecretId"])
        )
        yield calls
        credentials.forget_secrets()


def test_a_warm_container_reads_its_secret_once_an_hour_not_every_run(reads: list[str]) -> None:
    for run in range(12):  # a run every 5 minutes, several invocations each
        Clock.offset = timedelta(minutes=5 * run)
        for _ in range(3):
            assert credentials.read_secret(SECRET)["username"] == "etl"
    assert reads == [SECRET]

    Clock.offset = timedelta(seconds=credentials.SECRET_MAX_AGE_SECONDS + 1)
    credentials.read_secret(SECRET)
    assert reads == [SECRET, SECRET], "an hour on, the container asks again"


def test_a_refresh_reads_the_secret_at_once(reads: list[str]) -> None:
    credentials.read_secret(SECRET)
    rotated = json.dumps({**CREDENTIALS, "password": "q"})
    boto3.client("secretsmanager").put_secret_value(SecretId=SECRET, SecretString=rotated)
    assert credentials.read_secret(SECRET)["password"] == "p", "cached"
    assert credentials.read_secret(SECRET, refresh=True)["password"] == "q"
    assert credentials.read_secret(SECRET)["password"] == "q"
    assert reads == [SECRET, SECRET]


def test_the_cache_is_shorter_than_the_most_frequent_rotation_schedule() -> None:
    """An alternating-users rotation leaves the previous login valid until the next rotation, at the earliest
    4 hours later (Secrets Manager's shortest schedule): a copy older than that could hold a retired login."""
    assert credentials.SECRET_MAX_AGE_SECONDS < 4 * 3600
