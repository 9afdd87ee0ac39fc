"""One real server loaded with the demo data (shop + factory), one headless Debian Chromium
driven by Playwright, and a watcher that records what each page did wrong.

The demo data is generated once per test run (the xdist workers share it) and copied for
each server. Tests on the demo server add data only under ids of their own.

The browser tests fail (they do not skip) when Chromium or Playwright is missing: CI installs
Debian's ``chromium`` package (.ci/run) and the ``playwright`` Python package (no browser
download: Debian's binary is used).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from avila.security.keys import KeyStore
from avila.testing import ServerProcess
from avila.testing.browser import browser_missing, chromium
from tests.built_once import built_once
from tests.static_site import site  # noqa: F401 - a fixture, shared with tests/tracker

ADMIN_KEY = "dashboard-admin-key"
ARTEFACTS = Path(__file__).resolve().parents[2] / "artefacts" / "dashboard"


def load_demo(data_dir: Path) -> None:
    """The shop (small: 120 users, 30 days) and the factory (2 days) through the CLI."""
    env = {**os.environ, "AVILA_DATA_DIR": str(data_dir)}
    env.pop("AVILA_STORAGE_URL", None)
    for args in (
        ["demo", "--users", "120", "--days", "30", "--seed", "11"],
        ["demo", "--factory", "--days", "2"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "avila.cli", *args], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr


@dataclass
class Dashboard:
    url: str
    admin_key: str
    read_key: str
    process: ServerProcess


def demo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh data directory holding :func:`load_demo`'s data, generated once per test run."""
    data_dir = tmp_path_factory.mktemp("dashboard")
    shutil.copytree(
        built_once(tmp_path_factory, "dashboard-demo", load_demo), data_dir, dirs_exist_ok=True
    )
    return data_dir


@pytest.fixture(scope="package")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    data_dir = demo_copy(tmp_path_factory)
    read_key, _ = KeyStore(data_dir / "keys.sqlite").create("default", ["read"], name="viewer")
    process = ServerProcess(
        data_dir, env={"API_KEYS": ADMIN_KEY, "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "warning"}
    )
    process.start()
    try:
        yield Dashboard(process.url, ADMIN_KEY, read_key, process)
    finally:
        process.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    # Package scope, not session: Playwright's sync API cannot start while another instance
    # runs in the same thread (tests/tracker has its own), so this one ends with the package.
    problem = browser_missing("the dashboard tests")
    if problem:
        pytest.fail(problem, pytrace=False)
    with chromium() as launched:
        yield launched


@dataclass
class Watch:
    """Everything a page did that the dashboard promises it never does."""

    origin: str
    console_errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.console_errors.append(f"pageerror: {exc}"))
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url}: {r.failure}"))
        page.on("response", self._response)
        page.on("request", self._request)
        page.on("websocket", lambda ws: self._check_origin(ws.url))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            self.failed.append(f"{response.request.method} {response.url}: {response.status}")

    def _request(self, request: Any) -> None:
        self.urls.append(request.url)
        self._check_origin(request.url)

    def _check_origin(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob"):
            return
        if parts.netloc != urlsplit(self.origin).netloc:
            self.foreign.append(url)

    def reset(self) -> None:
        self.console_errors.clear()
        self.failed.clear()
        self.foreign.clear()
        self.urls.clear()


@pytest.fixture
def page_and_watch(browser: Any, dashboard: Dashboard) -> Iterator[tuple[Any, Watch]]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    watch = Watch(dashboard.url)
    watch.attach(page)
    yield page, watch
    context.close()
