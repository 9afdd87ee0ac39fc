"""Fixtures for the browser tracker tests: a real server, a test site on another origin, and
Debian's Chromium driven by Playwright.

The Chromium tests fail (they do not skip) when the browser or Playwright is missing: CI must
install Debian's ``chromium`` package and the ``playwright`` Python package.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pytest

from avila.security.keys import KeyStore
from avila.testing import ServerProcess
from avila.testing.browser import browser_missing, chromium


class TrackedServer:
    """An avila server with CORS on and an ingest-only key (the kind a web page embeds)."""

    def __init__(self, data_dir: Path) -> None:
        self.ingest_key, _ = KeyStore(data_dir / "keys.sqlite").create("default", ["ingest"])
        self.read_key = "tracker-admin-key"
        self.data_dir = data_dir
        self.process = ServerProcess(
            data_dir,
            env={
                "API_KEYS": self.read_key,
                "RATE_LIMIT_PER_MINUTE": "0",
                "ENABLE_CORS": "true",
            },
        )

    @property
    def url(self) -> str:
        return self.process.url

    def stored(self) -> duckdb.DuckDBPyConnection:
        """Stop the server and open its store read-only (DuckDB admits one process)."""
        assert self.process.stop() == 0, self.process.log()
        return duckdb.connect(str(self.data_dir / "avila.duckdb"), read_only=True)


@pytest.fixture
def tracked_server(tmp_path: Path) -> Iterator[TrackedServer]:
    server = TrackedServer(tmp_path / "data")
    server.process.start()
    yield server
    server.process.stop()


class _Site(BaseHTTPRequestHandler):
    html = b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        # Every path is the same single-page app, so history navigation and reloads both work.
        body = b"" if self.path == "/favicon.ico" else self.html
        self.send_response(200 if body else 204)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def site() -> Iterator[Callable[[str], str]]:
    """``site(html)`` serves ``html`` at every path of a fresh origin; returns its base URL."""
    servers: list[ThreadingHTTPServer] = []

    def serve(html: str) -> str:
        handler = type("Site", (_Site,), {"html": html.encode()})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield serve
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    problem = browser_missing("the tracker tests")
    if problem:
        pytest.fail(problem, pytrace=False)
    with chromium() as launched:
        yield launched
