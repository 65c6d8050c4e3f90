"""The warehouse in front of people: data sets over the star schema, a local dashboard, QuickSight in the stack."""

from __future__ import annotations

from pathlib import Path

DASHBOARD_FILE = "dashboard.html"


def dashboard_path(lake_dir: Path) -> Path:
    """Where the local dashboard of a lake directory is written (beside the buckets it summarises)."""
    return lake_dir / DASHBOARD_FILE
