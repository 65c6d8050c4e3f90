"""Connections to PostgreSQL (totesys and the warehouse) from Secrets Manager-style credentials.

One secret format serves AWS and the local runner: the RDS JSON shape {host, port, username, password,
dbname}, plus an optional sslmode. A host that starts with "/" is a unix-socket directory, as in libpq.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import boto3
import pg8000.native
from pg8000.native import identifier

from lambdas.common.errors import PipelineError, TransientError

__all__ = [
    "connect",
    "credentials_from_dsn",
    "database_errors",
    "database_identity",
    "describe_identity",
    "forget_secrets",
    "identifier",
    "read_secret",
    "statement_budget",
]


@lru_cache(maxsize=1)
def _secretsmanager() -> Any:
    return boto3.client("secretsmanager")


@lru_cache(maxsize=8)
def _secret_string(secret_id: str) -> str:
    return _secretsmanager().get_secret_value(SecretId=secret_id)["SecretString"]


def forget_secrets() -> None:
    """Drop cached credentials and clients (a new Lambda container would not have them either)."""
    _secret_string.cache_clear()
    _secretsmanager.cache_clear()


def read_secret(secret_id: str) -> dict[str, Any]:
    """Credentials are read once per Lambda container; a rotated secret is picked up by new containers."""
    try:
        return json.loads(_secret_string(secret_id))
    except json.JSONDecodeError as exc:
        raise PipelineError(f"secret {secret_id!r} is not JSON with host, port, username, password, dbname") from exc


def credentials_from_dsn(dsn: str) -> dict[str, Any]:
    """Turn a libpq URI (TCP or `?host=/socket/dir`) into the secret shape the handlers read."""
    url = urlparse(dsn)
    if url.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URI: {dsn!r} (expected postgresql://user:password@host:port/dbname)")
    query = {key: values[-1] for key, values in parse_qs(url.query).items()}
    host = query.get("host") or url.hostname or "/var/run/postgresql"
    return {
        "host": host,
        "port": int(query.get("port") or url.port or 5432),
        "username": unquote(url.username or query.get("user") or "postgres"),
        "password": unquote(url.password or query.get("password") or ""),
        "dbname": unquote(url.path.lstrip("/") or query.get("dbname") or "postgres"),
        "sslmode": query.get("sslmode", "disable" if host.startswith("/") else "prefer"),
    }


# SQLSTATE classes worth retrying: connection exceptions, serialization failures and deadlocks,
# insufficient resources, operator intervention (e.g. the server shutting down).
_TRANSIENT_SQLSTATES = ("08", "40", "53", "57")


@contextmanager
def database_errors(database: str) -> Iterator[None]:
    """Turn pg8000's errors into ones that say what failed, in words, and that retry when retrying can help."""
    try:
        yield
    except pg8000.native.DatabaseError as exc:
        details = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        code, message = str(details.get("C", "")), str(details.get("M", exc))
        text = f"{database}: {message}" + (f" (SQLSTATE {code})" if code else "")
        if code.startswith(_TRANSIENT_SQLSTATES):
            raise TransientError(text) from exc
        raise PipelineError(text) from exc
    except (pg8000.native.InterfaceError, OSError) as exc:
        raise TransientError(f"{database}: connection lost: {exc}") from exc


def connect(
    credentials: Mapping[str, Any], *, application_name: str = "totesys-etl", statement_timeout: float = 840.0
) -> pg8000.native.Connection:
    """Open a connection; failing to reach the server is transient, so the state machine retries it.

    The server cancels any statement that runs longer than `statement_timeout` (give it less than the
    Lambda's remaining time, so the server rolls back rather than working on for a client that is gone);
    the socket waits a little longer than that, so a slow statement is never mistaken for a dead connection.
    """
    host = str(credentials["host"])
    port = int(credentials.get("port", 5432))
    options: dict[str, Any] = {
        "user": credentials["username"],
        "password": credentials.get("password") or None,
        "database": credentials.get("dbname") or "postgres",
        "application_name": application_name,
        "timeout": statement_timeout + 30,
        "ssl_context": False,
    }
    if host.startswith("/"):
        options["unix_sock"] = f"{host}/.s.PGSQL.{port}"
    else:
        options["host"], options["port"] = host, port
        options["ssl_context"] = _tls(str(credentials.get("sslmode", "require")))
    try:
        con = pg8000.native.Connection(**options)
    except (pg8000.native.InterfaceError, OSError) as exc:
        raise TransientError(f"cannot connect to {host}:{port}/{options['database']}: {exc}") from exc
    con.run("SELECT set_config('statement_timeout', :ms, false)", ms=str(int(statement_timeout * 1000)))
    return con


def statement_budget(context: Any) -> float:
    """Seconds a statement may take: what the Lambda has left, less a margin to roll back and report."""
    return max(30.0, context.get_remaining_time_in_millis() / 1000 - 30)


def _tls(sslmode: str) -> ssl.SSLContext | bool | None:
    """libpq's sslmode in pg8000's terms. Production secrets carry none and get TLS ("require")."""
    if sslmode == "disable":
        return False
    if sslmode in ("allow", "prefer"):
        return None  # pg8000: TLS if the server offers it, unverified
    return _tls_context(verify=sslmode in ("verify-ca", "verify-full"))


@lru_cache(maxsize=2)
def _tls_context(*, verify: bool) -> ssl.SSLContext:
    """Built once per container: loading the CA store costs ~0.1 s."""
    context = ssl.create_default_context()
    if not verify:  # libpq's "require": encrypted, certificate not checked
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


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
    if not isinstance(identity, dict):
        return "an unknown database"
    return (f"database {identity.get('database')!r} (oid {identity.get('database_oid')}) on the server with "
            f"system identifier {identity.get('system_identifier')}")  # fmt: skip
