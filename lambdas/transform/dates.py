"""dim_date: one row per calendar day, gap-free over every date any fact references.

Because the dimension is gap-free, the only thing a batch of facts tells it is the earliest and latest
date referenced; the dimension grows to cover both and never shrinks.
"""

from __future__ import annotations

from datetime import date, timedelta

import pyarrow as pa
import pyarrow.compute as pc

DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip

DateRange = tuple[date, date]


def span(dates: list[pa.ChunkedArray | pa.Array]) -> DateRange | None:
    """The earliest and latest non-null date in the given columns."""
    lows, highs = [], []
    for column in dates:
        bounds = pc.min_max(column)
        if bounds["min"].is_valid:
            lows.append(bounds["min"].as_py())
            highs.append(bounds["max"].as_py())
    return (min(lows), max(highs)) if lows else None


def grow(known: DateRange | None, seen: DateRange | None) -> tuple[DateRange | None, list[DateRange]]:
    """The new covered range and the ranges of days to add (before and after what is known)."""
    if seen is None:
        return known, []
    if known is None:
        return seen, [seen]
    low, high = min(known[0], seen[0]), max(known[1], seen[1])
    added = []
    if low < known[0]:
        added.append((low, known[0] - timedelta(days=1)))
    if high > known[1]:
        added.append((known[1] + timedelta(days=1), high))
    return (low, high), added


def calendar(first: date, last: date) -> pa.Table:
    """The dim_date rows for every day from first to last inclusive."""
    days = pa.array([first + timedelta(days=n) for n in range((last - first).days + 1)], pa.date32())
    day_of_week = pc.day_of_week(days, count_from_zero=False, week_start=1)
    month = pc.month(days)
    return pa.table(
        {
            "date_id": days,
            "year": pc.cast(pc.year(days), pa.int32()),
            "month": pc.cast(month, pa.int32()),
            "day": pc.cast(pc.day(days), pa.int32()),
            "day_of_week": pc.cast(day_of_week, pa.int32()),
            "day_name": pc.take(pa.array(DAY_NAMES), pc.subtract(day_of_week, 1)),
            "month_name": pc.take(pa.array(MONTH_NAMES), pc.subtract(month, 1)),
            "quarter": pc.cast(pc.quarter(days), pa.int32()),
        }
    )
