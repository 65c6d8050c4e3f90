"""The incremental read window: a watermark taken from the data, and a lookback that catches late commits.

totesys sets `last_updated = now()` inside the application's own transaction, so a row can become
visible after a run has already read past its timestamp. Each run therefore re-reads a window that
starts `lookback` before the watermark and drops the versions it has already seen; those are remembered
as (primary key, last_updated) pairs for exactly that window, so the state stays small. Guarantee: every
version whose transaction commits within `lookback` of its `last_updated` is extracted exactly once; a
full refresh catches anything later (and the loads ignore versions they already hold).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from lambdas.common.documents import problem

TS = pa.timestamp("us")
_TS = TS


class SeenVersions(BaseModel):
    """The versions already extracted near the watermark, as two parallel lists."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: list[int] = []
    last_updated: list[datetime] = []

    @model_validator(mode="after")
    def _paired(self) -> SeenVersions:
        if len(self.key) != len(self.last_updated):
            raise ValueError(f"{len(self.key)} keys but {len(self.last_updated)} last_updated values")
        return self


class WatermarkState(BaseModel):
    """The watermark's part of the extract head (lambdas/common/documents.HeadDocument, whose format it shares):
    the watermark and the versions seen near it. Other fields of the head's state are not its concern."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    watermark: datetime | None = None
    seen: SeenVersions = SeenVersions()


@dataclass(frozen=True)
class Watermark:
    """The highest last_updated extracted so far, and the versions already seen near it."""

    value: datetime | None
    seen: pa.Table  # columns: key (int64), last_updated (timestamp[us])

    @staticmethod
    def empty() -> Watermark:
        return Watermark(None, _keys_table([], []))

    @staticmethod
    def from_state(state: dict[str, Any]) -> Watermark:
        """The watermark an extract head's state holds; a ValueError naming the field that cannot be read."""
        try:
            stored = WatermarkState.model_validate(state)
        except ValidationError as error:
            raise ValueError(problem(error)) from None
        if stored.watermark is None:
            return Watermark.empty()
        return Watermark(stored.watermark, _keys_table(stored.seen.key, stored.seen.last_updated))

    def to_state(self) -> dict[str, Any]:
        seen = SeenVersions(key=self.seen["key"].to_pylist(), last_updated=self.seen["last_updated"].to_pylist())
        return WatermarkState(watermark=self.value, seen=seen).model_dump(mode="json")

    def window_start(self, lookback: timedelta) -> datetime | None:
        return None if self.value is None else self.value - lookback


def _keys_table(keys: list[int], last_updated: list[datetime]) -> pa.Table:
    return pa.table({"key": pa.array(keys, pa.int64()), "last_updated": pa.array(last_updated, _TS)})


def version_keys(batch: pa.Table | pa.RecordBatch, primary_key: str) -> pa.Table:
    """The (key, last_updated) pairs that identify each row version of a batch."""
    return pa.table(
        {
            "key": pc.cast(batch[primary_key], pa.int64()),
            "last_updated": pc.cast(batch["last_updated"], _TS),
        }
    )


def drop_seen(batch: pa.Table, primary_key: str, seen: pa.Table) -> pa.Table:
    """The rows of `batch` whose version is not in `seen` (order kept)."""
    if seen.num_rows == 0 or batch.num_rows == 0:
        return batch
    keys = version_keys(batch, primary_key).append_column("__row", pa.array(range(batch.num_rows), pa.int64()))
    fresh = keys.join(seen, keys=["key", "last_updated"], join_type="left anti")
    rows = fresh["__row"]
    return batch.take(pc.take(rows, pc.sort_indices(rows)))


def advance(previous: Watermark, window_keys: pa.Table, lookback: timedelta, clock: datetime) -> Watermark:
    """The next watermark from the versions the window read (seen or new): max last_updated, from the data, but
    never later than the source's clock at the read. Rows stamped in the future (a skewed application clock) are
    then re-read by every window and dropped as seen, instead of pushing the watermark past every row to come."""
    if window_keys.num_rows == 0:
        return previous
    top = min(pc.max(window_keys["last_updated"]).as_py(), clock)
    value = top if previous.value is None else max(previous.value, top)
    start = pa.scalar(value - lookback, _TS)
    recent = window_keys.filter(pc.greater_equal(window_keys["last_updated"], start))
    return Watermark(value, recent.group_by(["key", "last_updated"]).aggregate([]))
