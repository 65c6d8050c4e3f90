"""Error types whose names the state machine's Retry and Catch clauses match on.

A Lambda's error name in Step Functions is the exception's class name, so these names are part of the
contract with `statemachine/pipeline.asl.json`: `TransientError` is retried with backoff, anything else
fails the table at once (bad data does not get better by waiting).
"""


class TransientError(Exception):
    """A failure that may pass on its own: a database or network connection that broke."""


class PipelineError(Exception):
    """Input the pipeline refuses, with a message that names the table and column at fault."""


class UnknownTableError(PipelineError):
    """A table name that is not part of the contract or not present in the database catalogue."""


UNTRUSTED_LIMIT = 500


def truncated(text: str, limit: int = UNTRUSTED_LIMIT) -> str:
    """An untrusted string as an error or a log line may show it: a 5 MB table name must not make 15 MB of logs."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"
