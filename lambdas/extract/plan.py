"""A partitioned extract's documents and payloads: what its plan fixes, what each key range reports, and the events
that start a range or the commit.

The idea (the algorithm and its exactly-once argument are in lambdas/extract/partitioned.py): the plan step stores
a `Plan` inside the batch it will become and answers the state machine with a `PlanResult`, whose ranges an inner
Map turns into one `ExtractRangeRequest` each, then one `CommitRequest`. Each range stores a `RangeManifest`; the
commit believes nothing it has not validated: a plan or a range manifest that does not validate fails the table
with a `PipelineError` naming the object and the field.

The two stored documents carry a format version (lambdas/common/documents.py): format 1, written before formats
existed, is read and upgraded; a newer one is refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from lambdas.common.documents import Document
from lambdas.common.keys import plan_key

ACTION_RANGE, ACTION_COMMIT = "extract_range", "commit"
PARTITIONED, RANGE_EXTRACTED = "partitioned", "range extracted"  # statuses of a plan's and a range's results
INT8 = (-(2**63), 2**63 - 1)  # the ends of the first and the last range: every key has a range


class Plan(Document):
    """What a partitioned extract fixed before any range ran; stored as `_plan-<token>.json` in its batch."""

    table: StrictStr
    seq: StrictInt = Field(ge=1)
    token: StrictStr
    log: StrictStr  # the log id the batch belongs to (a new one for a repair)
    base: StrictInt = Field(ge=1)  # the first batch of that log's epoch
    prev: StrictStr | None  # the head's last batch id when the plan was made (None: the epoch's first batch)
    rebuilt: bool  # a repair: the plan starts a new epoch, whose head is written by the commit
    full_refresh: bool
    clock: datetime  # P, the source's clock at the plan
    key: StrictStr
    columns: list[list[StrictStr]]
    ranges: list[tuple[int, int]] = Field(min_length=1)
    identity: dict[str, Any]
    lookback_seconds: float
    rows_estimated: int

    @property
    def object_key(self) -> str:
        return plan_key(self.table, self.seq, self.token)


class RangeManifest(Document):
    """What one key range of a plan wrote: `_range-<token>-<n>.json`, replaced only by a retry of that range."""

    plan: StrictStr  # the plan's token
    range: StrictInt
    low: int
    high: int
    clock: datetime  # C_i, the source's clock in the range's snapshot
    newest: datetime | None  # the newest last_updated the range read
    parts: list[StrictStr]
    part_rows: list[int]
    rows: int
    versions: StrictStr  # the (key, last_updated) versions read near the watermark-to-be
    versions_rows: int


class RangeBounds(BaseModel):
    """A range as the state machine shows it in the console (None: open to every int8); the bounds that count are
    the plan's."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    range: StrictInt = Field(ge=0)
    low: int | None = None
    high: int | None = None


class PlanResult(BaseModel):
    """The plan step's answer: the state machine's inner Map iterates `ranges`, then commits `plan`."""

    model_config = ConfigDict(frozen=True)

    table: str
    stage: str
    status: Literal["partitioned"] = PARTITIONED
    plan: str  # the plan object's key
    batch: int
    rows_estimated: int
    ranges: list[RangeBounds]
