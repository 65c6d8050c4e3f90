"""How a name is written into SQL: quoted for the server, or as a person would type it into a message.

Every table and column name the pipeline puts into a statement goes through `identifier` (pg8000's quoting,
re-exported so that one import serves the whole codebase); `sql_name` is for the statements the pipeline shows
people (a GRANT to paste), where a plain name reads better bare.
"""

from __future__ import annotations

import re

from pg8000.native import identifier

__all__ = ["identifier", "sql_name"]

_BARE = re.compile(r"[a-z_][a-z0-9_$]*")  # what PostgreSQL reads as the same name unquoted


def sql_name(name: str) -> str:
    """A name as a person would type it into SQL: bare when it can be, quoted when it must be."""
    return name if _BARE.fullmatch(name) else identifier(name)
