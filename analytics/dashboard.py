"""`python -m analytics.dashboard`: the QuickSight dashboard's data sets as one self-contained local HTML page.

Every data set of ``analytics.datasets`` is queried on the warehouse and drawn with plotly; plotly.js is inlined
once, so the page opens offline from the file. Beside each chart a table lists the exact values, each cell carrying
its value in ``data-value``, so people (and the browser test) can read the numbers the chart is drawn from.
Without ``--warehouse-dsn`` it uses the embedded server that ``python -m statemachine.local run`` leaves.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import html
import http.server
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pg8000.native
import plotly.graph_objects as go
import plotly.offline

from analytics import WAREHOUSE_DSN_ENV, dashboard_path, remembered_warehouse
from analytics.datasets import DATA_SETS, DataSet, fetch
from lambdas.common.db import PASSWORD_ENV, connect, credentials_from_dsn, where
from lambdas.common.errors import PipelineError, TransientError
from localdb import embedded

EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 1, 2, 69

Rows = list[dict[str, Any]]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1f2933; background: #f5f7fa; }
h1 { margin: 0 0 .25rem; } .meta { color: #52606d; margin: 0 0 1rem; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 1rem; }
section { background: #fff; border-radius: 6px; padding: .75rem 1rem; box-shadow: 0 1px 3px rgba(0,0,0,.12); }
section h2 { font-size: 1.1rem; margin: 0; } section p { margin: .2rem 0 .5rem; color: #52606d; }
details { margin-top: .5rem; } table { border-collapse: collapse; font-size: .85rem; }
th, td { padding: .15rem .5rem; border-bottom: 1px solid #e4e7eb; text-align: left; } td.n { text-align: right; }
"""


def display(value: Any) -> str:
    """How a value reads in the table: dates without a midnight time, decimals exactly as stored."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == datetime.min.time() else value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _plotted(value: Any) -> Any:
    """A value as plotly draws it: decimals as floats, times as ISO text."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


def figure(data_set: DataSet, rows: Rows) -> go.Figure:
    """The data set's bar chart: one trace per ``colour`` value (or one trace), ``y`` as the bar length."""
    chart = data_set.chart
    groups: dict[Any, Rows] = {}
    for row in rows:
        groups.setdefault(row[chart.colour] if chart.colour else None, []).append(row)
    fig = go.Figure()
    for group, members in groups.items():
        categories = [_plotted(row[chart.x]) for row in members]
        values = [_plotted(row[chart.y]) for row in members]
        fig.add_trace(
            go.Bar(
                name=str(group) if chart.colour else data_set.title_of(chart.y),
                x=values if chart.horizontal else categories,
                y=categories if chart.horizontal else values,
                orientation="h" if chart.horizontal else "v",
            )
        )
    category, measure = data_set.title_of(chart.x), data_set.title_of(chart.y)
    fig.update_layout(
        barmode="stack" if chart.colour and chart.y.startswith("units") else "group",
        height=380,
        # the top margin holds plotly's toolbar, so that it never covers the legend's title
        margin={"l": 40, "r": 10, "t": 36, "b": 40},
        legend_title_text=data_set.title_of(chart.colour) if chart.colour else "",
        showlegend=chart.colour is not None,
        xaxis_title=measure if chart.horizontal else category,
        yaxis_title=category if chart.horizontal else measure,
    )
    if chart.horizontal:
        fig.update_yaxes(autorange="reversed", automargin=True)
    return fig


def _table(data_set: DataSet, rows: Rows) -> str:
    head = "".join(f"<th>{html.escape(column.title)}</th>" for column in data_set.columns)
    numeric = {column.name for column in data_set.columns if column.type in ("INTEGER", "DECIMAL")}
    body = "".join(
        "<tr>"
        + "".join(
            f'<td data-column="{html.escape(name)}" data-value="{html.escape(display(row[name]))}"'
            f"{' class=n' if name in numeric else ''}>{html.escape(display(row[name]))}</td>"
            for name in data_set.column_names
        )
        + "</tr>"
        for row in rows
    )
    return f'<table data-set="{data_set.name}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def section(data_set: DataSet, rows: Rows) -> str:
    if rows:
        chart = figure(data_set, rows).to_html(
            full_html=False, include_plotlyjs=False, div_id=f"chart-{data_set.name}", config={"displaylogo": False}
        )
    else:
        chart = '<p class="empty">No rows yet: run the pipeline first.</p>'
    return (
        f'<section id="{data_set.name}" data-rows="{len(rows)}"><h2>{html.escape(data_set.title)}</h2>'
        f"<p>{html.escape(data_set.description)}</p>{chart}"
        f"<details><summary>The numbers ({len(rows)} rows)</summary>{_table(data_set, rows)}</details></section>"
    )


def page(results: Sequence[tuple[DataSet, Rows]], *, source: str, generated: datetime) -> str:
    """The whole page, plotly.js inline in the head: nothing is fetched from anywhere when it opens."""
    sections = "\n".join(section(data_set, rows) for data_set, rows in results)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Terrific Totes: the warehouse</title>
