"""Error types whose names the state machine's Retry and Catch clauses match on.

A Lambda's error name in Step Functions is the exception's class name, so these names are part of the
contract with `statemachine/pipeline.asl.json`: `TransientError` is retried with backoff, anything else
fails the table at once (bad data does not get better by waiting).
"""

from __future__ import annotations

import re
from collections.abc import Iterable


class TransientError(Exception):
    """A failure that may pass on its own: a database or network connection that broke."""


class PipelineError(Exception):
    """Input the pipeline refuses, with a message that names the table and column at fault."""


class AuthenticationError(PipelineError):
    """The server refused the login (SQLSTATE class 28): not retried by the state machine, since the same password
    would be refused again; the connection code reads the secret once more first, in case it was rotated."""


class UnknownTableError(PipelineError):
    """A table name that is not part of the contract or not present in the database catalogue."""


class StateError(PipelineError):
    """State in the lake that cannot be believed: a head, cursor, manifest or part that is missing, altered or
    from another database. Never retried and never read as "nothing new": the message names the object, what is
    wrong, and the repair, which rebuilds the named source tables' lake from the source."""

    def __init__(self, problem: str, *, tables: Iterable[str]) -> None:
        self.tables = sorted(set(tables))
        super().__init__(f"{problem}. Nothing was changed. {repair_hint(self.tables)}")


_REPAIR_TABLES = re.compile(r"python -m statemachine\.local repair --tables ([a-z_,]+)")


def repair_tables(message: str) -> list[str]:
    """The tables a StateError's message (as Step Functions carries it: text only) says to repair."""
    found = _REPAIR_TABLES.search(message)
    return found.group(1).split(",") if found else []


def repair_hint(tables: Iterable[str]) -> str:
    """The one repair command, in both worlds, for these source tables."""
    names = sorted(set(tables))
    listed = ", ".join(f'"{t}"' for t in names)
    return (
        f'Repair: start the state machine with input {{"repair": true, "tables": [{listed}]}}; '
        f"locally: python -m statemachine.local repair --tables {','.join(names)}"
    )


UNTRUSTED_LIMIT = 500


def truncated(text: str, limit: int = UNTRUSTED_LIMIT) -> str:
    """An untrusted string as an error or a log line may show it: a 5 MB table name must not make 15 MB of logs."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"
