"""Debian's Chromium driven by Playwright, for the browser tests and the dashboard benchmark.

No browser is downloaded: Playwright launches ``/usr/bin/chromium`` (or ``AVILA_CHROMIUM``).
The flags matter on a closed network: without the background-networking ones, Chromium's own
connections are refused, many at a time, and slow every page down.
"""

from __future__ import annotations

import os
import re
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
#: Chromium 15x gives every window (every page Playwright opens) a renderer of its own for the
#: omnibox popup (chrome://omnibox-popup.top-chrome), which no headless page ever shows:
#: about 1 CPU-second per page, more than a dashboard page itself.
UNUSED_FEATURES = ("WebUIOmniboxPopup", "WebUIOmniboxAimPopup")


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


def _playwright_disabled_features() -> list[str] | None:
    """The features Playwright itself disables (its ``chromiumSwitches``), or None if its
    bundle no longer says them the way this reads them."""
    import playwright

    lib = Path(playwright.__file__).parent / "driver" / "package" / "lib"
    for source in (lib / "coreBundle.js", lib / "server" / "chromium" / "chromiumSwitches.js"):
        if source.exists():
            found = re.search(
                r"disabledFeatures = (?:\(\) => )?\[(.*?)\]",
                source.read_text(encoding="utf-8"),
                re.S,
            )
            if found:
                return re.findall(r'"(\w+)"', found.group(1))
    return None


def launch_args() -> list[str]:
    """:data:`CHROMIUM_ARGS` and a ``--disable-features`` adding :data:`UNUSED_FEATURES` to
    Playwright's own list: Chromium keeps only the last such switch, and ours comes after
    Playwright's. Without Playwright's list (a future bundle) the popups stay on."""
    disabled = _playwright_disabled_features()
    if not disabled:
        return list(CHROMIUM_ARGS)
    return [*CHROMIUM_ARGS, "--disable-features=" + ",".join([*disabled, *UNUSED_FEATURES])]


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched Playwright ``Browser`` on Debian's Chromium, closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=launch_args())
        try:
            yield browser
        finally:
            browser.close()
