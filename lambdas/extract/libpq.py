"""The bulk reader's own connection, libpq's (through ADBC): opened like pg8000's, failing like pg8000's.

The bulk read (lambdas/extract/bulk.py) opens a second connection beside the extract's pg8000 one, to the same
place in the same way: `libpq_uri` writes that connection's settings (credentials, TLS, timeouts, UTF-8) as the URI
libpq reads. `adbc_errors` then makes ADBC's and libpq's failures the ones `lambdas.common.db` raises (the same
words, the same retry or not), so a reader of the logs cannot tell which driver failed, only what.
"""

from __future__ import annotations

import math
import re
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import quote, urlencode

import adbc_driver_manager
import pyarrow as pa

from lambdas.common.db import CLIENT_ENCODING, ConnectionSettings, classified, redact_dsn, where
from lambdas.common.errors import PipelineError, TransientError, truncated
from lambdas.common.tls import CA_BUNDLE_ENV, DEFAULT_SSLMODE, ca_bundle

__all__ = ["adbc_errors", "libpq_uri"]

# A peer that vanished without closing the connection is noticed within about a minute (libpq's keepalives),
# as pg8000's socket timeout notices it in the pipeline's other connections.
_KEEPALIVES = {"keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10", "keepalives_count": "3"}
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
    return ca_bundle(credentials) or ssl.get_default_verify_paths().cafile or "system"


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
def adbc_errors(settings: ConnectionSettings, *, connecting: bool) -> Iterator[None]:
    """ADBC's errors in db.connect's terms: what failed, in words, retried only when retrying can help."""
    try:
        yield
    except (adbc_driver_manager.Error, pa.ArrowException, OSError) as exc:
        text = truncated(" ".join(_redacted(str(exc), settings).split()))  # libpq's lines, as one
        code = getattr(exc, "sqlstate", None) or ""
        raise (_connect_failure if connecting else _read_failure)(exc, text, code, settings) from None


def _read_failure(exc: BaseException, text: str, code: str, settings: ConnectionSettings) -> Exception:
    """A failure of the open connection: lost (no SQLSTATE, transient), or the server's refusal in its words."""
    if not code:
        return TransientError(f"totesys: bulk read: connection lost: {text}")
    said = _server_message(exc, settings) or text  # the server's words, not libpq's with the query twice
    return classified(f"totesys: bulk read: {said}", code, role=str(settings.credentials["username"]))


def _connect_failure(exc: BaseException, text: str, code: str, settings: ConnectionSettings) -> Exception:
    """A connection libpq could not open: an untrusted certificate or a refused login are final, the rest transient."""
    place = f"cannot connect to {where(settings.credentials)} for the bulk read"
    if _UNTRUSTED.search(text):  # not transient: the same certificate will be refused again
        return PipelineError(f"{place}: the server's certificate is not trusted ({text}); see sslmode and "
                             f"{CA_BUNDLE_ENV}")  # fmt: skip
    code = code or next((state for words, state in _REFUSALS if words.search(text)), "")
    if not code:
        return TransientError(f"{place}: {text}")
    return classified(f"{place}: {text}", code)


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
