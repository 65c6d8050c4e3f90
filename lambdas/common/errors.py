"""Error types whose names the state machine's Retry and Catch clauses match on.

A Lambda's error name in Step Functions is the exception's class name, so these names are part of the
contract with `statemachine/pipeline.asl.json`: `TransientError` is retried with backoff, anything else
fails the table at once (bad data does not get better by waiting).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from pydantic import ValidationError


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


# How a pydantic error type reads after the field's name. The phrase is followed by ", got <the value>" unless the
# type is one of _WITHOUT_VALUE. A type not listed reads as pydantic's own message.
_PHRASES = {
    "missing": "is required",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text",
    "string_too_short": "must not be empty",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "literal_error": "must be {expected}",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
    "extra_forbidden": "is not expected",
}
_WITHOUT_VALUE = frozenset({"missing", "extra_forbidden", "unknown_table", "unknown_tables", "one_mode"})
# Custom errors that state a fact about the field rather than a predicate: "'tables': unknown table x".
_STATEMENTS = frozenset({"unknown_table", "unknown_tables"})
_NOT_AN_OBJECT = frozenset({"union_tag_not_found", "dict_type", "model_type", "model_attributes_type"})


def quoted_field(path: str) -> str:
    """How an event's field is named in an error: 'tables', 'range.range'."""
    return repr(path)


def one_line(
    error: ValidationError,
    *,
    subject: str,
    example: str = "",
    name: Callable[[str], str] = quoted_field,
    tagged: bool = False,
) -> str:
    """The first problem pydantic found, as the pipeline's one-line errors read: the field, what is wrong, what was
    given (cut short: an event is untrusted input). `subject` names the whole input ("the execution input"), for
    an input that is not an object at all; `name` renders a field's dotted path.

    One line, not pydantic's multi-line report: Step Functions carries it as the error's cause, the run report
    mails it, and an operator reads it in the console graph. `tagged`: the input was one of a discriminated union,
    whose errors pydantic places under the member's tag (dropped here: the reader knows no tags).
    """
    first = error.errors(include_url=False)[0]
    kind, loc, ctx = first["type"], [str(part) for part in first["loc"]], first.get("ctx") or {}
    loc = loc[1:] if tagged else loc
    got = f", got {truncated(repr(first.get('input')), 200)}"
    if not loc and kind in _NOT_AN_OBJECT:
        return f"{subject} must be a JSON object{f' like {example}' if example else ''}{got}"
    if kind == "union_tag_invalid":
        return f"{name('action')} must be one of {ctx.get('expected_tags')}, got {truncated(repr(ctx.get('tag')), 100)}"
    phrase = _PHRASES[kind].format(**ctx) if kind in _PHRASES else first["msg"][:1].lower() + first["msg"][1:]
    text = phrase + ("" if kind in _WITHOUT_VALUE else got)
    more = len(error.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    if not loc:
        return text + tail
    return f"{name('.'.join(loc))}{':' if kind in _STATEMENTS else ''} {text}{tail}"
