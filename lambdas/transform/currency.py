"""ISO 4217 currency names, from the maintained `iso4217` package rather than a hand-written table."""

from __future__ import annotations

import iso4217
import pyarrow as pa


def iso_name(code: str) -> str | None:
    """The ISO 4217 English name of a code, or None when ISO 4217 does not know it."""
    try:
        return iso4217.Currency(code.strip().upper()).currency_name
    except ValueError:
        return None


def currency_name(code: str) -> str:
    """An unknown code keeps the code as its name: it must never stop the load."""
    return iso_name(code) or code


def unknown_codes(dim_currency: pa.Table) -> list[str]:
    """The codes of a dim_currency batch that ISO 4217 does not know (for a warning in the log)."""
    return [code for code in dim_currency["currency_code"].to_pylist() if iso_name(code) is None]
