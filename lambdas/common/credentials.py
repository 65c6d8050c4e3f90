"""Database credentials: the one shape every connection starts from, and the two places it comes from.

The shape is the RDS secret's JSON: {host, port, username, password, dbname}, plus an optional sslmode and
sslrootcert (lambdas/common/tls.py reads those). A host that starts with "/" is a unix-socket directory, as in libpq.

- In AWS, from Secrets Manager (`read_secret`), cached per container for a few minutes. The secret RDS manages for
  a master user holds only username and password: host, port and dbname then come from the function's environment
  (DATABASE_HOST, DATABASE_PORT, DATABASE_NAME, set by the CDK app from its context), and what is still missing is
  refused by name (`with_location`).
- Locally, from a libpq URI a person types (`credentials_from_dsn`), its password from PGPASSWORD when it has none.

`where` and `redact_dsn` say which database a message is about without ever showing the password.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import boto3
from aws_lambda_powertools.utilities import parameters

from lambdas.common.errors import PipelineError
from lambdas.common.settings import DatabaseSettings

__all__ = [
    "DBNAME_ENV",
    "HOST_ENV",
    "PASSWORD_ENV",
    "PORT_ENV",
    "credentials_from_dsn",
    "forget_secrets",
    "read_secret",
    "redact_dsn",
    "where",
    "with_location",
]

# where the database is, when the secret does not say (an RDS-managed secret)
HOST_ENV = DatabaseSettings.variable("database_host")
PORT_ENV = DatabaseSettings.variable("database_port")
DBNAME_ENV = DatabaseSettings.variable("database_name")
REQUIRED_KEYS = ("username", "password", "host", "dbname")
PASSWORD_ENV = "PGPASSWORD"  # noqa: S105 - libpq's variable for the password when the DSN carries none


# --- From Secrets Manager -------------------------------------------------------------------------------------------

# How long a container trusts its copy of a secret before asking again. Rotation does not wait for it: a refused
# login reads the secret at once (connect_with_secret), and an alternating-users rotation leaves the previous
# login valid until the next rotation (4 hours at the most frequent). An hour spares Secrets Manager a call per
# warm container and run (every 5 minutes) and bounds how long a moved host goes unseen (docs/operations.md).
SECRET_MAX_AGE_SECONDS = 3600

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
    """Credentials, cached for up to an hour per container; `refresh` asks Secrets Manager again at once.

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


# --- From a libpq URI -----------------------------------------------------------------------------------------------


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


# --- In messages ----------------------------------------------------------------------------------------------------


def where(credentials: Mapping[str, Any]) -> str:
    """Which server and database, as a person would look for it (never with the password)."""
    host, port, dbname = str(credentials["host"]), credentials.get("port", 5432), credentials.get("dbname")
    server = f"socket {host}/.s.PGSQL.{port}" if host.startswith("/") else f"{host}:{port}"
    return f"{server}, database {dbname!r} as {credentials.get('username')!r}"
