"""The execution input, checked before anything runs: a run that cannot tell what it was asked must not guess.

Step Functions hands the input over as it was given; `{"tables": "sales_order"}` would otherwise be iterated
letter by letter, `null` would stop the run before anyone is told, and a table named twice would have two
extracts race for one batch sequence. What a valid input is, is the model RunOptions (lambdas/common/events.py).
"""

from __future__ import annotations

from typing import Any

from lambdas.common.errors import PipelineError
from lambdas.common.events import RunOptions, parsed


class InvalidRunInput(PipelineError):
    """The execution input is not a run the pipeline can do; the alert names what is wrong with it."""


def run_options(defaults: dict[str, Any], given: Any) -> dict[str, Any]:
    """The options of this run: the defaults, overridden by the execution input, each checked."""
    merged = {**defaults, **given} if isinstance(given, dict) else given
    options: RunOptions = parsed(RunOptions, merged, subject="the execution input", error=InvalidRunInput,
                                 example='{"tables": ["sales_order"]}')  # fmt: skip
    return options.given()
