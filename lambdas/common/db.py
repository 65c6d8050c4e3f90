"""Connections to PostgreSQL (totesys and the warehouse): open one from credentials, the way the pipeline needs it.

Every connection of the pipeline is pg8000's, opened by `connect` from credentials in the secret shape
(lambdas/common/credentials.py), with TLS as libpq's sslmode asks (lambdas/common/tls.py), UTF-8 whatever the
server's default, and a statement timeout shorter than the Lambda's time left, so the server rolls back rather
than working on for a client that is gone. A failure to connect says in one line where, and why, and whether
retrying helps (lambdas/common/db_errors.py).

This module is also the one import the rest of the code needs for a database: it re-exports the names of its
neighbours (credentials, errors, quoting) that other modules have always imported from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pg8000.native

from lambdas.common.credentials import (
    DBNAME_ENV,
    HOST_ENV,
    PASSWORD_ENV,
    PORT_ENV,
    REQUIRED_KEYS,
    SECRET_MAX_AGE_SECONDS,
    credentials_from_dsn,
    forget_secrets,
    read_secret,
    redact_dsn,
    where,
    with_location,
)
from lambdas.common.db_errors import (
    INSUFFICIENT_PRIVILEGE,
    classified,
    database_errors,
    driver_errors,
    network_cause,
    permission_denied,
    server_error,
)
from lambdas.common.errors import AuthenticationError, PipelineError, TransientError
from lambdas.common.quoting import identifier
from lambdas.common.tls import CA_BUNDLE_ENV, DEFAULT_SSLMODE, ca_bundle, certificate_problem, ssl_context

__all__ = [
    "CA_BUNDLE_ENV",
    "CLIENT_ENCODING",
    "DBNAME_ENV",
    "DEFAULT_SSLMODE",
    "HOST_ENV",
    "INSUFFICIENT_PRIVILEGE",
    "PASSWORD_ENV",
    "PORT_ENV",
    "REQUIRED_KEYS",
    "SECRET_MAX_AGE_SECONDS",
    "AuthenticationError",
    "Connection",
    "ConnectionSettings",
    "classified",
    "connect",
    "connect_with_secret",
    "credentials_from_dsn",
    "database_errors",
    "database_identity",
    "describe_identity",
    "forget_secrets",
    "identifier",
    "permission_denied",
    "read_secret",
    "redact_dsn",
    "statement_budget",
    "where",
    "with_location",
]

CLIENT_ENCODING = "UTF8"  # every connection of the pipeline, whatever the server, role or environment default
SOCKET_MARGIN_SECONDS = 30  # the socket outwaits the server's statement timeout by this much


@dataclass(frozen=True)
class ConnectionSettings:
    """How a connection was opened, so that a second client can open one to the same place in the same way."""

    credentials: Mapping[str, Any] = field(repr=False)  # holds the password: never shown
    application_name: str
    statement_timeout: float
    connect_timeout: float


class Connection(pg8000.native.Connection):
    """pg8000's connection, remembering its settings: the extract's bulk reader (lambdas/extract/bulk.py) opens
    a second connection beside it, with the same credentials, TLS and timeouts, to read in the same snapshot."""

    settings: ConnectionSettings


def connection_options(
    credentials: Mapping[str, Any], *, application_name: str, connect_timeout: float
) -> dict[str, Any]:
    """pg8000's keyword arguments for these credentials: socket or TCP, TLS by sslmode, UTF-8."""
    host = str(credentials["host"])
    port = int(credentials.get("port", 5432))
    options: dict[str, Any] = {
        "user": credentials["username"],
        "password": credentials.get("password") or None,
        "database": credentials.get("dbname") or "postgres",
        "application_name": application_name,
        "timeout": connect_timeout,
        "ssl_context": False,
        # pg8000 follows the server's encoding; the pipeline's text is exact only in UTF-8 (libpq.py says why)
        "startup_params": {"client_encoding": CLIENT_ENCODING},
    }
    if host.startswith("/"):  # a unix-socket directory, as in libpq: no TLS
        options["unix_sock"] = f"{host}/.s.PGSQL.{port}"
    else:
        options["host"], options["port"] = host, port
        sslmode = str(credentials.get("sslmode") or DEFAULT_SSLMODE)
        options["ssl_context"] = ssl_context(sslmode, ca_bundle(credentials))
    return options


