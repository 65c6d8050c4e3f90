"""ISO 4217 currency names, from the maintained `iso4217` package rather than a hand-written table."""

from __future__ import annotations

import iso4217
from aws_lambda_powertools import Logger

logger = Logger(child=True)


def currency_name(code: str) -> str:
    """The ISO 4217 English name; an unknown code keeps the code as its name and never stops the load."""
    try:
        return iso4217.Currency(code.strip().upper()).currency_name
    except ValueError:
        logger.warning("currency code not in ISO 4217; using the code as its name", extra={"currency_code": code})
        return code
