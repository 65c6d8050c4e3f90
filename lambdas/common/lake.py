"""How the pipeline's data and state sit in S3: append-only batch logs with a committed head.

Each stage writes its output as a *batch log* per table:

    {table}/{seq:010d}/part-{n:05d}-{token}.parquet   the rows, never overwritten (unique token)
    {table}/{seq:010d}/_manifest.json                 the parts of batch `seq` and their row counts
    _state/{stage}/{table}.json                       the head: last committed `seq` and the stage's state

A batch is committed when the head names it. The head is written last, after the parts and the manifest
are durable, so a crash at any point leaves either the old head (the batch is redone with the same seq
and its manifest rewritten; nobody has read it) or the new one. Readers follow `seq` from their own cursor
up to the head with direct GETs, so their cost grows with the new batches, never with the history and
never with an S3 listing.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

from lambdas.common.errors import PipelineError

STATE_PREFIX = "_state"
CURRENT_PREFIX = "_current"  # the transform's snapshots of what each warehouse table currently holds


def _is_missing(error: ClientError) -> bool:
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

    def get_json(self, key: str) -> dict[str, Any] | None:
        try:
            body = self.s3.get_object(Bucket=self.name, Key=key)["Body"].read()
        except ClientError as error:
            if _is_missing(error):
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

    def get_parquet(self, key: str) -> pa.Table:
        body = self.s3.get_object(Bucket=self.name, Key=key)["Body"].read()
        return pq.read_table(io.BytesIO(body))


@dataclass(frozen=True)
class Batch:
    """One committed (or about to be committed) batch of a table's log."""

    table: str
    seq: int
    parts: tuple[str, ...]
    rows: int
    meta: dict[str, Any] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        return {"table": self.table, "seq": self.seq, "parts": list(self.parts), "rows": self.rows, "meta": self.meta}


def batch_prefix(table: str, seq: int) -> str:
    return f"{table}/{seq:010d}/"


def head_key(stage: str, table: str) -> str:
    return f"{STATE_PREFIX}/{stage}/{table}.json"


class BatchLog:
    """The append-only log of one table in one bucket, written by one stage."""

    def __init__(self, bucket: Bucket, stage: str, table: str) -> None:
        self.bucket, self.stage, self.table = bucket, stage, table

    def head(self) -> dict[str, Any]:
        """The committed head: `seq` (0 before the first batch) and whatever state the stage keeps."""
        return self.bucket.get_json(head_key(self.stage, self.table)) or {"seq": 0}

    def write(self, seq: int, parts: Iterable[pa.Table], meta: dict[str, Any] | None = None) -> Batch | None:
        """Write the parts and manifest of batch `seq`; returns None (and writes nothing) if all are empty."""
        token = uuid.uuid4().hex[:12]
        keys: list[str] = []
        rows = 0
        for table in parts:
            if table.num_rows == 0:
                continue
            key = f"{batch_prefix(self.table, seq)}part-{len(keys):05d}-{token}.parquet"
            self.bucket.put_parquet(key, table)
            keys.append(key)
            rows += table.num_rows
        if not keys:
            return None
        batch = Batch(self.table, seq, tuple(keys), rows, meta or {})
        self.bucket.put_json(f"{batch_prefix(self.table, seq)}_manifest.json", batch.manifest())
        return batch

    def commit(self, head: dict[str, Any]) -> None:
        """Make the head (and with it every batch up to head['seq']) visible to the next stage."""
        self.bucket.put_json(head_key(self.stage, self.table), head)

    def batches(self, after: int, upto: int) -> Iterator[Batch]:
        """The committed batches after a reader's cursor, oldest first."""
        for seq in range(after + 1, upto + 1):
            manifest = self.bucket.get_json(f"{batch_prefix(self.table, seq)}_manifest.json")
            if manifest is None:
                raise PipelineError(f"{self.table}: batch {seq} is committed but its manifest is missing")
            yield Batch(self.table, seq, tuple(manifest["parts"]), int(manifest["rows"]), manifest.get("meta", {}))

    def read(self, batch: Batch) -> Iterator[pa.Table]:
        for key in batch.parts:
            yield self.bucket.get_parquet(key)


def concat(tables: Iterable[pa.Table]) -> pa.Table | None:
    """Batches written before and after a source schema change still combine (missing columns are null)."""
    collected = [t for t in tables if t.num_rows]
    if not collected:
        return None
    return pa.concat_tables(collected, promote_options="permissive")
