"""The local dashboard in a real headless Chromium: it loads offline without errors, draws every data set, and
shows the numbers the SQL gives."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest

from analytics import dashboard_hint, dashboard_path
from analytics.dashboard import display
from analytics.dashboard import main as dashboard_main
from analytics.datasets import DATA_SETS, fetch
from analytics.screenshot import CHROMIUM_ARGS, chromium_executable
from statemachine.local import postgres
from tests import analytics_warehouse

ROOT = Path(__file__).resolve().parents[1]


def chromium() -> str:
    """The distribution's Chromium; CI (CI=true) must have it (`make test` installs it), elsewhere skip."""
    found = chromium_executable()
    if found:
        return found
    reason = "no Chromium on this machine: `apt-get install -y chromium` (as root; `make test` does it)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def dsn(credentials: dict) -> str:
    user = quote(credentials["username"], safe="")
    password = quote(credentials.get("password") or "", safe="")
    auth = f"{user}:{password}" if password else user
    host = credentials["host"]
    if host.startswith("/"):
        return f"postgresql://{auth}@/{credentials['dbname']}?host={quote(host)}&port={credentials['port']}"
    return f"postgresql://{auth}@{host}:{credentials['port']}/{credentials['dbname']}"


@pytest.fixture
def built(databases, tmp_path, capsys):
    """The hand-built warehouse, its data sets' rows from SQL, and the page the command wrote for it."""
    con = databases.warehouse_con()
    try:
        analytics_warehouse.build(con)
        expected = {data_set.name: fetch(con, data_set) for data_set in DATA_SETS}
    finally:
        con.close()
    lake = tmp_path / "lake"
    assert dashboard_main(["--warehouse-dsn", dsn(databases.warehouse), "--lake-dir", str(lake)]) == 0
    page = dashboard_path(lake.resolve())
    assert f"Dashboard: {page.as_uri()}" in capsys.readouterr().out
    return page, expected


@contextmanager
def open_page(page_file: Path):
    """Open the page in Chromium with the network refused; collect console errors and every outside request."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            outside: list[str] = []
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))

            def refuse(route):
                outside.append(route.request.url)
                route.abort()

            page.route("http*://**/*", refuse)
            page.goto(page_file.as_uri(), wait_until="load")
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
            yield page, errors, outside
        finally:
            browser.close()


def test_the_dashboard_loads_offline_without_console_errors_and_draws_every_data_set(built):
    page_file, expected = built
    with open_page(page_file) as (page, errors, outside):
        assert errors == []
        assert outside == [], "the page must not fetch anything (no CDN)"
        for data_set in DATA_SETS:
            chart = page.locator(f"#chart-{data_set.name}")
            assert chart.locator(".main-svg").count() >= 1, f"{data_set.name}: no chart"
            bars = chart.locator("g.point path").count()
            assert bars == len(expected[data_set.name]) > 0, f"{data_set.name}: one bar per row"
            box = chart.bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 200


def test_the_numbers_drawn_and_listed_equal_the_sql_totals(built):
    page_file, expected = built
    with open_page(page_file) as (page, _, _):
        for data_set in DATA_SETS:
            rows = expected[data_set.name]
            chart = data_set.chart
            axis = "x" if chart.horizontal else "y"
            drawn = page.evaluate(
                f"""() => document.getElementById('chart-{data_set.name}').data
                         .flatMap(trace => Array.from(trace.{axis}))"""
            )
            assert sorted(drawn) == pytest.approx(sorted(float(row[chart.y]) for row in rows)), data_set.name

            cells = page.evaluate(
                f"""() => Array.from(document.querySelectorAll('table[data-set="{data_set.name}"] tbody tr'))
                         .map(tr => Object.fromEntries(Array.from(tr.querySelectorAll('td'))
                              .map(td => [td.dataset.column, td.dataset.value])))"""
            )
            assert cells == [{name: display(row[name]) for name in data_set.column_names} for row in rows]


def test_the_dashboard_command_refuses_a_lake_without_a_warehouse_run(tmp_path, capsys):
    lake = tmp_path / "empty"
    try:
        code = dashboard_main(["--lake-dir", str(lake)])
    finally:
        postgres.stop(lake.resolve() / "postgres")
    assert code == 1
    assert not dashboard_path(lake.resolve()).exists()
    assert "make run" in capsys.readouterr().err


def test_a_local_run_names_the_command_that_draws_its_dashboard_and_where(tmp_path):
    default_lake = Path(".local").resolve()
    assert dashboard_hint(default_lake) == (
        f"Dashboard: `make dashboard` draws it at {default_lake.as_uri()}/dashboard.html"
    )
    other = tmp_path / "lake"
    hint = dashboard_hint(other)  # the dashboard finds the lake's warehouse itself: no DSN to paste (or to redact)
    assert f'make dashboard ARGS="--lake-dir {other}"' in hint
    assert hint.endswith(dashboard_path(other).as_uri())


def test_without_chromium_the_browser_test_fails_under_ci_and_is_skipped_elsewhere(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH on which no Chromium can be found
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no Chromium"):
        chromium()


def test_the_dashboard_command_serves_the_page_it_wrote(built, databases, tmp_path):
    page_file, _ = built
    process = subprocess.Popen(
        [sys.executable, "-m", "analytics.dashboard", "--warehouse-dsn", dsn(databases.warehouse),
         "--lake-dir", str(page_file.parent), "--serve", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("Dashboard: file://")
        serving = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/dashboard\.html", serving)
        assert url, serving
        # S310: a 127.0.0.1 URL the test's own server printed
        with urllib.request.urlopen(url.group(0), timeout=10) as response:  # noqa: S310
            served = response.read().decode("utf-8")
        assert served == page_file.read_text(encoding="utf-8")
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_charts_speak_in_words_and_the_toolbar_leaves_the_legend_readable(built):
    page_file, _ = built
    with open_page(page_file) as (page, _, _):
        for data_set in DATA_SETS:
            chart = data_set.chart
            titles = page.evaluate(
                f"""() => Array.from(document.querySelectorAll('#chart-{data_set.name} .g-xtitle, '
                                     + '#chart-{data_set.name} .g-ytitle')).map(t => t.textContent)"""
            )
            category, measure = data_set.title_of(chart.x), data_set.title_of(chart.y)
            assert titles == ([measure, category] if chart.horizontal else [category, measure]), data_set.name
            if chart.colour is None:
                continue
            page.hover(f"#chart-{data_set.name} .nsewdrag")  # plotly shows its toolbar while the mouse is over
            toolbar = page.locator(f"#chart-{data_set.name} .modebar").bounding_box()
            legend = page.locator(f"#chart-{data_set.name} .legendtitletext").bounding_box()
            assert toolbar and legend, data_set.name
            assert page.locator(f"#chart-{data_set.name} .legendtitletext").text_content() == \
                   data_set.title_of(chart.colour)  # fmt: skip
            assert toolbar["y"] + toolbar["height"] <= legend["y"], f"{data_set.name}: the toolbar covers the legend"
