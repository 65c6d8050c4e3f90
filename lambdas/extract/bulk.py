"""The extract's bulk read: a query's rows as Arrow record batches, decoded in C by ADBC's PostgreSQL driver.

pg8000 hands each row of a COPY to Python as its own message, which at a million rows is most of an extract's
time. ADBC's driver reads a query's result as binary COPY and decodes it into Arrow in C, batch by batch, so
memory stays bounded by the batch size. It opens its own connection (libpq's), with the settings of the pg8000
connection beside it (credentials, TLS, timeouts), and imports that connection's snapshot, so both read the same
data. pg8000 stays the driver for everything else: the catalogue, the clock, the checks, the digests.
"""

from __future__ import annotations

import math
import re
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import quote, urlencode

import adbc_driver_manager
import adbc_driver_postgresql.dbapi
import pyarrow as pa
from adbc_driver_manager._reader import AdbcRecordBatchReader

from lambdas.common.db import (
    CA_BUNDLE_ENV,
    CLIENT_ENCODING,
    DEFAULT_SSLMODE,
    Connection,
    ConnectionSettings,
    classified,
    redact_dsn,
    where,
)
from lambdas.common.errors import PipelineError, TransientError, truncated
from lambdas.common.settings import DatabaseSettings

# What pg_export_snapshot() returns (e.g. 00000003-0000001B-1). SET TRANSACTION SNAPSHOT takes no parameter,
# so the id is checked against this before it is written into the statement as a literal.
_SNAPSHOT_ID = re.compile(r"[0-9A-F]{1,16}(-[0-9A-F]{1,16}){1,2}")
# A peer that vanished without closing the connection is noticed within about a minute (libpq's keepalives),
# as pg8000's socket timeout notices it in the pipeline's other connections.
_KEEPALIVES = {"keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10", "keepalives_count": "3"}
_BATCH_BYTES_OPTION = adbc_driver_postgresql.StatementOptions.BATCH_SIZE_HINT_BYTES.value
# libpq's words for a certificate it does not trust, or one issued to another host.
_UNTRUSTED = re.compile(r"certificate verify failed|does not match host name|root certificate file", re.IGNORECASE)
# libpq reports why the server refused a connection in words only: the SQLSTATE the server sent, by its words.
_REFUSALS = (
    (re.compile(r"password authentication failed|authentication failed for user"), "28P01"),
    (re.compile(r"no password supplied|no pg_hba\.conf entry|role \".*\" does not exist"), "28000"),
    (re.compile(r"database \".*\" does not exist"), "3D000"),
    (re.compile(r"too many connections|remaining connection slots"), "53300"),
)


def _root_certificates(credentials: Mapping[str, object]) -> str:
    """The CA bundle that verifies the server, as db.connect's TLS context finds it: the secret's, the deployment's
    (PGSSLROOTCERT), else the system's store (the file Python's OpenSSL uses, which libpq's own may not know)."""
    return str(credentials.get("sslrootcert") or DatabaseSettings.from_environ().ca_bundle
               or ssl.get_default_verify_paths().cafile or "system")  # fmt: skip


def libpq_uri(settings: ConnectionSettings) -> str:
    """The libpq URI of the connection these settings opened; it holds the password, so never show it."""
    credentials = settings.credentials
    host, port = str(credentials["host"]), int(credentials.get("port", 5432))  # type: ignore[call-overload]
    query = {
        "application_name": settings.application_name,
        "connect_timeout": str(max(2, math.ceil(settings.connect_timeout))),  # libpq's minimum is 2 s
        "gssencmode": "disable",  # pg8000 speaks plain or TLS only; so does this connection
        # The driver takes the bytes of a text value as UTF-8. Given here, the encoding goes in the startup packet,
        # which neither PGCLIENTENCODING (libpq's fallback for what the URI leaves out) nor ALTER ROLE/DATABASE
        # ... SET client_encoding (settings below the client's own) can change, and a LATIN1 source database is
        # converted to it by the server.
        "client_encoding": CLIENT_ENCODING,
        **_KEEPALIVES,
    }
    if host.startswith("/"):  # a unix-socket directory: no TLS, as in db.connect
        netloc = ""
        query.update(host=host, port=str(port), sslmode="disable")
    else:
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        sslmode = str(credentials.get("sslmode") or DEFAULT_SSLMODE)
        query["sslmode"] = sslmode
        if sslmode in ("verify-ca", "verify-full"):
            query["sslrootcert"] = _root_certificates(credentials)
    user = quote(str(credentials["username"]), safe="")
    password = credentials.get("password")
    userinfo = f"{user}:{quote(str(password), safe='')}" if password else user
    dbname = quote(str(credentials.get("dbname") or "postgres"), safe="")
    return f"postgresql://{userinfo}@{netloc}/{dbname}?{urlencode(query)}"


