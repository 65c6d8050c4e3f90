"""Drift: in the key ranges that differ, which source rows the lake lacks or holds otherwise, and which of the
lake's keys the source no longer has. Row by row, by key: the source's rows re-read against the lake's ledger."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from lambdas.common.catalog import Column
from lambdas.common.digest import range_numbers, row_hashes
from lambdas.common.errors import PipelineError
from lambdas.extract.ledger import conform
from lambdas.extract.source import WATERMARK_COLUMN


@dataclass(frozen=True)
class Drift:
    """What the lake lacks: source rows to write as a new ingestion batch, and keys deleted upstream."""

    rows: pa.Table  # the source's current versions, schema as changed_rows produces
    deleted_keys: pa.Array
    changed: int  # in the lake with another value
    missing: int  # not in the lake at all
    # Changed rows whose last_updated equals the lake's version's: a version the warehouse already holds
    # under the same (key, last_updated), so an insert-only fact table ignores it when loaded as new.
    quiet_keys: pa.Array

    @property
    def deleted(self) -> int:
        return len(self.deleted_keys)


def diff_ledger(
    source: pa.Table,
    entries: pa.Table,
    columns: list[Column],
    primary_key: str,
    ranges: Iterable[int],
    range_size: int,
) -> Drift:
    """The source rows the ledger lacks or holds otherwise, and the ledger's keys the source no longer has.

    `source` holds the source's rows in `ranges` (source_ranges.source_rows) and the ledger is hashed in those
    ranges; the ledger's keys outside them are not looked at, so keys the source never re-read are not mistaken
    for deleted ones.
    """
    if WATERMARK_COLUMN not in {c.name for c in columns}:
        raise PipelineError(f"column {WATERMARK_COLUMN!r} is missing, so versions cannot be told apart")
    wanted = pa.array(sorted(set(ranges)), pa.int64())
    entries = entries.filter(pc.is_in(range_numbers(entries["key"], range_size), value_set=wanted))
    if entries["hash"].null_count:
        raise ValueError("the ledger is not hashed in the ranges it is compared in")
    source = conform(source, columns)
    ours = pa.table(
        {
            "key": pc.cast(source[primary_key], pa.int64()),
            "source_hash": row_hashes(source, columns),
            "source_stamp": pc.cast(source[WATERMARK_COLUMN], pa.timestamp("us")),
            "row": pa.array(range(source.num_rows), pa.int64()),
        }
    )
    theirs = entries.select(["key", "hash", "stamp"]).rename_columns(["key", "lake_hash", "lake_stamp"])
    joined = ours.join(theirs, "key", join_type="left outer", use_threads=False).sort_by("row")
    absent = pc.is_null(joined["lake_hash"])
    different = pc.fill_null(pc.not_equal(joined["source_hash"], joined["lake_hash"]), False)
    quiet = pc.and_(different, pc.fill_null(pc.equal(joined["source_stamp"], joined["lake_stamp"]), False))
    deleted = pc.filter(theirs["key"], pc.invert(pc.is_in(theirs["key"], value_set=ours["key"])))
    return Drift(
        rows=source.take(pc.filter(joined["row"], pc.or_(absent, different))),
        deleted_keys=_sorted(deleted),
        changed=pc.sum(different).as_py() or 0,
        missing=pc.sum(absent).as_py() or 0,
        quiet_keys=_sorted(pc.filter(joined["key"], quiet)),
    )


def _sorted(keys: pa.Array | pa.ChunkedArray) -> pa.Array:
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    return keys.take(pc.sort_indices(keys))
