"""Real destinations for alert tests: an HTTP receiver and an SMTP server (aiosmtpd).

Both record what arrives with ``time.monotonic()`` so a test can measure how long an alert took
from the request that crossed a threshold.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from avila.testing.server import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class HttpReceiver:
    """``POST /any/path`` → 200 and recorded; ``/fail/...`` → 500; ``/hang/...`` waits 60 s."""

    requests: list[Received] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.requests.append(
                    Received(
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        time.monotonic(),
                    )
                )
                if self.path.startswith("/hang"):
                    time.sleep(60)
                status = 500 if self.path.startswith("/fail") else 200
                try:
                    self.send_response(status)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender under test gave up waiting (a /hang test's timeout)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, prefix: str) -> list[Received]:
        return [r for r in self.requests if r.path.startswith(prefix)]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: Message
    at: float


class _Handler:
    def __init__(self, inbox: list[Mail]) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.inbox.append(
            Mail(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                message_from_bytes(envelope.original_content or envelope.content),
                time.monotonic(),
            )
        )
        return "250 Message accepted for delivery"


class SmtpSink:
    """A real SMTP server on a free port (plain SMTP, no TLS), keeping every message."""

    def __init__(self) -> None:
        self.inbox: list[Mail] = []
        self.port = free_port()
        self._controller = Controller(_Handler(self.inbox), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def close(self) -> None:
        self._controller.stop()


def wait_for(predicate: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def dead_port() -> int:
    """A port nobody listens on (connections are refused)."""
    return free_port()
