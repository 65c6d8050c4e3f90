"""One run at a time: the run lease, on S3 conditional writes (moto), and two overlapping executions."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from lambdas.common.keys import lease_key
from lambdas.lease.lease import acquire, release
from tests.conftest import Databases

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
TTL = timedelta(hours=1)


@pytest.fixture
def s3() -> Any:
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-2")
        client.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        yield client


def holder(s3: Any) -> str:
    return json.loads(s3.get_object(Bucket="lake", Key=lease_key())["Body"].read())["holder"]


def test_a_free_lease_is_taken_and_a_live_holder_keeps_it(s3: Any) -> None:
    assert acquire(s3, "lake", "run-a", now=NOW, ttl=TTL, is_running=lambda _: True).acquired
    second = acquire(s3, "lake", "run-b", now=NOW, ttl=TTL, is_running=lambda arn: arn == "run-a")
    assert not second.acquired and second.reason == "another run is in progress: run-a"
    assert holder(s3) == "run-a"


def test_a_lease_whose_holder_is_gone_or_expired_is_taken_over(s3: Any) -> None:
    acquire(s3, "lake", "run-a", now=NOW, ttl=TTL, is_running=lambda _: True)
    assert acquire(s3, "lake", "run-b", now=NOW, ttl=TTL, is_running=lambda _: False).acquired
    assert holder(s3) == "run-b"
    later = NOW + TTL + timedelta(seconds=1)
    assert acquire(s3, "lake", "run-c", now=later, ttl=TTL, is_running=lambda _: True).acquired
    assert holder(s3) == "run-c"


def test_the_holder_may_take_it_again_and_only_the_holder_releases_it(s3: Any) -> None:
    acquire(s3, "lake", "run-a", now=NOW, ttl=TTL, is_running=lambda _: True)
    assert acquire(s3, "lake", "run-a", now=NOW, ttl=TTL, is_running=lambda _: True).acquired  # redriven
    assert release(s3, "lake", "run-b") is False
    assert release(s3, "lake", "run-a") is True
    assert release(s3, "lake", "run-a") is False
    assert acquire(s3, "lake", "run-b", now=NOW, ttl=TTL, is_running=lambda _: True).acquired


def test_a_run_started_while_another_is_going_processes_nothing_and_says_so(databases: Databases) -> None:
    from lambdas.extract.handler import handler as extract
    from statemachine.local.runner import local_pipeline

    databases.seed(scale=0.02)
    entered, gate = threading.Event(), threading.Event()

    def slow_extract(event: dict[str, Any], context: Any) -> Any:
        if event.get("table") == "sales_order":
            entered.set()
            gate.wait(120)
        return extract(event, context)

    with local_pipeline(source=databases.source, warehouse=databases.warehouse, lake_dir=databases.lake,
                        handlers={"totesys-extract": slow_extract}) as pipeline:  # fmt: skip
        first = pipeline.start({})
        assert entered.wait(120)
        second = pipeline.wait(pipeline.start({}))
        gate.set()
        first_outcome = pipeline.wait(first)
        third = pipeline.wait(pipeline.start({}))

    assert second.succeeded
    assert second.output["lease"]["acquired"] is False
    assert second.output["lease"]["reason"] == f"another run is in progress: {first}"
    assert [i.stage for i in second.invocations] == ["lease"]  # no table, no plan: only the lease (and options)
    assert first_outcome.succeeded
    assert third.succeeded and third.output["lease"]["acquired"] is True  # the first released it
    assert [i.stage for i in third.invocations] == ["lease", "plan", "report"]  # it planned: the first did all


def test_a_second_local_run_on_the_same_lake_exits_75_and_says_so(tmp_path: Any) -> None:
    import fcntl
    import subprocess
    import sys
    from pathlib import Path

    lake = tmp_path / "lake"
    lake.mkdir()
    with (lake / ".run.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a run in progress holds it
        command = [sys.executable, "-m", "statemachine.local", "run", "--lake-dir", str(lake)]
        root = Path(__file__).resolve().parents[1]
        busy = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)
    assert busy.returncode == 75
    assert f"Another run is using {lake}" in busy.stderr
    assert not (lake / "postgres").exists()
