"""How the pipeline's data and state sit in S3: append-only batch logs with a committed head, checked on read.

Each stage writes its output as a *batch log* per table:

    {table}/{seq:010d}/part-{n:05d}-{token}.parquet   the rows, never overwritten (unique token)
    {table}/{seq:010d}/_manifest.json                 the parts of batch `seq`, their row counts, its chain links
    _state/{stage}/{table}.json                       the head: last committed `seq` and the stage's state

A batch is committed when the head names it. The head is written last, after the parts and the manifest
are durable, so a crash at any point leaves either the old head (the batch is redone with the same seq
and its manifest rewritten; nobody has read it) or the new one. Readers follow `seq` from their own cursor
up to the head with direct GETs, so their cost grows with the new batches, never with the history and
never with an S3 listing.

Nothing read here is believed unchecked (docs/guarantees.md, "State that cannot be believed"):
- every batch has a random id and names the id of the batch before it (`prev`), and the head names the id of
  its last batch, so a reader's cursor (seq, log, batch id) detects a head that was lost, restored or rewound
  and a batch that was replaced: the chain from its cursor to the head must be unbroken;
- a log is created with a head at seq 0 before its first batch, so a missing head beside existing batches is
  an error, never a fresh start;
- a manifest's parts must be inside its batch, exist, be Parquet, and hold the row counts the manifest says.
A deliberate rebuild (the repair) starts a new *epoch* of the log: a new log id, and a `base` batch that holds
the whole table. Readers on an older epoch follow it from the base batch; any other change of log id is an error.
Any violation raises StateError, which names the object and the repair command.

Heads and manifests are stored through their models in lambdas/common/documents.py, which carry a format version:
one written by an earlier release is upgraded as it is read, one written by a newer release is refused
(NewerFormatError). S3 itself (get, put, Parquet footers) is lambdas/common/bucket.py, re-exported here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
from botocore.exceptions import ClientError
from pydantic import ValidationError

from lambdas.common.bucket import Bucket, is_missing, s3_client
from lambdas.common.documents import (
    LENIENT_STAGES,
    READER_DOCUMENTS,
    Cursor,
    Document,
    HeadDocument,
    ManifestDocument,
    NewerFormatError,
)
from lambdas.common.errors import StateError
from lambdas.common.keys import batch_prefix, head_key, manifest_key, new_id

# Importable from here as before the split (the stages and the local runner import them from lake).
__all__ = ["Batch", "BatchLog", "Bucket", "Head", "ReaderState", "Reading", "concat", "s3_client"]


@dataclass(frozen=True)
class Batch:
    """One committed (or about to be committed) batch of a table's log."""

    table: str
    seq: int
    parts: tuple[str, ...]
    rows: int
    meta: dict[str, Any] = field(default_factory=dict)
    part_rows: tuple[int, ...] = ()
    id: str = ""
    log: str = ""
    prev: str | None = None  # the id of batch seq - 1 of the same epoch; None for an epoch's first batch

    def manifest(self) -> dict[str, Any]:
        """The stored manifest, in the current format."""
        document = ManifestDocument(table=self.table, seq=self.seq, parts=list(self.parts), rows=self.rows,
                                    part_rows=list(self.part_rows), meta=self.meta, id=self.id, log=self.log,
                                    prev=self.prev)  # fmt: skip
        return document.dump()


@dataclass(frozen=True)
class Head:
    """A log's committed head: the last batch, the epoch it belongs to, and the stage's own state."""

    seq: int = 0
    log: str = field(default_factory=new_id)
    base: int = 1  # the first batch of the current epoch (seq + 1 while the epoch is still empty)
    last: str | None = None  # the id of batch `seq` when seq >= base
    rebuilt: bool = False  # the epoch was started on purpose (the repair): readers of older epochs follow it
    state: dict[str, Any] = field(default_factory=dict)
    stored: bool = False

    def as_json(self) -> dict[str, Any]:
        """The stored head, in the current format: its own fields, and the stage's state beside them."""
        return HeadDocument(**self.state, seq=self.seq, log=self.log, base=self.base, last=self.last,
                            rebuilt=self.rebuilt).dump()  # fmt: skip

    @staticmethod
    def from_document(document: HeadDocument) -> Head:
        """The head a stored (and validated) head document describes."""
        return Head(document.seq, document.log, document.base, document.last, document.rebuilt, document.state,
                    stored=True)  # fmt: skip

    def cursor(self) -> dict[str, Any]:
        """What a reader that has taken everything up to this head remembers."""
        return {"seq": self.seq, "log": self.log, "batch": self.last}


