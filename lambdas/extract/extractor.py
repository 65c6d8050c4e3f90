"""One extract: the changed rows of one source table, written as a new batch, then the watermark.

The order of writes is the safety argument: Parquet parts, then the manifest, then the head that holds
the watermark. Until the head is written nothing downstream sees the batch, and a retry re-reads the
same window, so a crash anywhere loses nothing.

The head is checked before it is believed: it must come from this source database, must not be behind its
log, and its watermark must be neither later than the source's clock nor later than the newest row the
window finds. A repair ignores the head: it reads the whole table into a new epoch of the log (see lake.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import pg8000.native
import pyarrow as pa
import pyarrow.compute as pc
from botocore.exceptions import ClientError

from lambdas.common.db import database_identity, describe_identity
from lambdas.common.digest import DEFAULT_RANGE_SIZE, ContentShare, LedgerMismatch
from lambdas.common.errors import PipelineError, StateError
from lambdas.common.events import SUCCEEDED, WATERMARK
from lambdas.common.keys import RECONCILE_STAGE, reconcile_snapshot_key
from lambdas.common.lake import BatchLog, Head, ReaderState, Reading, concat
from lambdas.common.tables import PRIMARY_KEYS, require_source_table
from lambdas.extract.ledger import LEDGER_SCHEMA, latest_entries, ledger
from lambdas.extract.reconcile import reconcile_ledger
from lambdas.extract.signal import DEFAULT_MAX_AGE_SECONDS, SIGNAL, Token, read_token, unchanged
from lambdas.extract.source import (
    Column,
    KeyIntervals,
    UncarriedValues,
    arrow_schema,
    changed_rows,
    count_keys,
    snapshot,
    source_clock,
    table_columns,
)
from lambdas.extract.watermark import TS, Watermark, advance, drop_seen, version_keys

STAGE = "extract"
# What a result that skipped its table says, so that whoever just changed a row is not left guessing.
UNREAD_NOTE = (
    "not read: unchanged since its last scan by its change signal. A change committed in the last seconds (up to "
    "10 s, or longer while its writer stays inside a transaction) may not be counted yet; the run option "
    "ignore_change_signal (locally --ignore-change-signal) reads the table anyway"
)
REFUSED = "refused"  # in the head: keys of rows refused for an instant the pipeline cannot carry (source.uncarried)


@dataclass(frozen=True)
class ExtractResult:
    table: str
    rows: int
    batch: int | None
    watermark: str | None
    repaired: bool = False
    reconciled: dict[str, object] | None = None  # what a reconciliation found (reconcile.ReconcileResult)
    scanned: bool = True  # False: the change signal said the table was unchanged (signal.py)
    ranges: int | None = None  # a partitioned whole-table read (partitioned.py): the key ranges it was read in

    def as_dict(self) -> dict[str, object]:
        return {"table": self.table, "stage": STAGE, "status": SUCCEEDED, "rows": self.rows, "batch": self.batch,
                WATERMARK: self.watermark, **({"repaired": True} if self.repaired else {}),
                **({} if self.scanned else {"scanned": False, "note": UNREAD_NOTE}),
                **({"reconciled": self.reconciled} if self.reconciled is not None else {}),
                **({"ranges": self.ranges} if self.ranges else {})}  # fmt: skip


def checked_head(log: BatchLog, identity: dict[str, Any]) -> tuple[Head, Watermark]:
    """The head and its watermark, refused when they describe another database or cannot be parsed."""
    head = log.head()
    if not head.stored:
        return replace(head, state={"source": identity}), Watermark.empty()
    if head.state.get("source") != identity:
        raise log.fail(
            f"this lake was extracted from {describe_identity(head.state.get('source'))}, but the source now is "
            f"{describe_identity(identity)} ({log.head_uri}). A lake belongs to one source: point this source at a "
            "new lake (another --lake-dir or ingestion bucket), or rebuild this lake from it"
        )
    try:
        return head, Watermark.from_state(head.state)
    except (KeyError, TypeError, ValueError) as exc:
        raise log.fail(f"the watermark in {log.head_uri} is unreadable ({exc!r})") from exc


def check_watermark(log: BatchLog, watermark: Watermark, clock: datetime) -> None:
    if watermark.value is not None and watermark.value > clock:
        raise log.fail(
            f"the watermark {watermark.value.isoformat()} in {log.head_uri} is later than the source's clock "
            f"({clock.isoformat()}): every change before it would be skipped (edited state, or a source whose clock "
            "went back)"
        )


def check_window(
    log: BatchLog, watermark: Watermark, newest: datetime | None, still_there: Callable[[list[int]], int]
) -> None:
    """The rows at the watermark are re-read by every window (their last_updated can only move later), so a
    window whose newest row is older than the watermark means the watermark is not this table's, unless every
    row the head says is at the watermark was deleted upstream (asked by primary key, only in that case)."""
    if watermark.value is None or (newest is not None and newest >= watermark.value):
        return
    at_top = watermark.seen.filter(pc.equal(watermark.seen["last_updated"], pa.scalar(watermark.value, TS)))
    keys = at_top["key"].to_pylist()
    if keys and still_there(keys) == 0:
        return  # the newest rows were deleted upstream; reconciliation reports deletions
    raise log.fail(
        f"the watermark {watermark.value.isoformat()} in {log.head_uri} is later than the newest row of the "
        f"source table ({newest.isoformat() if newest else 'none since the lookback'}), and the rows it was taken "
        "from are not the ones at the watermark: the state is not this table's (edited, or copied from elsewhere)"
    )


def starting_head(
    con: pg8000.native.Connection, log: BatchLog, *, repair: bool
) -> tuple[Head, Watermark, dict[str, Any]]:
    """The head a read starts from, its watermark and the source's identity: a repair's new epoch, or the
    committed head, checked as checked_head does (the caller also checks it is not behind its log, once it
    knows it will write)."""
    identity = database_identity(con)
    if repair:
        return log.start_epoch({"source": identity}), Watermark.empty(), identity
    head, previous = checked_head(log, identity)
    return head, previous, identity


def in_parts(
    batches: Iterator[pa.RecordBatch],
    part_rows: int,
    primary_key: str,
    versions: list[pa.Table],
    keep: Callable[[pa.Table], pa.Table] | None = None,
) -> Iterator[pa.Table]:
    """Record batches regrouped into Parquet parts of about `part_rows` rows, so memory holds one part; the
    (key, last_updated) of every version read is collected in `versions`, before `keep` drops any."""
    pending: list[pa.Table] = []
    pending_rows = 0
    for record_batch in batches:
        chunk = pa.Table.from_batches([record_batch])
        versions.append(version_keys(chunk, primary_key))
        if keep is not None:
            chunk = keep(chunk)
        pending.append(chunk)
        pending_rows += chunk.num_rows
        if pending_rows >= part_rows:
            yield pa.concat_tables(pending)
            pending, pending_rows = [], 0
    if pending:
        yield pa.concat_tables(pending)


def extract_table(
    con: pg8000.native.Connection,
    log: BatchLog,
    *,
    full_refresh: bool = False,
    repair: bool = False,
    lookback: timedelta = timedelta(minutes=15),
    part_rows: int = 500_000,
    signal_max_age: timedelta = timedelta(seconds=DEFAULT_MAX_AGE_SECONDS),
    trust_signal: bool = True,
) -> ExtractResult:
    """Extract one table's new row versions into its batch log and advance its watermark.

    An incremental run whose change signal proves the table unchanged since a recent scan does not read the
    table (signal.py); every run that reads it stores the signal it read before its snapshot. `trust_signal`
    False (the run option ignore_change_signal) reads the window anyway: the signal lags a change its writer
    has not flushed yet (seconds, or as long as the writer stays inside a transaction).
    """
    table = require_source_table(log.table)
    primary_key = PRIMARY_KEYS[table]
    head, previous, identity = starting_head(con, log, repair=repair)
    if not repair:
        log.check_not_behind(head)
    whole = full_refresh or repair
    token = read_token(con, table)  # before the snapshot: see signal.py
    again = [] if whole else refused_keys(log, head.state)
    if trust_signal and not whole and head.stored and not again and unchanged(head.state, token, signal_max_age):
        return _unchanged(log, head, previous, token)
    since = None if whole else previous.window_start(lookback)
    window_keys: list[pa.Table] = []
    fresh = None if whole else (lambda chunk: drop_seen(chunk, primary_key, previous.seen))

    with snapshot(con):
        clock = source_clock(con)
        if not whole:
            check_watermark(log, previous, clock)
        columns = table_columns(con, table)
        if primary_key not in {c.name for c in columns}:
            raise PipelineError(f"{table}: primary key column {primary_key!r} is missing from the source")
        meta = {"since": since.isoformat() if since else None, **({"repair": True} if repair else {})}
        try:
            batches = window(con, table, columns, since, again)
            batch = log.write(head, in_parts(batches, part_rows, primary_key, window_keys, fresh), meta)
        except UncarriedValues as refused:
            if head.stored and not repair:  # read again by key, whatever last_updated they are fixed with
                log.commit(head, None, {**head.state, REFUSED: sorted({*again, *refused.keys})})
            raise

    keys = pa.concat_tables(window_keys) if window_keys else None
    if not whole:
        newest = pc.max(keys["last_updated"]).as_py() if keys is not None else None
        check_window(log, previous, newest, lambda found: count_keys(con, table, primary_key, found))
    if batch is None and not repair:
        kept = {name: value for name, value in head.state.items() if name != REFUSED}
        if token is not None:  # nothing new, but the signal the next run compares with is this scan's
            log.commit(head, None, {**kept, SIGNAL: token.stored(kept)})
        elif again:
            log.commit(head, None, kept)
        return ExtractResult(table, 0, None, head.state.get("watermark"))
    start = Watermark.empty() if whole else previous
    watermark = advance(start, keys, lookback, clock) if keys is not None else previous
    state = {"source": identity, **watermark.to_state(), "lookback_seconds": lookback.total_seconds()}
    if token is not None:
        state[SIGNAL] = token.stored(state)
    log.commit(head, batch, state)
    return ExtractResult(table, batch.rows if batch else 0, batch.seq if batch else None,
                         watermark.to_state()["watermark"], repair)  # fmt: skip


def refused_keys(log: BatchLog, state: dict[str, Any]) -> list[int]:
    """The keys of rows an earlier read refused (UncarriedValues), which the next reads take again by key."""
    keys = state.get(REFUSED) or []
    if not isinstance(keys, list) or not all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
        raise log.fail(f"the {REFUSED!r} entry of {log.head_uri} is not a list of keys: {str(keys)[:200]}")
    return keys


def window(
    con: pg8000.native.Connection, table: str, columns: list[Column], since: datetime | None, again: list[int]
) -> Iterator[pa.RecordBatch]:
    """The window's rows, then those of the refused rows (`again`) that the window does not hold: a refused row may
    be fixed with a last_updated older than the window (its own from before, restored by hand), and must still
    arrive. Each read is one bulk read, one after the other, in the same snapshot."""
    with changed_rows(con, table, columns, since) as batches:
        yield from batches
    if not again or since is None:
        return
    within = KeyIntervals(PRIMARY_KEYS[table], tuple((key, key) for key in sorted(set(again))))
    start = pa.scalar(since, TS)
    with changed_rows(con, table, columns, None, within=within) as batches:
        for batch in batches:
            older = batch.filter(pc.less(batch["last_updated"], start))
            if older.num_rows:
                yield older


def skips_on_signal(con: pg8000.native.Connection, log: BatchLog, *, signal_max_age: timedelta) -> bool:
    """Whether an incremental extract_table of this table would skip it on its change signal, asked without
    writing anything: the same checks in the same order (the head's source, its log, the signal and the role's
    grants, rows refused before, the watermark against the source's clock). A check that fails raises, as it would
    in the extract: the run plan then plans the table, and the extract reports it."""
    head, previous, _ = starting_head(con, log, repair=False)
    log.check_not_behind(head)
    token = read_token(con, log.table)
    if refused_keys(log, head.state):  # rows refused before are read again by key until they arrive
        return False
    if token is None or not (head.stored and unchanged(head.state, token, signal_max_age)):
        return False
    check_watermark(log, previous, token.clock)
    return True


def _unchanged(log: BatchLog, head: Head, previous: Watermark, token: Token) -> ExtractResult:
    """The no-change result, without reading the table: the head (already checked against the source's
    identity and its log) stays as it is, and its watermark must still not be later than the source's clock."""
    check_watermark(log, previous, token.clock)
    return ExtractResult(log.table, 0, None, head.state.get("watermark"), scanned=False)


def _checkpoint(log: BatchLog, signature: list[list[str]]) -> tuple[ReaderState, Reading, pa.Table | None, int]:
    """The ledger of the last reconciliation of this table (key, row hash, last_updated and batch of the latest
    version of each key, deletions left out), the batches since, and how many reconciliations it has seen (which
    content share is next). It only saves hashing the whole log: a checkpoint that is missing, unreadable, from an
    older epoch, from other source columns or of another ledger format is ignored, and the log itself, checked from
    its base, is read instead."""
    state = ReaderState(log.bucket, RECONCILE_STAGE, log.table)
    saved = state.read() or {}
    if saved.get("columns") != signature:
        saved = {}
    done = saved.get("reconciliations")
    done = done if isinstance(done, int) and done >= 0 else 0
    try:
        reading = log.follow(saved.get("cursor"))
    except StateError:
        if saved.get("cursor") is None:
            raise
        saved, reading = {}, log.follow(None)
    ledger_key = saved.get("ledger")
    if reading.restarted or not isinstance(ledger_key, str):
        return state, (log.follow(None) if reading.restarted else reading), None, done
    try:
        taken = log.bucket.get_parquet(ledger_key)
    except (ClientError, pa.ArrowException, OSError):
        return state, log.follow(None), None, done
    if taken.schema != LEDGER_SCHEMA:
        return state, log.follow(None), None, done
    return state, reading, taken, done


def reconcile_table(
    con: pg8000.native.Connection,
    log: BatchLog,
    *,
    lookback: timedelta = timedelta(minutes=15),
    range_size: int = DEFAULT_RANGE_SIZE,
) -> ExtractResult:
    """An incremental extract, then, in the same snapshot, the whole table compared with what the lake has taken.

    The differing rows (changed without `last_updated` moving, missing, from lost state) are written with the
    window's rows as one new batch, so they go through transform and load like any other version. Keys deleted
    upstream are reported, and left out of the checkpoint so each is reported once. Memory stays small: the lake
    side is a ledger of 32 bytes a key. Each reconciliation digests the next content share of the ranges
    (digest.ContentShare.rotating); the lake's rows are hashed when first needed, and the ledger keeps the hashes.
    """
    table = require_source_table(log.table)
    primary_key = PRIMARY_KEYS[table]
    identity = database_identity(con)
    head, previous = checked_head(log, identity)
    log.check_not_behind(head)
    since = previous.window_start(lookback)

    def batch_rows(seq: int) -> pa.Table:
        return pa.concat_tables(list(log.read(log.manifest(seq, head.log))), promote_options="permissive")

    with snapshot(con):
        clock = source_clock(con)
        check_watermark(log, previous, clock)
        columns = table_columns(con, table)
        signature = [[c.name, c.pg_type] for c in columns]
        checkpoint, reading, taken, done = _checkpoint(log, signature)
        entries = [taken] if taken is not None else []
        # The share is chosen by the table's size in the lake (its ledger and the rows since, an upper bound).
        size = sum(t.num_rows for t in entries) + sum(b.rows for b in reading.batches)
        share = ContentShare.rotating(size, done)
        # Since a checkpoint, the few new rows are hashed now; from the log's base, those in the share (the rest
        # when their range is first needed).
        first = ContentShare() if taken is not None else share
        entries += [ledger(part, columns, primary_key, seq=b.seq, share=first, range_size=range_size)
                    for b in reading.batches for part in log.read(b)]  # fmt: skip
        with changed_rows(con, table, columns, since) as batches:
            window = pa.Table.from_batches(list(batches), schema=arrow_schema(columns))
        newest = pc.max(window["last_updated"]).as_py() if window.num_rows else None
        check_window(log, previous, newest, lambda found: count_keys(con, table, primary_key, found))
        new = drop_seen(window, primary_key, previous.seen)
        taken_now = latest_entries([*entries, ledger(new, columns, primary_key, seq=head.seq + 1)])
        try:
            found = reconcile_ledger(con, table, columns, primary_key, taken_now, range_size=range_size,
                                     share=share, batch_rows=batch_rows)  # fmt: skip
        except LedgerMismatch as error:
            raise log.fail(f"the reconciliation's ledger of {table} cannot be believed: {error}") from error
    rows = concat([new, found.drift.rows])
    meta = {"since": since.isoformat() if since else None, RECONCILE_STAGE: found.result.as_dict()}
    batch = log.write(head, [rows] if rows is not None else [], meta)
    watermark = advance(previous, version_keys(window, primary_key), lookback, clock)
    if batch is not None:
        head = log.commit(head, batch, {"source": identity, **watermark.to_state(),
                                        "lookback_seconds": lookback.total_seconds()})  # fmt: skip
    latest = latest_entries([found.entries, ledger(found.drift.rows, columns, primary_key, seq=head.seq)])
    latest = latest.filter(pc.invert(pc.is_in(latest["key"], value_set=found.drift.deleted_keys)))
    key = reconcile_snapshot_key(table, head.seq)
    log.bucket.put_parquet(key, latest)
    checkpoint.commit({"cursor": head.cursor(), "ledger": key, "columns": signature, "reconciliations": done + 1})
    return ExtractResult(table, batch.rows if batch else 0, batch.seq if batch else None,
                         watermark.to_state()["watermark"], reconciled=found.result.as_dict())  # fmt: skip
