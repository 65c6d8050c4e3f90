"""A copied dimension is remodelled one input part at a time, with the same rows as from the whole input."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pyarrow as pa
import pytest
from moto import mock_aws

from lambdas.common.lake import BatchLog, Bucket
from lambdas.transform.transformer import transform_table


@pytest.fixture
def buckets() -> Iterator[tuple[Bucket, Bucket]]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        for name in ("ingestion", "processed"):
            s3.create_bucket(Bucket=name)
        yield Bucket("ingestion", s3), Bucket("processed", s3)


def designs(ids: list[int], name: str) -> pa.Table:
    return pa.table(
        {
            "design_id": pa.array(ids, pa.int32()),
            "design_name": pa.array([f"{name} {i}" for i in ids]),
            "file_location": pa.array(["/d"] * len(ids)),
            "file_name": pa.array([f"{i}.json" for i in ids]),
        }
    )


def extracted(ingestion: Bucket, *batches: list[pa.Table]) -> None:
    log = BatchLog(ingestion, "extract", "design")
    head = log.head()
    for parts in batches:
        head = log.commit(head, log.write(head, parts), {})


def test_a_copied_dimension_keeps_the_latest_version_of_each_key_once_across_batches_and_parts(
    buckets: tuple[Bucket, Bucket],
) -> None:
    ingestion, processed = buckets
    first = [designs([1, 2, 3], "v1"), designs([4, 5], "v1")]  # one batch in two parts
    second = [designs([2, 5], "v2"), designs([5, 6], "v3")]  # 5 changed twice: the later part wins
    extracted(ingestion, first, second)

    result = transform_table(ingestion, processed, "dim_design")

    log = BatchLog(processed, "transform", "dim_design")
    (batch,) = log.follow(None).batches
    rows = pa.concat_tables(list(log.read(batch))).to_pylist()
    names = {r["design_id"]: r["design_name"] for r in rows}
    assert len(rows) == len(names) == result.rows == 6  # every key once, in whichever part
    assert names == {1: "v1 1", 2: "v2 2", 3: "v1 3", 4: "v1 4", 5: "v3 5", 6: "v3 6"}
    assert len(batch.parts) > 1  # written part by part, not as one table