@dataclass(frozen=True)
class Reading:
    """What a reader has not taken yet, and the cursor to remember once it has."""

    batches: list[Batch]
    cursor: dict[str, Any] | None
    restarted: bool  # the log was rebuilt: the batches start at the new epoch's base, which holds the whole table


class BatchLog:
    """The append-only log of one table in one bucket, written by one stage."""

    def __init__(self, bucket: Bucket, stage: str, table: str, *, lineage: Iterable[str] = ()) -> None:
        self.bucket, self.stage, self.table = bucket, stage, table
        self.lineage = tuple(lineage) or (table,)  # the source tables a repair of this log re-extracts

    def fail(self, problem: str) -> StateError:
        return StateError(f"{self.stage} log of {self.table}: {problem}", tables=self.lineage)

    @property
    def head_uri(self) -> str:
        return self.bucket.uri(head_key(self.stage, self.table))

    def head(self) -> Head:
        """The committed head, checked; a log that was never written gets a new (not yet stored) head."""
        raw = self.bucket.get_json(head_key(self.stage, self.table))
        if raw is None:
            if self.bucket.get_json(manifest_key(self.table, 1)) is not None:
                raise self.fail(f"the head {self.head_uri} is missing, but the log has batches "
                                f"({self.bucket.uri(manifest_key(self.table, 1))} exists)")  # fmt: skip
            return Head()
        return self._parse_head(raw)

    def stored_head(self) -> Head:
        """The committed head, checked, or a new one where none is stored, without looking for batches beside a
        missing head (head() does): for a reader that only compares cursors and may not read the log itself."""
        raw = self.bucket.get_json(head_key(self.stage, self.table))
        return Head() if raw is None else self._parse_head(raw)

    def _parse_head(self, raw: Any) -> Head:
        return Head.from_document(HeadDocument.load(raw, where=f"the head {self.head_uri}", fail=self.fail))

    def create(self, head: Head) -> None:
        """Store a new log's head (seq 0) before its first batch, so a lost head is never a fresh start."""
        if not head.stored:
            self.bucket.put_json(head_key(self.stage, self.table), head.as_json())

    def write(self, head: Head, parts: Iterable[pa.Table], meta: dict[str, Any] | None = None) -> Batch | None:
        """Write the parts and manifest of batch head.seq + 1; returns None (and writes nothing) if all are empty."""
        if not head.rebuilt:  # a repair's new epoch becomes visible only with its first batch, in commit
            self.create(head)
        seq = head.seq + 1
        token = uuid.uuid4().hex[:12]
        keys: list[str] = []
        counts: list[int] = []
        for table in parts:
            if table.num_rows == 0:
                continue
            key = f"{batch_prefix(self.table, seq)}part-{len(keys):05d}-{token}.parquet"
            self.bucket.put_parquet(key, table)
            keys.append(key)
            counts.append(table.num_rows)
        if not keys:
            return None
        return self.write_manifest(head, keys, counts, meta)

    def write_manifest(self, head: Head, keys: list[str], counts: list[int], meta: dict[str, Any] | None) -> Batch:
        """The manifest of batch head.seq + 1 over parts already written (by `write`, or by a partitioned extract's
        key ranges); the head that makes it visible is written after it, by `commit`."""
        seq = head.seq + 1
        prev = head.last if seq > head.base else None
        batch = Batch(self.table, seq, tuple(keys), sum(counts), meta or {}, tuple(counts), new_id(), head.log, prev)
        self.bucket.put_json(manifest_key(self.table, seq), batch.manifest())
        return batch

    def check_not_behind(self, head: Head) -> None:
        """The batch after the next must not exist: a head that was restored or rewound would overwrite history."""
        ahead = manifest_key(self.table, head.seq + 2)
        if self.bucket.get_json(ahead) is not None:
            raise self.fail(f"the head {self.head_uri} says batch {head.seq}, but {self.bucket.uri(ahead)} exists: "
                            "the head is behind its log (restored or edited)")  # fmt: skip

    def commit(self, head: Head, batch: Batch | None, state: dict[str, Any]) -> Head:
        """Make the head (and with it every batch up to it) visible to the next stage."""
        new = replace(head, state=state) if batch is None else replace(head, seq=batch.seq, last=batch.id, state=state)
        self.bucket.put_json(head_key(self.stage, self.table), new.as_json())
        return replace(new, stored=True)

    def last_written(self) -> int:
        """The highest seq with a manifest (batches are numbered without gaps), in O(log n) GETs."""
        exists = lambda seq: self.bucket.get_json(manifest_key(self.table, seq)) is not None  # noqa: E731
        high = 1
        while exists(high):
            high *= 2
        low = high // 2  # exists(low) or low == 0; not exists(high)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if exists(middle) else (low, middle)
        return low

    def start_epoch(self, state: dict[str, Any]) -> Head:
        """The head of a deliberate rebuild: a new log id after every batch ever written, whatever the old head says."""
        seq = self.last_written()
        return Head(seq=seq, base=seq + 1, last=None, rebuilt=True, state=state)

    def manifest(self, seq: int, log: str) -> Batch:
        key = manifest_key(self.table, seq)
        raw = self.bucket.get_json(key)
        if raw is None:
            raise self.fail(f"batch {seq} is committed but its manifest {self.bucket.uri(key)} is missing")
        prefix = batch_prefix(self.table, seq)
        stored = ManifestDocument.load(raw, where=f"the manifest {self.bucket.uri(key)}", fail=self.fail)
        batch = Batch(self.table, stored.seq, tuple(stored.parts), stored.rows, stored.meta or {},
                      tuple(stored.part_rows), stored.id, stored.log, stored.prev)  # fmt: skip
        problems = []
        if batch.seq != seq or stored.table != self.table:
            problems.append(f"it describes {stored.table!r} batch {batch.seq}")
        if not batch.parts:
            problems.append("it lists no parts")
        if len(batch.part_rows) != len(batch.parts) or sum(batch.part_rows) != batch.rows or batch.rows <= 0:
            problems.append(f"its part row counts {list(batch.part_rows)} do not add up to its {batch.rows} rows")
        if any(not (p.startswith(prefix) and p.endswith(".parquet")) for p in batch.parts):
            problems.append(f"it lists parts outside {prefix}")
        if batch.log != log:
            problems.append(f"it belongs to log {batch.log!r}, the head to {log!r}")
        if problems:
            raise self.fail(f"the manifest {self.bucket.uri(key)} cannot be believed: {'; '.join(problems)}")
        return batch

    def follow(self, cursor: Any) -> Reading:
        """The committed batches after a reader's cursor, oldest first, with the chain from the cursor checked."""
        head = self.head()
        if cursor is None:  # a new reader, or one whose cursor was lost: the current epoch holds everything
            start, expected, restarted = head.base, None, False
        elif not _is_cursor(cursor):
            raise self.fail(f"the reader's cursor {json.dumps(cursor, default=str)[:200]} is not a cursor this version "
                            "wrote")  # fmt: skip
        elif cursor["log"] != head.log:
            if not head.rebuilt:
                raise self.fail(f"the head {self.head_uri} starts a log ({head.log}) the reader never followed "
                                f"(it read log {cursor['log']} up to batch {cursor['seq']}); the head was lost or "
                                "replaced")  # fmt: skip
            start, expected, restarted = head.base, None, True
        elif cursor["seq"] > head.seq:
            raise self.fail(f"the reader has taken batch {cursor['seq']}, but the head {self.head_uri} says the log "
                            f"ends at batch {head.seq}: the head went back (restored or edited)")  # fmt: skip
        elif cursor["seq"] < head.base - 1:
            raise self.fail(f"the reader's cursor (batch {cursor['seq']}) is before the start of its own epoch "
                            f"(batch {head.base}) in {self.head_uri}")  # fmt: skip
        else:
            start, expected, restarted = cursor["seq"] + 1, cursor.get("batch"), False
        batches = []
        for seq in range(start, head.seq + 1):
            batch = self.manifest(seq, head.log)
            if batch.prev != (expected if seq > head.base else None):
                raise self.fail(f"batch {seq} ({self.bucket.uri(manifest_key(self.table, seq))}) does not follow "
                                f"the batch the reader took before it: it was replaced")  # fmt: skip
            batches.append(batch)
            expected = batch.id
        if expected != head.last:
            raise self.fail(f"the head {self.head_uri} names batch {head.last} as batch {head.seq}, but the reader "
                            f"took {expected}: batch {head.seq} was replaced")  # fmt: skip
        # a log not written yet has no id to follow: the reader stays new until it is
        return Reading(batches, head.cursor() if head.stored else None, restarted)

    def read(self, batch: Batch, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
        """The parts of a batch (only `columns` of them, if given), each checked against the row count its
        manifest promised."""
        for key, rows in zip(batch.parts, batch.part_rows, strict=True):
            try:
                table = self.bucket.get_parquet(key, columns)
            except ClientError as error:
                if is_missing(error):
                    raise self.fail(f"batch {batch.seq} lists {self.bucket.uri(key)}, which is missing") from error
                raise
            except (pa.ArrowException, OSError) as error:
                raise self.fail(f"{self.bucket.uri(key)} is not readable Parquet ({error})") from error
            if table.num_rows != rows:
                raise self.fail(f"{self.bucket.uri(key)} holds {table.num_rows} rows; its manifest says {rows}")
            yield table


class ReaderState:
    """A reader's own state beside the log it reads (the load's cursor and warehouse, a reconciliation's or a
    verification's checkpoint): one document (documents.READER_DOCUMENTS), written after the reader's work is
    durable, so a lost write only means the same batches are taken again."""

    def __init__(self, bucket: Bucket, stage: str, table: str, *, lineage: Iterable[str] = ()) -> None:
        self.bucket, self.stage, self.table = bucket, stage, table
        self.lineage = tuple(lineage) or (table,)
        self.document: type[Document] = READER_DOCUMENTS[stage]

    @property
    def key(self) -> str:
        return head_key(self.stage, self.table)

    def fail(self, problem: str) -> StateError:
        return StateError(f"{self.stage} state of {self.table}: {problem}", tables=self.lineage)

    def read(self) -> dict[str, Any] | None:
        """The stored state, upgraded to the current format and validated; None when there is none. A checkpoint
        that does not validate is read as none (it only saves work); one from a newer release is refused."""
        raw = self.bucket.get_json(self.key)
        if raw is None:
            return None
        where = self.bucket.uri(self.key)
        try:
            return self.document.load(raw, where=where, fail=self.fail).content()
        except NewerFormatError:
            raise
        except StateError:
            if self.stage in LENIENT_STAGES:
                return None
            raise

    def commit(self, state: dict[str, Any]) -> None:
        """Store the state in the current format (checked against its document first: a writer's mistake fails
        here, not in the next run's reader)."""
        self.bucket.put_json(self.key, self.document.model_validate(state).dump())


def _is_cursor(value: Any) -> bool:
    """Whether a reader's remembered cursor has the shape of one (documents.Cursor)."""
    try:
        Cursor.model_validate(value)
    except ValidationError:
        return False
    return True


def concat(tables: Iterable[pa.Table]) -> pa.Table | None:
    """Batches written before and after a source schema change still combine (missing columns are null)."""
    collected = [t for t in tables if t.num_rows]
    if not collected:
        return None
    return pa.concat_tables(collected, promote_options="permissive")
