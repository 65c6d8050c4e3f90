"""The extract's bulk read: a query's rows as Arrow record batches, decoded in C by ADBC's PostgreSQL driver.

pg8000 hands each row of a COPY to Python as its own message, which at a million rows is most of an extract's
time. ADBC's driver reads a query's result as binary COPY and decodes it into Arrow in C, batch by batch, so
memory stays bounded by the batch size. It opens its own connection (libpq's, lambdas/extract/libpq.py), with the
settings of the pg8000 connection beside it (credentials, TLS, timeouts), and imports that connection's snapshot
and text-output settings, so both read the same data written the same way. pg8000 stays the driver for everything
else: the catalogue, the clock, the checks, the digests.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import adbc_driver_postgresql.dbapi
import pyarrow as pa
from adbc_driver_manager._reader import AdbcRecordBatchReader

from lambdas.common.db import Connection, ConnectionSettings
from lambdas.common.errors import PipelineError, truncated
from lambdas.extract.libpq import adbc_errors, libpq_uri

__all__ = ["libpq_uri", "record_batches"]

# What pg_export_snapshot() returns (e.g. 00000003-0000001B-1). SET TRANSACTION SNAPSHOT takes no parameter,
# so the id is checked against this before it is written into the statement as a literal.
_SNAPSHOT_ID = re.compile(r"[0-9A-F]{1,16}(-[0-9A-F]{1,16}){1,2}")
_BATCH_BYTES_OPTION = adbc_driver_postgresql.StatementOptions.BATCH_SIZE_HINT_BYTES.value
# The settings that shape PostgreSQL's text output of a value: the bulk reader's session takes the pg8000 session's,
# so a value read as text is exactly what the rest of the pipeline (and reconciliation's digests) see, whatever
# libpq picks up from its environment (PGTZ, PGDATESTYLE, PGOPTIONS).
_TEXT_OUTPUT_SETTINGS = ("TimeZone", "DateStyle", "IntervalStyle", "extra_float_digits", "bytea_output")


def _text_output(con: Connection) -> dict[str, str]:
    values = con.run("SELECT name, setting FROM pg_catalog.pg_settings WHERE name = ANY(:names)",
                     names=list(_TEXT_OUTPUT_SETTINGS))  # fmt: skip
    return {str(name): str(setting) for name, setting in values}


def _snapshot_id(con: Connection) -> str:
    snapshot_id = str(con.run("SELECT pg_export_snapshot()")[0][0])
    if not _SNAPSHOT_ID.fullmatch(snapshot_id):
        raise PipelineError(f"pg_export_snapshot() returned {truncated(snapshot_id, 40)!r}, not a snapshot id")
    return snapshot_id


@contextmanager
def record_batches(
    con: Connection, query: str, settings: Mapping[str, str], *, batch_bytes: int
) -> Iterator[Iterator[pa.RecordBatch]]:
    """The rows of `query`, read in the snapshot of `con`'s open REPEATABLE READ transaction, as record batches of
    about `batch_bytes`. `settings` are set transaction-locally first (set_config, values bound as parameters), so
    the query can read values through current_setting() without any value entering its text."""
    if not isinstance(con, Connection):
        raise TypeError("the bulk read needs a connection opened by lambdas.common.db.connect (it copies its settings)")
    snapshot_id, text_output = _snapshot_id(con), _text_output(con)
    with adbc_errors(con.settings, connecting=True):
        reader = adbc_driver_postgresql.dbapi.connect(libpq_uri(con.settings), autocommit=True)
    try:
        with reader.cursor() as cursor:
            with adbc_errors(con.settings, connecting=False):
                cursor.execute("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cursor.execute(f"SET TRANSACTION SNAPSHOT '{snapshot_id}'")  # checked against _SNAPSHOT_ID above
                timeout = str(int(con.settings.statement_timeout * 1000))
                local = {**text_output, "statement_timeout": timeout, **settings}
                for name, value in local.items():
                    cursor.execute("SELECT set_config($1, $2, true)", (name, value))
                cursor.adbc_statement.set_options(**{_BATCH_BYTES_OPTION: str(batch_bytes)})
                cursor.execute(query)
                stream = cursor.fetch_arrow()  # referenced until imported: it releases the stream when collected
                batches = _with_sqlstate(stream)
            yield _read(iter(batches), con.settings)
    finally:
        reader.close()  # ends the transaction: it only read


def _with_sqlstate(stream: Any) -> pa.RecordBatchReader:
    """The result stream as a reader whose failures carry the server's SQLSTATE.

    pyarrow's own reader of the stream (what the public `fetch_record_batch` returns) raises a failure while
    reading (a statement timeout, a cancelled query) with the message only, and the SQLSTATE is what tells a
    transient failure from a final one. The driver manager's wrapper keeps it; its dbapi builds the wrapper the
    same way internally, but offers no public constructor: this is the one place that uses `_import_from_c`.
    """
    return AdbcRecordBatchReader._import_from_c(stream.address)


def _read(batches: Iterator[pa.RecordBatch], settings: ConnectionSettings) -> Iterator[pa.RecordBatch]:
    """The batches, with the reader's own failures translated; the consumer's errors pass through untouched."""
    while True:
        with adbc_errors(settings, connecting=False):
            batch = next(batches, None)
        if batch is None:
            return
        yield batch