<style>{_STYLE}</style>
<script>{plotly.offline.get_plotlyjs()}</script>
</head><body>
<h1>Terrific Totes: how the business is going</h1>
<p class="meta">Warehouse: {html.escape(source)}; read {generated:%Y-%m-%d %H:%M} UTC.
The same data sets as the QuickSight dashboard; only the latest version of each order and payment counts.</p>
<main>
{sections}
</main></body></html>
"""


def build(credentials: dict[str, Any], out: Path, *, source: str) -> Path:
    """Query every data set on the warehouse and write the page to ``out``."""
    con = connect(credentials)
    try:
        results = [(data_set, fetch(con, data_set)) for data_set in DATA_SETS]
    finally:
        con.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page(results, source=source, generated=datetime.now(UTC)), encoding="utf-8")
    return out


class DashboardError(Exception):
    """What stops the page from being drawn, said in one line with the exit code (no traceback)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def warehouse_dsn(given: str | None, lake_dir: Path, environ: Mapping[str, str] = os.environ) -> str | None:
    """The warehouse as `run` finds it: the option, else TOTESYS_WAREHOUSE_DSN, else the one the lake's runs load
    (kept there without its password, which PGPASSWORD gives); None for the lake's embedded server."""
    if given:
        return given
    return environ.get(WAREHOUSE_DSN_ENV) or remembered_warehouse(lake_dir)


def draw(dsn: str | None, lake_dir: Path, out: Path) -> Path:
    """The page of the warehouse at `dsn`, or of the lake's embedded server: the one already running, else started
    on the lake's data (never a new, empty one: a lake no run has used has no warehouse to show)."""
    if dsn is not None:
        try:
            credentials = credentials_from_dsn(dsn)
        except ValueError as exc:
            raise DashboardError(f"--warehouse-dsn: {exc}", EXIT_USAGE) from None
        return _built(credentials, out, source=label(credentials))
    data_dir = lake_dir / "postgres"
    if not (data_dir / "PG_VERSION").is_file():
        raise DashboardError(f"No warehouse for {lake_dir}: `make run` makes and fills it (or give --warehouse-dsn "
                             f"or {WAREHOUSE_DSN_ENV})", EXIT_FAILED)  # fmt: skip
    server = embedded.start(data_dir)
    try:
        if not embedded.database_exists(server.admin, "warehouse"):
            raise DashboardError(f"No warehouse in {lake_dir} yet: `make run` makes and fills it.", EXIT_FAILED)
        return _built(server.credentials("warehouse"), out, source="the local run's embedded PostgreSQL")
    finally:
        server.release()


def label(credentials: Mapping[str, Any]) -> str:
    """Which warehouse, as the page's subtitle names it: its database and server, never a folder of this machine
    (a socket directory) nor a password."""
    host = str(credentials["host"])
    return f"database {credentials.get('dbname')!r} on " + ("this machine" if host.startswith("/") else host)


def _built(credentials: dict[str, Any], out: Path, *, source: str) -> Path:
    """`build`, its database errors as one line: one that cannot be reached (69), or holds no warehouse yet (1)."""
    try:
        return build(credentials, out, source=source)
    except (TransientError, PipelineError) as exc:
        raise DashboardError(f"warehouse database: {exc}", EXIT_UNAVAILABLE) from None
    except pg8000.native.DatabaseError as exc:
        detail = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        message = detail.get("M", str(exc))
        hint = ": has a run loaded it? (`make run`)" if detail.get("C") == "42P01" else ""
        raise DashboardError(f"warehouse database {where(credentials)}: {message}{hint}", EXIT_FAILED) from None


def serve(path: Path, port: int) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(path.parent))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        print(f"Serving http://127.0.0.1:{server.server_address[1]}/{path.name} (Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analytics.dashboard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="exit codes: 0 drawn, 1 no warehouse yet, 2 a mistake on the "
                                            "command line, 69 the warehouse cannot be reached or refuses "
                                            "the login")  # fmt: skip
    parser.add_argument("--warehouse-dsn", help=f"the warehouse as a libpq URI (default: ${WAREHOUSE_DSN_ENV}, else "
                                                "the one the lake's runs load, else the lake's embedded server; a "
                                                f"DSN without a password takes ${PASSWORD_ENV}'s)")  # fmt: skip
    parser.add_argument("--lake-dir", type=Path, default=Path(".local"), help="where the page goes (default .local/)")
    parser.add_argument("--serve", type=int, metavar="PORT", help="also serve the page on 127.0.0.1:PORT")
    args = parser.parse_args(argv)
    lake_dir: Path = args.lake_dir.resolve()
    out = dashboard_path(lake_dir)
    try:
        draw(warehouse_dsn(args.warehouse_dsn, lake_dir), lake_dir, out)
    except DashboardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"Dashboard: {out.as_uri()}")
    if args.serve is not None:
        serve(out, args.serve)
    return 0


if __name__ == "__main__":
    sys.exit(main())
