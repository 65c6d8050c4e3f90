"""Secrets never leave this process in writing: every stream the local runner writes to passes through here."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO


class Redacting:
    """A text stream that never lets the given secrets through."""

    def __init__(self, stream: TextIO, secrets: list[str]) -> None:
        self._stream, self._secrets = stream, sorted(set(secrets), key=len, reverse=True)

    def write(self, text: str) -> int:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def redacted_output(secrets: list[str]) -> Iterator[None]:
    """Everything this process prints passes through here, whichever code prints it."""
    if not secrets:
        yield
        return
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Redacting(stdout, secrets), Redacting(stderr, secrets)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = stdout, stderr
