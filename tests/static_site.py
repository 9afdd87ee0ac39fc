"""A throwaway web site on a free port, for pages that load the tracker from our server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


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
