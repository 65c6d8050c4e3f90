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
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.offline

from analytics import dashboard_path
from analytics.datasets import DATA_SETS, DataSet, fetch
from lambdas.common.db import connect, credentials_from_dsn

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
                name=str(group) if chart.colour else chart.y,
                x=values if chart.horizontal else categories,
                y=categories if chart.horizontal else values,
                orientation="h" if chart.horizontal else "v",
            )
        )
    fig.update_layout(
        barmode="stack" if chart.colour and chart.y.startswith("units") else "group",
        height=360,
        margin={"l": 40, "r": 10, "t": 10, "b": 40},
        legend_title_text=chart.colour or "",
        showlegend=chart.colour is not None,
        xaxis_title=chart.y if chart.horizontal else chart.x,
        yaxis_title=chart.x if chart.horizontal else chart.y,
    )
    if chart.horizontal:
        fig.update_yaxes(autorange="reversed", automargin=True)
    return fig


def _table(data_set: DataSet, rows: Rows) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in data_set.column_names)
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
<p class="meta">Warehouse {html.escape(source)}, read {generated:%Y-%m-%d %H:%M} UTC.
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


def _without_password(dsn: str) -> str:
    credentials = credentials_from_dsn(dsn)
    return f"{credentials.get('username')}@{credentials.get('host')}/{credentials.get('dbname')}"


def serve(path: Path, port: int) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(path.parent))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        print(f"Serving http://127.0.0.1:{server.server_address[1]}/{path.name} (Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analytics.dashboard", description=__doc__)
    parser.add_argument("--warehouse-dsn", help="the warehouse as a libpq URI (default: the embedded server)")
    parser.add_argument("--lake-dir", type=Path, default=Path(".local"), help="where the page goes (default .local/)")
    parser.add_argument("--serve", type=int, metavar="PORT", help="also serve the page on 127.0.0.1:PORT")
    args = parser.parse_args(argv)
    lake_dir: Path = args.lake_dir.resolve()
    out = dashboard_path(lake_dir)
    if args.warehouse_dsn:
        build(credentials_from_dsn(args.warehouse_dsn), out, source=_without_password(args.warehouse_dsn))
    else:
        from statemachine.local import postgres

        server = postgres.start(lake_dir / "postgres")
        try:
            if postgres.ensure_database(server.admin, "warehouse"):
                print(f"No warehouse in {lake_dir} yet: `make run` makes and fills it.", file=sys.stderr)
                return 1
            build(server.credentials("warehouse"), out, source=server.dsn("warehouse"))
        finally:
            server.release()
    print(f"Dashboard: {out.as_uri()}")
    if args.serve is not None:
        serve(out, args.serve)
    return 0


if __name__ == "__main__":
    sys.exit(main())
