"""A source table's columns as the catalogue types them, and the Arrow types the lake holds them in.

Shared by the extract (which writes the lake in these types), reconciliation and the load's verification (which
hash rows of both sides in the same canonical form): none of them needs the other's database driver for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

# PostgreSQL type (pg_type.typname) -> Arrow type in the ingestion Parquet. numeric stays text: the
# source's numeric is unscaled, and text is the only lossless form; the transform casts it to the
# warehouse's numeric(10, 2) and refuses values that would lose digits.
ARROW_TYPES: dict[str, pa.DataType] = {
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
}


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str

    @property
    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPES.get(self.pg_type, pa.string())


def arrow_schema(columns: list[Column]) -> pa.Schema:
    return pa.schema([(c.name, c.arrow_type) for c in columns])
