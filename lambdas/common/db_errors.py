"""What a database failure means for the pipeline: retry it, re-read the secret, or stop and say what to fix.

pg8000 (and the bulk reader's libpq) report a refused login, a lost connection and a missing grant alike as
exceptions with a SQLSTATE somewhere in their cause chain. The pipeline has three answers, by the SQLSTATE's class:
`TransientError` (the workflow's Retry tries again: connection lost, conflicts, resources, the server going
down), `AuthenticationError` (the password may just have rotated: read the secret again), and `PipelineError`
(retrying cannot help: a missing object, a bad value, a grant the role lacks, whose message then says which
GRANT fixes it).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pg8000.native

from lambdas.common.errors import AuthenticationError, PipelineError, TransientError, truncated
from lambdas.common.quoting import sql_name

__all__ = [
    "INSUFFICIENT_PRIVILEGE",
    "classified",
    "database_errors",
    "driver_errors",
    "network_cause",
    "permission_denied",
    "server_error",
]

# SQLSTATE classes worth retrying: connection exceptions, serialization failures and deadlocks,
# insufficient resources, operator intervention (e.g. the server shutting down).
_TRANSIENT_SQLSTATES = ("08", "40", "53", "57")
_AUTHENTICATION_SQLSTATE = "28"  # invalid authorization: a wrong (perhaps just rotated) password or role
INSUFFICIENT_PRIVILEGE = "42501"
_DENIED = re.compile(r"permission denied for (table|schema) (\S+)")

# What pg8000 raises for a server's refusal, a protocol problem, or a socket that failed.
driver_errors = (pg8000.native.DatabaseError, pg8000.native.InterfaceError, OSError)


def server_error(exc: BaseException) -> tuple[str, str] | None:
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


def network_cause(exc: BaseException, timeout: float) -> str:
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


def permission_denied(tables: list[str], role: str, *, kind: str = "table") -> str:
    """The one line a missing grant gets: what was refused, and the statement that grants it."""
    names = ", ".join(sql_name(t) for t in tables)
    grant = "USAGE ON SCHEMA" if kind == "schema" else "SELECT ON"
    return f"permission denied for {kind}{'s' if len(tables) > 1 else ''} {', '.join(tables)}: " \
           f"GRANT {grant} {names} TO {sql_name(role)}"  # fmt: skip


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
    except driver_errors as exc:
        server = server_error(exc)
        if server is None:
            raise TransientError(truncated(f"{database}: connection lost: {exc}")) from exc
        code, message = server
        raise classified(truncated(f"{database}: {message}"), code, role=role) from exc
