"""Connections to PostgreSQL (totesys and the warehouse) from Secrets Manager-style credentials.

One secret format serves AWS and the local runner: the RDS JSON shape {host, port, username, password,
dbname}, plus an optional sslmode and sslrootcert. The secret RDS manages for a master user holds only username
and password: host, port and dbname then come from the function's environment (DATABASE_HOST, DATABASE_PORT,
DATABASE_NAME, set by the CDK app from its context), and what is still missing is refused by name. A host that
starts with "/" is a unix-socket directory, as in libpq. Over TCP, a secret without sslmode gets `verify-full`:
encrypted, and the server proven by its certificate against the CA bundle the deployment provides (PGSSLROOTCERT,
as in libpq, else the system's).
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import boto3
import pg8000.native
from aws_lambda_powertools.utilities import parameters
from pg8000.native import identifier

from lambdas.common.errors import AuthenticationError, PipelineError, TransientError, truncated
from lambdas.common.settings import DatabaseSettings

__all__ = [
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


SECRET_MAX_AGE_SECONDS = 300  # how long a container trusts its copy of a secret before asking again


_PROVIDER_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _secrets_provider() -> parameters.SecretsProvider:
    """One Secrets Manager provider per container, its client from boto3's default session.

    Powertools' `get_secret` creates its provider, with a new boto3 session, on first use; a new session loads the
    service model from disk again (thousands of stat calls: 0.1 s alone, more than 1 s with three other
    invocations doing the same in the local runner's threads). The lock keeps concurrent first uses from
    creating clients side by side, which a boto3 session does not support.
    """
    with _PROVIDER_LOCK:
        return parameters.SecretsProvider(boto3_client=boto3.client("secretsmanager"))


def forget_secrets() -> None:
    """Drop cached credentials and clients (a new Lambda container would not have them either)."""
    with _PROVIDER_LOCK:
        _secrets_provider.cache_clear()
    parameters.clear_caches()


def read_secret(secret_id: str, *, refresh: bool = False) -> dict[str, Any]:
    """Credentials, cached for a few minutes per container; `refresh` asks Secrets Manager again at once.

    The cache spares Secrets Manager a call per invocation; its age bounds how long a rotated secret goes unseen,
    and `connect_with_secret` does not wait for it when the server refuses the cached password.
    """
    try:
        value = _secrets_provider().get(secret_id, transform="json", max_age=SECRET_MAX_AGE_SECONDS,
                                        force_fetch=refresh)  # fmt: skip
    except parameters.TransformParameterError as exc:
        raise PipelineError(f"secret {secret_id!r} is not JSON with host, port, username, password, dbname") from exc
    if not isinstance(value, dict):
        raise PipelineError(f"secret {secret_id!r} is not a JSON object with host, port, username, password, dbname")
    return with_location(value, secret_id)


def _lacks(credentials: Mapping[str, Any], key: str) -> bool:
    value = credentials.get(key)
    return value is None or (value == "" and key != "password")  # an empty password: a server that trusts the role


# where the database is, when the secret does not say (an RDS-managed secret)
HOST_ENV = DatabaseSettings.variable("database_host")
PORT_ENV = DatabaseSettings.variable("database_port")
DBNAME_ENV = DatabaseSettings.variable("database_name")
REQUIRED_KEYS = ("username", "password", "host", "dbname")


def with_location(secret: Mapping[str, Any], secret_id: str) -> dict[str, Any]:
    """The secret's credentials, with host, port and dbname from the environment where the secret has none.

    The secret's own values win: the environment only completes a secret that holds just the login. A secret that
    still lacks a key the connection needs is refused in one line naming each missing key."""
    credentials = dict(secret)
    for key, value in DatabaseSettings.from_environ().location().items():
        if credentials.get(key) in (None, ""):
            credentials[key] = value
    missing = [key for key in REQUIRED_KEYS if _lacks(credentials, key)]
    if missing:
        raise PipelineError(
            f"secret {secret_id!r} has no {', '.join(missing)}: add them to the secret, or (host, port, dbname) "
            f"deploy with the context values that set {HOST_ENV}, {PORT_ENV}, {DBNAME_ENV} (docs/deploy.md)"
        )
    return credentials


PASSWORD_ENV = "PGPASSWORD"  # noqa: S105 - libpq's variable for the password when the DSN carries none
CA_BUNDLE_ENV = DatabaseSettings.variable("ca_bundle")  # libpq's: the CA certificates that verify-full trusts
DEFAULT_SSLMODE = "verify-full"  # a secret without sslmode; "require" (encrypted, unverified) is the opt-out
CLIENT_ENCODING = "UTF8"  # every connection of the pipeline, whatever the server, role or environment default


def redact_dsn(dsn: str) -> str:
    """The DSN as it may be shown: any password replaced, even in a URI too malformed to parse."""
    dsn = re.sub(r"(://[^/?#@]*?:)[^/?#@]*@", r"\1***@", dsn)
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", dsn)


def credentials_from_dsn(dsn: str, *, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Turn a libpq URI (TCP or `?host=/socket/dir`) into the secret shape the handlers read.

    As libpq does, a DSN without a password takes PGPASSWORD's, so a password need not be typed on a command line.
    A malformed DSN raises ValueError naming it with its password redacted.
    """
    url = urlparse(dsn)
    if url.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URI: {redact_dsn(dsn)!r} (expected postgresql://user@host:port/dbname)")
    try:
        query = {key: values[-1] for key, values in parse_qs(url.query, strict_parsing=bool(url.query)).items()}
        host = query.get("host") or url.hostname or "/var/run/postgresql"
        port = int(query.get("port") or url.port or 5432)
    except ValueError:  # the message of either may quote the password-bearing netloc: never show it
        raise ValueError(f"malformed PostgreSQL URI {redact_dsn(dsn)!r}: bad host, port or query") from None
    return {
        "host": host,
        "port": port,
        "username": unquote(url.username or query.get("user") or "postgres"),
        "password": unquote(url.password or query.get("password") or environ.get(PASSWORD_ENV, "")),
        "dbname": unquote(url.path.lstrip("/") or query.get("dbname") or "postgres"),
        "sslmode": query.get("sslmode", "disable" if host.startswith("/") else "prefer"),
        **({"sslrootcert": query["sslrootcert"]} if query.get("sslrootcert") else {}),
    }


def where(credentials: Mapping[str, Any]) -> str:
    """Which server and database, as a person would look for it (never with the password)."""
    host, port, dbname = str(credentials["host"]), credentials.get("port", 5432), credentials.get("dbname")
    server = f"socket {host}/.s.PGSQL.{port}" if host.startswith("/") else f"{host}:{port}"
    return f"{server}, database {dbname!r} as {credentials.get('username')!r}"


# SQLSTATE classes worth retrying: connection exceptions, serialization failures and deadlocks,
# insufficient resources, operator intervention (e.g. the server shutting down).
_TRANSIENT_SQLSTATES = ("08", "40", "53", "57")
_AUTHENTICATION_SQLSTATE = "28"  # invalid authorization: a wrong (perhaps just rotated) password or role


def _sqlstate(exc: BaseException) -> tuple[str, str] | None:
    """(SQLSTATE, message) of a server error, also when pg8000 raised something else while handling it.

    pg8000 closes the socket after an error at connect time; when the server has already hung up, that close
    fails and its "network error" replaces the server's answer (e.g. 28P01, wrong password) in the traceback.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, pg8000.native.DatabaseError):
            details = seen.args[0] if seen.args and isinstance(seen.args[0], dict) else {}
            detail = f": {details['D']}" if details.get("D") else ""  # e.g. which key broke a foreign key
            return str(details.get("C", "")), str(details.get("M", seen)) + detail
        seen = seen.__cause__ or seen.__context__
    return None


def _network_cause(exc: BaseException, timeout: float) -> str:
    """The operating system's reason a connection failed, in words (pg8000's own text names its internals)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return f"unknown host ({seen.strerror})"
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused (nothing listens on that port?)"
        if isinstance(seen, TimeoutError):
            return f"no answer within {timeout:g} s"
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return str(exc)


INSUFFICIENT_PRIVILEGE = "42501"
_DENIED = re.compile(r"permission denied for (table|schema) (\S+)")


def _sql_name(name: str) -> str:
    """A name as a person would type it into SQL: bare when it can be, quoted when it must be."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else identifier(name)


def permission_denied(tables: list[str], role: str, *, kind: str = "table") -> str:
    """The one line a missing grant gets: what was refused, and the statement that grants it."""
    names = ", ".join(_sql_name(t) for t in tables)
    grant = "USAGE ON SCHEMA" if kind == "schema" else "SELECT ON"
    return f"permission denied for {kind}{'s' if len(tables) > 1 else ''} {', '.join(tables)}: " \
           f"GRANT {grant} {names} TO {_sql_name(role)}"  # fmt: skip


def classified(text: str, code: str, *, role: str | None = None) -> Exception:
    """Retrying helps with a broken connection or a conflict, never with a wrong password or missing object.

    A privilege the role lacks (42501) says which grant is missing when the role is known, in place of the server's
    message and its code: `permission denied for table staff: GRANT SELECT ON staff TO etl`.
    """
    denied = _DENIED.search(text) if code == INSUFFICIENT_PRIVILEGE and role else None
    if denied and role:
        return PipelineError(text[: denied.start()] + permission_denied([denied.group(2)], role, kind=denied.group(1)))
    text += f" (SQLSTATE {code})" if code else ""
    if code.startswith(_AUTHENTICATION_SQLSTATE):
        return AuthenticationError(text)
    return TransientError(text) if code.startswith(_TRANSIENT_SQLSTATES) else PipelineError(text)


@contextmanager
def database_errors(database: str, *, role: str | None = None) -> Iterator[None]:
    """Turn pg8000's errors into ones that say what failed, in words, and that retry when retrying can help;
    `role`, the connection's, lets a missing privilege name its grant."""
    try:
        yield
    except (TransientError, PipelineError):
        raise
    except (pg8000.native.DatabaseError, pg8000.native.InterfaceError, OSError) as exc:
        server = _sqlstate(exc)
        if server is None:
            raise TransientError(truncated(f"{database}: connection lost: {exc}")) from exc
        code, message = server
        raise classified(truncated(f"{database}: {message}"), code, role=role) from exc


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
    host = str(credentials["host"])
    port = int(credentials.get("port", 5432))
    options: dict[str, Any] = {
        "user": credentials["username"],
        "password": credentials.get("password") or None,
        "database": credentials.get("dbname") or "postgres",
        "application_name": application_name,
        "timeout": connect_timeout,
        "ssl_context": False,
        # pg8000 follows the server's encoding; the pipeline's text is exact only in UTF-8 (bulk.py says why)
        "startup_params": {"client_encoding": CLIENT_ENCODING},
    }
    if host.startswith("/"):
        options["unix_sock"] = f"{host}/.s.PGSQL.{port}"
    else:
        options["host"], options["port"] = host, port
        rootcert = credentials.get("sslrootcert") or DatabaseSettings.from_environ().ca_bundle
        options["ssl_context"] = _tls(str(credentials.get("sslmode") or DEFAULT_SSLMODE), rootcert)
    try:
        con = Connection(**options)
    except AttributeError as exc:  # pg8000, asked for a SCRAM password it was not given, calls None.decode()
        if options["password"]:
            raise
        raise AuthenticationError(f"cannot connect to {where(credentials)}: the server asks for a password and none "
                                  f"was given (in the DSN, {PASSWORD_ENV} or the secret)") from exc  # fmt: skip
    except (pg8000.native.DatabaseError, pg8000.native.InterfaceError, OSError) as exc:
        server = _sqlstate(exc)
        untrusted = _certificate_problem(exc)
        if untrusted:  # not transient: the same certificate will be refused again
            raise PipelineError(f"cannot connect to {where(credentials)}: {untrusted}") from exc
        if server is None:
            cause = _network_cause(exc, connect_timeout)
            raise TransientError(f"cannot connect to {where(credentials)}: {cause}") from exc
        code, message = server
        raise classified(f"cannot connect to {where(credentials)}: {message}", code) from exc
    con.settings = ConnectionSettings(dict(credentials), application_name, statement_timeout, connect_timeout)
    con._usock.settimeout(statement_timeout + 30)  # pg8000 has no setter: its socket, from now on for statements
    con.run("SELECT set_config('statement_timeout', :ms, false)", ms=str(int(statement_timeout * 1000)))
    return con


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


def _certificate_problem(exc: BaseException) -> str | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"the server's certificate is not trusted ({seen.verify_message}); see sslmode and {CA_BUNDLE_ENV}"
        seen = seen.__cause__ or seen.__context__
    return None


def _tls(sslmode: str, rootcert: str | None = None) -> ssl.SSLContext | bool | None:
    """libpq's sslmode in pg8000's terms."""
    if sslmode == "disable":
        return False
    if sslmode in ("allow", "prefer"):
        return None  # pg8000: TLS if the server offers it, unverified
    if sslmode not in ("require", "verify-ca", "verify-full"):
        raise PipelineError(f"sslmode {truncated(sslmode, 40)!r} is not one of libpq's")
    return _tls_context(sslmode, rootcert)


@lru_cache(maxsize=4)
def _tls_context(sslmode: str, rootcert: str | None) -> ssl.SSLContext:
    """Built once per container: loading the CA store costs ~0.1 s."""
    context = ssl.create_default_context(cafile=rootcert)
    if sslmode == "require":  # encrypted, certificate not checked: the documented opt-out
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif sslmode == "verify-ca":  # the certificate is checked, the host name is not
        context.check_hostname = False
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
