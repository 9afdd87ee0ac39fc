"""Debian's Chromium driven by Playwright, for the browser tests and the dashboard benchmark.

No browser is downloaded: Playwright launches ``/usr/bin/chromium`` (or ``AVILA_CHROMIUM``).
The flags matter on a closed network: without the background-networking ones, Chromium's own
connections are refused, many at a time, and slow every page down.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("AVILA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def browser_missing(purpose: str) -> str | None:
    """Why ``purpose`` (e.g. "the tracker tests") cannot drive a browser here, or None."""
    if not Path(CHROMIUM).exists():
        return (
            f"Chromium is required for {purpose} and was not found at {CHROMIUM}: install "
            "Debian's package (apt-get install -y chromium) or set AVILA_CHROMIUM"
        )
    if find_spec("playwright") is None:
        return (
            f"{purpose} drive Chromium with Playwright: pip install playwright "
            "(no browser download is needed; Debian's chromium is used)"
        )
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched Playwright ``Browser`` on Debian's Chromium, closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
