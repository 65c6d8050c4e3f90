"""Reconciliation: what the source holds now against what the lake has taken, range by range of the key.

The idea: the incremental extract trusts `last_updated` and its own state; a reconciliation checks both without
moving the table. Rows are grouped into key ranges (`key / range_size`, integer division truncating towards zero
on both sides). Each side computes a few numbers per range, the source inside PostgreSQL and the lake from its
ledger, and only the ranges whose numbers differ are read again from the source and compared row by row.

The numbers come in two tiers (lambdas/common/digest.py):

- **the census, every range, every time** (count, sum of keys, sum of last_updated in microseconds) finds a row
  lost from the lake or from lost extract state, a row inserted upstream with an old `last_updated`, a row
  deleted upstream, and an update the watermark missed (its `last_updated` moved);
- **the content digest, for a rotating share of the ranges** (the sum of every row's MD5-based hash) also finds
  what the census cannot see: a value changed without `last_updated` moving. The extract advances the share by
  one each reconciliation, so with `DEFAULT_CONTENT_EVERY` = 7 every row's content is verified within 7 nightly
  reconciliations; a table under `WHOLE_TABLE_ROWS` rows is digested whole every time.

The parts, one concern each: `source_ranges` (the source's figures and its rows re-read), `ledger` (the lake's
ledger and its figures; rows are hashed lazily, when their range is first needed), `drift` (which rows differ).
This module puts them together for one table. Call it inside one `source.snapshot(con)`, so the figures and the
rows re-read agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pg8000.native
import pyarrow as pa
import pyarrow.compute as pc

from lambdas.common.catalog import Column
from lambdas.common.digest import (
    DEFAULT_RANGE_SIZE,
    ContentShare,
    RangeFigures,
    differing_ranges,
    range_numbers,
)
from lambdas.extract.drift import Drift, diff_ledger
from lambdas.extract.ledger import fill, lake_digests, latest_rows, ledger, ledger_figures
from lambdas.extract.source import WATERMARK_COLUMN
from lambdas.extract.source_ranges import range_intervals, source_digests, source_figures, source_rows

__all__ = [
    "DEFAULT_RANGE_SIZE", "Drift", "ReconcileResult", "Reconciliation", "lake_digests", "range_intervals",
    "reconcile", "reconcile_ledger", "source_digests",
]  # fmt: skip

_DELETED_SAMPLE = 20  # deleted keys named in the JSON result; the full list stays in Drift


@dataclass(frozen=True)
class ReconcileResult:
    """What one table's reconciliation found, for the stage's JSON result, the run report and a metric."""

    table: str
    ranges_compared: int
    ranges_differing: int
    source_rows_read: int
    rows_changed: int
    rows_changed_quietly: int
    rows_missing: int
    rows_deleted: int
    deleted_keys_sample: tuple[int, ...] = ()
    content_share: tuple[int, int] = (1, 0)  # (every, turn): the ranges whose content digest was compared

    @property
    def drifted(self) -> bool:
        return self.ranges_differing > 0

    def as_dict(self) -> dict[str, object]:
        return {
            "table": self.table,
            "ranges_compared": self.ranges_compared,
            "ranges_differing": self.ranges_differing,
            "source_rows_read": self.source_rows_read,
            "rows_changed": self.rows_changed,
            "rows_changed_quietly": self.rows_changed_quietly,
            "rows_missing": self.rows_missing,
            "rows_deleted": self.rows_deleted,
            "deleted_keys_sample": list(self.deleted_keys_sample),
            "content_share": {"every": self.content_share[0], "turn": self.content_share[1]},
        }


@dataclass(frozen=True)
class Reconciliation:
    """The rows to feed through the stages, the ledger it compared (hashed where it had to be), and the counts."""

    drift: Drift
    result: ReconcileResult
    entries: pa.Table


def reconcile(
    con: pg8000.native.Connection,
    table: str,
    columns: list[Column],
    primary_key: str,
    lake_rows: pa.Table,
    *,
    range_size: int = DEFAULT_RANGE_SIZE,
    share: ContentShare | None = None,
) -> Reconciliation:
    """One table end to end against the lake's rows in hand (every version; the last of a key counts); by default
    the whole table's content is compared."""
    entries = ledger(latest_rows(lake_rows, columns, primary_key), columns, primary_key, seq=0)
    return reconcile_ledger(con, table, columns, primary_key, entries, range_size=range_size, share=share)


def reconcile_ledger(
    con: pg8000.native.Connection,
    table: str,
    columns: list[Column],
    primary_key: str,
    entries: pa.Table,
    *,
    range_size: int = DEFAULT_RANGE_SIZE,
    share: ContentShare | None = None,
    batch_rows: Callable[[int], pa.Table] | None = None,
) -> Reconciliation:
    """`reconcile` against a ledger with one entry per key (what the extract keeps between reconciliations), whose
    unhashed entries are hashed from `batch_rows(seq)` where the comparison needs them."""
    share = share or ContentShare()
    stamped = WATERMARK_COLUMN in {c.name for c in columns}
    source = source_figures(con, table, columns, primary_key, range_size, share)
    # The census needs no hash: the ranges it finds differing are hashed below with the share's, for the diff.
    census = ledger_figures(entries, range_size, None, stamped=stamped)
    census_differing = pa.array(
        [r for r in source.keys() | census.keys() if _census(source.get(r)) != _census(census.get(r))], pa.int64()
    )
    numbers = range_numbers(entries["key"], range_size)
    needed = pc.or_(share.due(numbers), pc.is_in(numbers, value_set=census_differing))
    entries = fill(entries, needed, batch_rows, columns, primary_key)
    lake = ledger_figures(entries, range_size, share, stamped=stamped)
    ranges = differing_ranges(source, lake)
    reread = source_rows(con, table, columns, primary_key, ranges, range_size)
    drift = diff_ledger(reread, entries, columns, primary_key, ranges, range_size)
    result = ReconcileResult(
        table=table,
        ranges_compared=len(source.keys() | lake.keys()),
        ranges_differing=len(ranges),
        source_rows_read=reread.num_rows,
        rows_changed=drift.changed,
        rows_changed_quietly=len(drift.quiet_keys),
        rows_missing=drift.missing,
        rows_deleted=drift.deleted,
        deleted_keys_sample=tuple(drift.deleted_keys[:_DELETED_SAMPLE].to_pylist()),
        content_share=(share.every, share.turn),
    )
    return Reconciliation(drift, result, entries)


def _census(figures: RangeFigures | None) -> tuple[int, tuple[int, ...]] | None:
    return None if figures is None else figures.census()