def _redacted(text: str, settings: ConnectionSettings) -> str:
    """libpq's message with the password taken out, in any form it could be quoted in."""
    password = str(settings.credentials.get("password") or "")
    for form in {password, quote(password, safe="")} - {""}:
        text = text.replace(form, "***")
    return redact_dsn(text)


@contextmanager
def _errors(settings: ConnectionSettings, *, connecting: bool) -> Iterator[None]:
    """ADBC's errors in db.connect's terms: what failed, in words, retried only when retrying can help."""
    try:
        yield
    except (adbc_driver_manager.Error, pa.ArrowException, OSError) as exc:
        text = truncated(" ".join(_redacted(str(exc), settings).split()))  # libpq's lines, as one
        code = getattr(exc, "sqlstate", None) or ""
        if not connecting:
            if not code:
                raise TransientError(f"totesys: bulk read: connection lost: {text}") from None
            said = _server_message(exc, settings) or text  # the server's words, not libpq's with the query twice
            raise classified(f"totesys: bulk read: {said}", code, role=str(settings.credentials["username"])) from None
        place = f"cannot connect to {where(settings.credentials)} for the bulk read"
        if _UNTRUSTED.search(text):  # not transient: the same certificate will be refused again
            raise PipelineError(f"{place}: the server's certificate is not trusted ({text}); see sslmode and "
                                f"{CA_BUNDLE_ENV}") from None  # fmt: skip
        code = code or next((state for words, state in _REFUSALS if words.search(text)), "")
        if not code:
            raise TransientError(f"{place}: {text}") from None
        raise classified(f"{place}: {text}", code) from None


def _server_message(exc: BaseException, settings: ConnectionSettings) -> str:
    """What the server said (its primary message and detail, from the driver's diagnostics), without libpq's
    wrapping, which quotes the whole query; "" when the driver kept no diagnostics."""
    fields = {}
    for key, value in getattr(exc, "details", None) or ():
        name = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
        fields[name] = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    message = fields.get("PG_DIAG_MESSAGE_PRIMARY", "")
    if message and fields.get("PG_DIAG_MESSAGE_DETAIL"):
        message += f": {fields['PG_DIAG_MESSAGE_DETAIL']}"
    return truncated(_redacted(message, settings)) if message else ""


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
    with _errors(con.settings, connecting=True):
        reader = adbc_driver_postgresql.dbapi.connect(libpq_uri(con.settings), autocommit=True)
    try:
        with reader.cursor() as cursor:
            with _errors(con.settings, connecting=False):
                cursor.execute("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cursor.execute(f"SET TRANSACTION SNAPSHOT '{snapshot_id}'")  # checked against _SNAPSHOT_ID above
                timeout = str(int(con.settings.statement_timeout * 1000))
                local = {**text_output, "statement_timeout": timeout, **settings}
                for name, value in local.items():
                    cursor.execute("SELECT set_config($1, $2, true)", (name, value))
                cursor.adbc_statement.set_options(**{_BATCH_BYTES_OPTION: str(batch_bytes)})
                cursor.execute(query)
                # The driver manager's own wrapper of the stream (its dbapi uses it inside): a failure while
                # reading then carries the server's SQLSTATE, where pyarrow's reader alone gives only the message.
                stream = cursor.fetch_arrow()  # referenced until imported: it releases the stream when collected
                batches = AdbcRecordBatchReader._import_from_c(stream.address)
            yield _read(iter(batches), con.settings)
    finally:
        reader.close()  # ends the transaction: it only read


def _read(batches: Iterator[pa.RecordBatch], settings: ConnectionSettings) -> Iterator[pa.RecordBatch]:
    """The batches, with the reader's own failures translated; the consumer's errors pass through untouched."""
    while True:
        with _errors(settings, connecting=False):
            batch = next(batches, None)
        if batch is None:
            return
        yield batch
