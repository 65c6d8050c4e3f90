"""`python -m analytics.screenshot [PAGE] [OUT]`: a PNG of the local dashboard, taken by headless Chromium.

The README's docs/dashboard.png is made this way, from the sample data of `make run`. Chromium is the
distribution's (`apt-get install chromium`); Playwright's own browser download is not needed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from analytics import dashboard_path

# How the dashboard's browser test and this command start Chromium: headless, quiet, nothing fetched for itself.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)


def chromium_executable() -> str | None:
    """The distribution's Chromium, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page_file: Path, out: Path, *, width: int = 1200) -> Path:
    from playwright.sync_api import sync_playwright

    executable = chromium_executable()
    if executable is None:
        raise SystemExit("No Chromium: apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(page_file.resolve().as_uri(), wait_until="load")
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analytics.screenshot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument(
        "page",
        nargs="?",
        type=Path,
        default=dashboard_path(Path(".local")),
        help="the dashboard page (default .local/dashboard.html, as `make dashboard` writes it)",
    )
    parser.add_argument(
        "out",
        nargs="?",
        type=Path,
        default=Path("docs/dashboard.png"),
        help="the PNG to write (default docs/dashboard.png)",
    )
    args = parser.parse_args(argv)
    if not args.page.is_file():
        print(f"error: no page at {args.page}: `make dashboard` draws it", file=sys.stderr)
        return 1
    if chromium_executable() is None:
        print("error: no Chromium: apt-get install -y chromium", file=sys.stderr)
        return 1
    print(f"Screenshot: {screenshot(args.page, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
