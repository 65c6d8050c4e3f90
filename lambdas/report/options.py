"""The execution input, checked before anything runs: a run that cannot tell what it was asked must not guess.

Step Functions hands the input over as it was given; `{"tables": "sales_order"}` would otherwise be iterated
letter by letter, `null` would stop the run before anyone is told, and a table named twice would have two
extracts race for one batch sequence.
"""

from __future__ import annotations

from typing import Any

from lambdas.common.errors import PipelineError, truncated
from lambdas.common.events import FLAGS, MODES
from lambdas.common.tables import DIMENSIONS, FACTS, SOURCE_TABLES, WAREHOUSE_TABLES


class InvalidRunInput(PipelineError):
    """The execution input is not a run the pipeline can do; the alert names what is wrong with it."""


_TABLE_LISTS = {"tables": SOURCE_TABLES, "warehouse_tables": WAREHOUSE_TABLES, "dimensions": DIMENSIONS,
                "facts": FACTS}  # fmt: skip


def _names(key: str, value: Any, allowed: tuple[str, ...]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRunInput(f"{key!r} must be a list of table names, got {truncated(repr(value), 200)}")
    names = list(dict.fromkeys(value))  # each table once: two extracts of one table would race on its sequence
    unknown = [truncated(n, 60) for n in names if n not in allowed]
    if unknown:
        raise InvalidRunInput(f"{key!r}: unknown table {', '.join(unknown[:5])}; choose from {', '.join(allowed)}")
    return names


def run_options(defaults: dict[str, Any], given: Any) -> dict[str, Any]:
    """The options of this run: the defaults, overridden by the execution input, each checked."""
    if not isinstance(given, dict):
        raise InvalidRunInput(f"the execution input must be a JSON object like {{\"tables\": [\"sales_order\"]}}, "
                              f"got {truncated(repr(given), 200)}")  # fmt: skip
    options = {**defaults, **given}
    for key, allowed in _TABLE_LISTS.items():
        if key in options:
            options[key] = _names(key, options[key], allowed)
    for mode in (*MODES, *FLAGS):
        if not isinstance(options.get(mode, False), bool):
            raise InvalidRunInput(f"'{mode}' must be true or false, got {truncated(repr(options[mode]), 100)}")
    chosen = [mode for mode in MODES if options.get(mode)]
    if len(chosen) > 1:
        raise InvalidRunInput(f"choose one of {', '.join(MODES)}, not {' and '.join(chosen)}")
    return options
