"""The contracts as data: which source tables exist, which warehouse tables are built from which.

Every table name that reaches SQL is first checked against these tuples (and, for the source, against
the database catalogue), then quoted as an identifier. The checks are here only: an event's or the run options'
table names are of the annotated types at the end, which run them when the event is parsed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator
from pydantic_core import PydanticCustomError

from lambdas.common.errors import UnknownTableError, truncated

SOURCE_TABLES: tuple[str, ...] = (
    "address",
    "counterparty",
    "currency",
    "department",
    "design",
    "payment",
    "payment_type",
    "purchase_order",
    "sales_order",
    "staff",
    "transaction",
)

# Prisma's bookkeeping table sits beside the business tables; it is never extracted.
NEVER_EXTRACTED: frozenset[str] = frozenset({"_prisma_migrations"})

PRIMARY_KEYS: dict[str, str] = {table: f"{table}_id" for table in SOURCE_TABLES}

# The source's dates are text 'YYYY-MM-DD' (the contract's note); the extract refuses any other text in them, so
# the lake never holds a batch the transform cannot cast.
TEXT_DATE_COLUMNS: dict[str, tuple[str, ...]] = {
    "sales_order": ("agreed_delivery_date", "agreed_payment_date"),
    "purchase_order": ("agreed_delivery_date", "agreed_payment_date"),
    "payment": ("payment_date",),
}

DIMENSIONS: tuple[str, ...] = (
    "dim_date",
    "dim_location",
    "dim_staff",
    "dim_counterparty",
    "dim_currency",
    "dim_design",
    "dim_payment_type",
    "dim_transaction",
)
FACTS: tuple[str, ...] = ("fact_sales_order", "fact_purchase_order", "fact_payment")
WAREHOUSE_TABLES: tuple[str, ...] = DIMENSIONS + FACTS

# The source tables each warehouse table is built from (the lineage in the README given with the contracts).
TRANSFORM_INPUTS: dict[str, tuple[str, ...]] = {
    "dim_date": ("sales_order", "purchase_order", "payment"),
    "dim_location": ("address",),
    "dim_staff": ("staff", "department"),
    "dim_counterparty": ("counterparty", "address"),
    "dim_currency": ("currency",),
    "dim_design": ("design",),
    "dim_payment_type": ("payment_type",),
    "dim_transaction": ("transaction",),
    "fact_sales_order": ("sales_order",),
    "fact_purchase_order": ("purchase_order",),
    "fact_payment": ("payment",),
}


def require_source_table(table: str) -> str:
    """Refuse any name that is not one of the eleven business tables, before it gets near SQL."""
    if table in NEVER_EXTRACTED:
        raise UnknownTableError(f"{table!r} is Prisma's migration log, not business data; it is never extracted")
    if table not in SOURCE_TABLES:
        raise UnknownTableError(f"{truncated(repr(table), 100)} is not a totesys source table "
                                f"(expected one of {', '.join(SOURCE_TABLES)})")  # fmt: skip
    return table


def require_warehouse_table(table: str) -> str:
    """Refuse any name that is not a table of the warehouse contract."""
    if table not in WAREHOUSE_TABLES:
        raise UnknownTableError(f"{truncated(repr(table), 100)} is not a warehouse table "
                                f"(expected one of {', '.join(WAREHOUSE_TABLES)})")  # fmt: skip
    return table


def _as_field_error(require: Callable[[str], str]) -> Callable[[str], str]:
    """A require_* check as a pydantic validator: its refusal becomes the field's error (type ``unknown_table``,
    which lambdas/common/events.py raises as UnknownTableError), its message unchanged."""

    def check(name: str) -> str:
        try:
            return require(name)
        except UnknownTableError as error:
            raise PydanticCustomError("unknown_table", "{message}", {"message": str(error)}) from None

    return check


def _listed(allowed: tuple[str, ...]) -> Callable[[Any], list[str]]:
    def check(value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PydanticCustomError("table_list", "must be a list of table names")
        names = list(dict.fromkeys(value))  # each table once: two extracts of one table would race on its sequence
        unknown = [truncated(n, 60) for n in names if n not in allowed]
        if unknown:
            raise PydanticCustomError("unknown_tables", "unknown table {unknown}; choose from {allowed}",
                                      {"unknown": ", ".join(unknown[:5]), "allowed": ", ".join(allowed)})  # fmt: skip
        return names

    return check


# The types an event or the run's options give table names as: every name checked against the contract here.
SourceTable = Annotated[str, AfterValidator(_as_field_error(require_source_table))]
WarehouseTable = Annotated[str, AfterValidator(_as_field_error(require_warehouse_table))]
SourceTables = Annotated[list[str], BeforeValidator(_listed(SOURCE_TABLES))]
WarehouseTables = Annotated[list[str], BeforeValidator(_listed(WAREHOUSE_TABLES))]
Dimensions = Annotated[list[str], BeforeValidator(_listed(DIMENSIONS))]
Facts = Annotated[list[str], BeforeValidator(_listed(FACTS))]
