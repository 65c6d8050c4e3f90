"""The warehouse in front of people: data sets over the star schema, a local dashboard, QuickSight in the stack."""

from __future__ import annotations

from pathlib import Path

DASHBOARD_FILE = "dashboard.html"


def dashboard_path(lake_dir: Path) -> Path:
    """Where the local dashboard of a lake directory is written (beside the buckets it summarises)."""
    return lake_dir / DASHBOARD_FILE


def dashboard_hint(lake_dir: Path, warehouse_dsn: str | None) -> str:
    """The line a local run ends with: the command that draws the dashboard of its warehouse, and where it goes."""
    options = (f" --warehouse-dsn '{warehouse_dsn}'" if warehouse_dsn else "") + (
        f" --lake-dir {lake_dir}" if lake_dir != Path(".local").resolve() else ""
    )
    command = f'make dashboard ARGS="{options.strip()}"' if options else "make dashboard"
    return f"Dashboard: `{command}` draws it at {dashboard_path(lake_dir).as_uri()}"
