"""S3 object I/O for the stages: one bucket's JSON documents and Parquet tables, and nothing about what they mean.

What the objects mean (batch logs and their heads) is lambdas/common/lake.py; what a stored JSON document may hold
is lambdas/common/documents.py. Here: get and put, a missing object read as None, and a Parquet object's row count
read from its footer alone.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import ClientError


def is_missing(error: ClientError) -> bool:
    """Whether an S3 error says the object does not exist (GET and HEAD name it differently)."""
    return error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")


@lru_cache(maxsize=1)
def s3_client() -> Any:
    """One client per container: creating one costs ~0.1 s, and every stage touches S3 a dozen times."""
    return boto3.client("s3")


class Bucket:
    """The few S3 operations the stages need, with Parquet and JSON (de)serialisation in one place."""

    def __init__(self, name: str, client: Any | None = None) -> None:
        self.name = name
        self.s3 = client or s3_client()

    def uri(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def get_json(self, key: str) -> Any:
        """The object's JSON value (a document's model checks what it is), or None when there is no object."""
        try:
            body = self.s3.get_object(Bucket=self.name, Key=key)["Body"].read()
        except ClientError as error:
            if is_missing(error):
                return None
            raise
        return json.loads(body)

    def put_json(self, key: str, value: dict[str, Any]) -> None:
        body = json.dumps(value, indent=1, sort_keys=True, default=str).encode()
        self.s3.put_object(Bucket=self.name, Key=key, Body=body, ContentType="application/json")

    def put_parquet(self, key: str, table: pa.Table) -> None:
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        self.s3.put_object(
            Bucket=self.name, Key=key, Body=sink.getvalue(), ContentType="application/vnd.apache.parquet"
        )

    def parquet_rows(self, key: str, *, tail: int = 64 * 1024) -> int:
        """The row count a Parquet object's footer states, read with ranged GETs (the rows are not downloaded)."""
        got = self.s3.get_object(Bucket=self.name, Key=key, Range=f"bytes=-{tail}")
        end = got["Body"].read()
        size = int(str(got.get("ContentRange", f"/{len(end)}")).rsplit("/", 1)[-1])
        if len(end) < 8 or end[-4:] != b"PAR1":
            raise pa.ArrowInvalid(f"{self.uri(key)} does not end as Parquet does")
        footer = int.from_bytes(end[-8:-4], "little") + 8
        if footer > size:
            raise pa.ArrowInvalid(f"{self.uri(key)} states a footer longer than the object")
        if footer > len(end):
            got = self.s3.get_object(Bucket=self.name, Key=key, Range=f"bytes=-{footer}")
            end = got["Body"].read()
        # the footer alone, behind the 4-byte magic a reader expects at the start of a file
        return pq.read_metadata(io.BytesIO(b"PAR1" + end[-footer:])).num_rows

    def get_parquet(self, key: str, columns: Sequence[str] | None = None) -> pa.Table:
        """The object as a table; with `columns`, only those of them it has (a reader that needs a few columns
        of wide parts decodes only those; one that needs a column the part lacks says so itself)."""
        body = self.s3.get_object(Bucket=self.name, Key=key)["Body"].read()
        if columns is None:
            return pq.read_table(io.BytesIO(body))
        parquet = pq.ParquetFile(io.BytesIO(body))
        present = set(parquet.schema_arrow.names)
        return parquet.read(columns=[c for c in columns if c in present])
