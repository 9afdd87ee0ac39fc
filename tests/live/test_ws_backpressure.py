"""A WebSocket client that subscribes and then never reads: it must cost ingest nothing, it is
told what it missed and closed (4408) after the stall timeout, and a reading client on the same
project keeps getting its frames meanwhile.

The stalled client is a raw socket with a small receive buffer driven by websockets' sans-I/O
client, so TCP back-pressure reaches the server soon and the test controls exactly when it
reads again.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from typing import Any

import httpx
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from tests.conftest import TEST_KEY
from tests.live.ws_client import events_of, open_ws, subscribe, ws_url

BATCH = 500
STALL_TIMEOUT = 2
EVENT = {
    "user_id": "bp-user",
    "session_id": "bp-session",
    "timestamp": "2025-11-26T10:00:00.000Z",
    "event_type": {"type": "PageView", "data": {"url": "/products/42", "title": "Produto 42 ☕"}},
    "metadata": {"app_version": "1.4.2"},
    "context": {
        "device": {"device_type": "Desktop", "os": "Windows", "browser": "Chrome"},
        "location": {"country": "BR", "city": "São Paulo", "timezone": "America/Sao_Paulo"},
        "referrer": "https://www.google.com/",
        "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120",
    },
}


def _body(prefix: str, batch: int) -> bytes:
    events = [
        {**EVENT, "event_id": f"{prefix}-{batch}-{i}", "user_id": f"bp-user-{i % 300}"}
        for i in range(BATCH)
    ]
    return json.dumps({"events": events}).encode()


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _metric(url: str, name: str, labels: str = "") -> float:
    text = httpx.get(url + "/metrics").text
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+]+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


class StalledClient:
    """Completes the handshake, subscribes to events, reads the reply, then stops reading."""

    def __init__(self, server: Any) -> None:
        self.protocol = ClientProtocol(parse_uri(ws_url(server)))
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", server.port))
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        while self.protocol.state is not State.OPEN:
            self.protocol.receive_data(self.sock.recv(4096))
        self.protocol.send_text(b'{"type": "Subscribe", "payload": {"channels": ["events"]}}')
        self._flush()
        while not any(b"Subscribed" in f.data for f in self._frames()):
            self.protocol.receive_data(self.sock.recv(4096))

    def _flush(self) -> None:
        self.sock.sendall(b"".join(self.protocol.data_to_send()))

    def _frames(self) -> list[Frame]:
        return [e for e in self.protocol.events_received() if isinstance(e, Frame)]

    def read_to_close(self, timeout: float = 20) -> list[dict[str, Any]]:
        """Read again: every text message until the server's close frame."""
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while self.protocol.close_rcvd is None:
            assert time.monotonic() < deadline, "no close frame"
            data = self.sock.recv(1 << 16)
            if not data:
                self.protocol.receive_eof()
                break
            self.protocol.receive_data(data)
            for frame in self._frames():
                if frame.opcode is Opcode.TEXT:
                    messages.append(json.loads(frame.data))
        return messages

    def close(self) -> None:
        self.sock.close()


class Reader(threading.Thread):
    """A client that reads every frame and notes when each arrived."""

    def __init__(self, server: Any) -> None:
        super().__init__(daemon=True)
        self.ws = open_ws(server).__enter__()
        subscribe(self.ws, "events")
        self.arrivals: list[float] = []
        self.events = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                message = json.loads(self.ws.recv(timeout=0.5))
            except TimeoutError:
                continue
            if message["type"] in ("Event", "Events"):
                self.arrivals.append(time.monotonic())
                self.events += len(events_of(message))


def test_stalled_client_is_told_what_it_missed_and_closed_while_nothing_else_slows(
    make_server: Any,
) -> None:
    server = make_server(
        AVILA_LIVE_STALL_TIMEOUT_SECONDS=str(STALL_TIMEOUT), AVILA_LIVE_QUEUE_FRAMES="4"
    )
    assert server.proc is not None
    stalled_metric = ("avila_live_closed_connections_total", '{project="default",reason="stalled"}')
    headers = {"x-api-key": TEST_KEY, "content-type": "application/json"}
    prefix = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as http:
        for b in range(6):  # warm up allocator arenas and DuckDB before the baseline
            assert http.post("/api/v1/events/batch", content=_body(prefix + "w", b)).is_success
        rss_before = _rss_mb(server.proc.pid)
        reader = Reader(server)
        reader.start()
        stalled = StalledClient(server)
        try:
            # Ingest until the server has given up on the stalled client (functional limit:
            # 60 s); every request must succeed within the client's 10 s timeout.
            deadline = time.monotonic() + 60
            batches = 0
            while _metric(server.url, *stalled_metric) < 1:
                assert time.monotonic() < deadline, "the stalled client was never closed"
                response = http.post("/api/v1/events/batch", content=_body(prefix, batches))
                assert response.status_code == 202 and response.json()["accepted"] == BATCH
                batches += 1
            stalled_at = time.monotonic()
            # Ingest goes on after the close, and the reader still gets every flush.
            for b in range(batches, batches + 10):
                response = http.post("/api/v1/events/batch", content=_body(prefix, b))
                assert response.status_code == 202
            rss_after = _rss_mb(server.proc.pid)
            last = stalled.read_to_close()
        finally:
            stalled.close()
            time.sleep(0.5)
            reader.stop.set()
            reader.join(5)
            reader.ws.close()

        farewell = [m for m in last if m["type"] == "Error"]
        assert farewell and farewell[-1]["payload"]["code"] == "client_stalled"
        missed = farewell[-1]["payload"]["details"][0]["missed_events"]
        assert missed > 0
        close = stalled.protocol.close_rcvd
        assert close is not None and close.code == 4408
        assert f"{missed} events missed" in close.reason
        # Frames it did get before stalling, plus what it missed, never exceed what was sent.
        got = sum(len(events_of(m)) for m in last)
        assert got + missed <= (batches + 10) * BATCH

        # The reading client kept receiving while the other one stalled: no gap in its frames
        # beyond a generous functional bound, and frames after the stalled one was closed.
        gaps = [b - a for a, b in zip(reader.arrivals, reader.arrivals[1:], strict=False)]
        assert reader.events > 0 and max(gaps) < 5.0, max(gaps)
        assert any(t > stalled_at for t in reader.arrivals)
        assert _metric(server.url, "avila_live_dropped_events_total", '{project="default"}') > 0
        assert _metric(server.url, "avila_live_frames_total", '{project="default"}') > 0
        # Memory stays bounded: the stalled client's frames are shared and capped at 4.
        assert rss_after - rss_before < 64, (rss_before, rss_after)
