"""One run at a time: a lease object in the ingestion bucket, taken with S3 conditional writes.

A scheduled run that starts while another is still going must not process the same tables. The first
state of the workflow takes the lease (create-only PUT); a run that finds it held by a live execution
ends cleanly and says so. The lease is released after the report; if its holder died without releasing
(aborted, timed out, killed), the lease is taken over as soon as the holder is known not to be running,
or when it expires, with a PUT conditional on the ETag read, so two runs can never both win.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from lambdas.common.documents import Document
from lambdas.common.errors import PipelineError
from lambdas.common.keys import lease_key


class Lease(Document):
    """The lease object (lambdas/common/documents.py: format 1, without the field, is read; a newer one refused)."""

    holder: str
    acquired_at: datetime
    expires_at: datetime

    @staticmethod
    def parse(body: bytes, bucket: str) -> Lease:
        return Lease.load(json.loads(body), where=f"the run lease s3://{bucket}/{lease_key()}", fail=PipelineError)


@dataclass(frozen=True)
class LeaseResult:
    acquired: bool
    holder: str
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"acquired": self.acquired, "holder": self.holder, "reason": self.reason}


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _lease_body(execution_id: str, now: datetime, ttl: timedelta) -> bytes:
    return json.dumps(Lease(holder=execution_id, acquired_at=now, expires_at=now + ttl).dump()).encode()


def acquire(
    s3: Any, bucket: str, execution_id: str, *, now: datetime, ttl: timedelta, is_running: Callable[[str], bool]
) -> LeaseResult:
    """Take the lease for `execution_id`, or report who holds it."""
    body = _lease_body(execution_id, now, ttl)
    try:
        s3.put_object(Bucket=bucket, Key=lease_key(), Body=body, IfNoneMatch="*")
        return LeaseResult(True, execution_id, "the lease was free")
    except ClientError as error:
        if _code(error) not in ("PreconditionFailed", "ConditionalRequestConflict"):
            raise
    try:
        current = s3.get_object(Bucket=bucket, Key=lease_key())
    except ClientError as error:
        if _code(error) in ("NoSuchKey", "404"):  # released between our two requests: try once more
            return acquire(s3, bucket, execution_id, now=now, ttl=ttl, is_running=is_running)
        raise
    lease = Lease.parse(current["Body"].read(), bucket)
    holder = lease.holder
    if holder == execution_id:
        return LeaseResult(True, holder, "this execution already holds the lease (redriven)")
    if now < lease.expires_at and is_running(holder):
        return LeaseResult(False, holder, f"another run is in progress: {holder}")
    try:
        s3.put_object(Bucket=bucket, Key=lease_key(), Body=body, IfMatch=current["ETag"])
    except ClientError as error:
        if _code(error) in ("PreconditionFailed", "ConditionalRequestConflict"):
            return LeaseResult(False, holder, "another run took the stale lease first")
        raise
    return LeaseResult(True, execution_id, f"took over the lease of {holder}, which is no longer running")


def release(s3: Any, bucket: str, execution_id: str) -> bool:
    """Give the lease back if this execution holds it; True when it did."""
    try:
        current = s3.get_object(Bucket=bucket, Key=lease_key())
    except ClientError as error:
        if _code(error) in ("NoSuchKey", "404"):
            return False
        raise
    if Lease.parse(current["Body"].read(), bucket).holder != execution_id:
        return False
    try:
        s3.delete_object(Bucket=bucket, Key=lease_key(), IfMatch=current["ETag"])
    except ClientError as error:
        if _code(error) in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        if _code(error) not in ("NotImplemented", "InvalidArgument", "InvalidRequest"):
            raise
        # A store without conditional deletes: the holder was checked just above, and a live holder's
        # lease is never taken over before it expires, so a plain delete is safe here.
        s3.delete_object(Bucket=bucket, Key=lease_key())
    return True
