"""Every S3 key pattern of the pipeline, spelled here and only here.

Its own module, with no import beyond the standard library, because functions that carry no Arrow (the report gives
the run lease back) name keys too; lambdas/common/lake.py, which reads and writes what they name, re-exports them.
"""

from __future__ import annotations

import uuid

# The handlers, the lease, the local runner and the CDK grants (cdk/stack.py) all call these functions, which
# read the prefixes when called, so renaming a prefix renames the keys and the IAM grants together.
STATE_PREFIX = "_state"  # heads, cursors, watermarks and the run lease: what every next run trusts
CURRENT_PREFIX = "_current"  # the transform's snapshots of what each warehouse table currently holds
HELD_PREFIX = "_held"  # fact rows held back for a missing dimension row
RECONCILE_STAGE = "reconcile"
VERIFY_STAGE = "verify"  # the warehouse verified against the processed lake (lambdas/load/verify.py)
LEASE_NAME = "run-lease.json"


def table_prefix(table: str) -> str:
    """Everything of one table's batch log: its batches' parts and manifests."""
    return f"{table}/"


def lease_key() -> str:
    """The one object of the run lease, in the ingestion bucket."""
    return f"{STATE_PREFIX}/{LEASE_NAME}"


def current_prefix() -> str:
    return f"{CURRENT_PREFIX}/"


def current_key(table: str, source: str, seq: int) -> str:
    """The transform's snapshot of the rows of ``source`` that ``table`` holds after batch ``seq``: new per batch."""
    return f"{current_prefix()}{table}/{source}/{seq:010d}.parquet"


def reconcile_prefix(table: str) -> str:
    return f"_{RECONCILE_STAGE}/{table}/"


def reconcile_snapshot_key(table: str, seq: int) -> str:
    """A reconciliation's ledger (key, row hash, last_updated of each key's latest version), new per
    reconciliation; its checkpoint `_state/reconcile/<table>.json` names it."""
    return f"{reconcile_prefix(table)}{seq:010d}-{new_id()}.parquet"


def verify_prefix(table: str) -> str:
    return f"_{VERIFY_STAGE}/{table}/"


def verify_ledger_key(table: str, seq: int) -> str:
    """A verification's ledger of the processed lake (identity, range key, row hash of every row the warehouse
    should hold), new per verification; its checkpoint `_state/verify/<table>.json` names it."""
    return f"{verify_prefix(table)}{seq:010d}-{new_id()}.parquet"


def held_prefix(table: str) -> str:
    """Where a fact's held sets live (outside the table's batch log, so lifecycle rules never expire them)."""
    return f"{HELD_PREFIX}/{table}/"


def held_key(table: str, seq: int) -> str:
    """A new, never-overwritten name: a redone load writes another object, the head says which one counts."""
    return f"{held_prefix(table)}{seq:010d}-{uuid.uuid4().hex[:12]}.parquet"


def under(prefix: str) -> str:
    """The grant pattern of every key under ``prefix`` (an IAM resource wildcard)."""
    return f"{prefix}*"


def batch_prefix(table: str, seq: int) -> str:
    return f"{table_prefix(table)}{seq:010d}/"


def manifest_key(table: str, seq: int) -> str:
    return f"{batch_prefix(table, seq)}_manifest.json"


def head_key(stage: str, table: str) -> str:
    return f"{STATE_PREFIX}/{stage}/{table}.json"


# A partitioned extract (lambdas/extract/partitioned.py) writes its plan and each key range's output inside the
# batch it will become; `token` is the plan's, so a later plan for the same batch number never meets these
# objects, and nothing names them until the batch's manifest does.
def plan_key(table: str, seq: int, token: str) -> str:
    return f"{batch_prefix(table, seq)}_plan-{token}.json"


def range_manifest_key(table: str, seq: int, token: str, part: int) -> str:
    """What key range ``part`` of a plan wrote: overwritten by a retry of that range, and only by it."""
    return f"{batch_prefix(table, seq)}_range-{token}-{part:04d}.json"


def range_part_key(table: str, seq: int, token: str, part: int, attempt: str, n: int) -> str:
    """A key range's rows: new names per attempt, so a retried range never overwrites what an earlier one wrote."""
    return f"{batch_prefix(table, seq)}part-{token}-r{part:04d}-{attempt}-{n:05d}.parquet"


def range_versions_key(table: str, seq: int, token: str, part: int, attempt: str) -> str:
    """The (key, last_updated) versions a key range read near the watermark the plan's commit will take."""
    return f"{batch_prefix(table, seq)}_range-{token}-{part:04d}-{attempt}-versions.parquet"


def new_id() -> str:
    """A random id: of a batch, a log, or an object name no retry can collide with."""
    return uuid.uuid4().hex[:16]