def connect(
    credentials: Mapping[str, Any],
    *,
    application_name: str = "totesys-etl",
    statement_timeout: float = 840.0,
    connect_timeout: float = 10.0,
) -> Connection:
    """Open a connection; a server that cannot be reached is transient, a refused login is not.

    The server cancels any statement that runs longer than `statement_timeout` (give it less than the
    Lambda's remaining time, so the server rolls back rather than working on for a client that is gone);
    the socket waits a little longer than that, so a slow statement is never mistaken for a dead connection.
    Until the server has let us in, only `connect_timeout` applies: a host that accepts TCP and never
    answers is a wrong address, not a slow query.
    """
    options = connection_options(credentials, application_name=application_name, connect_timeout=connect_timeout)
    try:
        con = Connection(**options)
    except AttributeError as exc:  # pg8000, asked for a SCRAM password it was not given, calls None.decode()
        if options["password"]:
            raise
        raise AuthenticationError(f"cannot connect to {where(credentials)}: the server asks for a password and none "
                                  f"was given (in the DSN, {PASSWORD_ENV} or the secret)") from exc  # fmt: skip
    except driver_errors as exc:
        raise _refused(exc, credentials, connect_timeout) from exc
    con.settings = ConnectionSettings(dict(credentials), application_name, statement_timeout, connect_timeout)
    _wait_for_statements(con, statement_timeout + SOCKET_MARGIN_SECONDS)
    con.run("SELECT set_config('statement_timeout', :ms, false)", ms=str(int(statement_timeout * 1000)))
    return con


def _refused(exc: BaseException, credentials: Mapping[str, Any], connect_timeout: float) -> Exception:
    """Why a connection could not be opened, in one line: an untrusted certificate and a refused login are final,
    a server that did not answer is transient."""
    place = f"cannot connect to {where(credentials)}"
    untrusted = certificate_problem(exc)
    if untrusted:  # not transient: the same certificate will be refused again
        return PipelineError(f"{place}: {untrusted}")
    server = server_error(exc)
    if server is None:
        return TransientError(f"{place}: {network_cause(exc, connect_timeout)}")
    code, message = server
    return classified(f"{place}: {message}", code)


def _wait_for_statements(con: pg8000.native.Connection, seconds: float) -> None:
    """From now on the socket waits `seconds` for an answer (until now: the connect timeout).

    pg8000 has one `timeout` for connecting and for statements alike, and no public way to change it once
    connected; its socket (`_usock`, a private attribute) is the only handle. This is the one place that uses it.
    """
    con._usock.settimeout(seconds)


def connect_with_secret(secret_id: str, **options: Any) -> Connection:
    """`connect` with the credentials of a secret; a refused login reads the secret again once and retries.

    A rotated password is then used by the next connection of every warm container, without waiting for the
    cache to expire or for new containers. A second refusal is the secret's fault and is raised as it is.
    """
    try:
        return connect(read_secret(secret_id), **options)
    except AuthenticationError:
        return connect(read_secret(secret_id, refresh=True), **options)


def statement_budget(context: Any) -> float:
    """Seconds a statement may take: what the Lambda has left, less a margin to roll back and report."""
    return max(30.0, context.get_remaining_time_in_millis() / 1000 - 30)


def database_identity(con: pg8000.native.Connection) -> dict[str, Any]:
    """Which database this is, so a lake never mixes two: the cluster's system identifier (new for every server,
    also for a restored snapshot), the database's name and oid (new for every database created on it).

    Readable by a role that may only SELECT. Where a managed service hides the system identifier, the name and
    oid still tell databases apart on one server.
    """
    rows = con.run(
        "SELECT (SELECT system_identifier::text FROM pg_control_system()), d.datname, d.oid::text "
        "FROM pg_catalog.pg_database d WHERE d.datname = current_database()"
    )
    system, name, oid = rows[0]
    return {"system_identifier": system, "database": name, "database_oid": oid}


def describe_identity(identity: Any) -> str:
    """A database identity as a message names it (`an unknown database` when the record is not one)."""
    if not isinstance(identity, dict):
        return "an unknown database"
    return (f"database {identity.get('database')!r} (oid {identity.get('database_oid')}) on the server with "
            f"system identifier {identity.get('system_identifier')}")  # fmt: skip
