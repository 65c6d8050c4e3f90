"""The warehouse in front of people: data sets over the star schema, a local dashboard, QuickSight in the stack."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lambdas.common.db import redact_dsn

DASHBOARD_FILE = "dashboard.html"
WAREHOUSE_DSN_ENV = "TOTESYS_WAREHOUSE_DSN"  # the warehouse, for `python -m statemachine.local run` and the dashboard
WAREHOUSE_FILE = "warehouse.json"  # in a lake: the warehouse its runs load, without password (None: the embedded)


def without_password(dsn: str) -> str:
    """A DSN to repeat in a command or a file: its password left out (PGPASSWORD or the environment give it)."""
    no_query_password = re.sub(r"(?i)([?&])password=[^&]*&?", r"\1", redact_dsn(dsn)).rstrip("?&")
    return no_query_password.replace(":***@", "@")


def remember_warehouse(lake_dir: Path, warehouse_dsn: str | None) -> None:
    """Note in the lake which warehouse its runs load (None: the lake's embedded server), so the dashboard finds it
    from the lake directory alone, as the run's printed `make dashboard` command relies on."""
    path = lake_dir / WAREHOUSE_FILE
    if warehouse_dsn is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(json.dumps({"warehouse_dsn": without_password(warehouse_dsn)}), encoding="utf-8")


def remembered_warehouse(lake_dir: Path) -> str | None:
    """The warehouse the lake's runs load, as `remember_warehouse` noted it; None for the embedded one."""
    try:
        kept = json.loads((lake_dir / WAREHOUSE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    dsn = kept.get("warehouse_dsn") if isinstance(kept, dict) else None
    return dsn if isinstance(dsn, str) else None


def dashboard_path(lake_dir: Path) -> Path:
    """Where the local dashboard of a lake directory is written (beside the buckets it summarises)."""
    return lake_dir / DASHBOARD_FILE


def dashboard_hint(lake_dir: Path, *, password_needed: bool = False) -> str:
    """The line a local run ends with: the command that draws the dashboard of its warehouse, and where it goes.

    The command never carries a DSN: the dashboard finds the warehouse as the run did (TOTESYS_WAREHOUSE_DSN, else
    the one the lake's runs load, else the lake's embedded server), so what is printed works when pasted; only a
    password typed on the run's command line has to be given again, and the line says how.
    """
    command = "make dashboard" + (f' ARGS="--lake-dir {lake_dir}"' if lake_dir != Path(".local").resolve() else "")
    password = " (with the warehouse's password in PGPASSWORD or TOTESYS_WAREHOUSE_DSN)" if password_needed else ""
    return f"Dashboard: `{command}`{password} draws it at {dashboard_path(lake_dir).as_uri()}"
