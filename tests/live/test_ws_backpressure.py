"""A WebSocket client that subscribes to events and never reads must not slow ingestion, and
the server's memory must stay bounded while its messages pile up (oldest dropped).

Rounds alternate between a project with the stalled subscriber and one without, on the same
server, so store growth and machine load hit both sides alike.
"""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from websockets.client import ClientProtocol
from websockets.frames import Frame
from websockets.protocol import State
from websockets.uri import parse_uri

from avila.security.keys import KeyStore
from tests.conftest import TEST_KEY
from tests.live.ws_client import ws_url

BATCH = 1000
ROUND_EVENTS = 20_000
ROUNDS = 3
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


def _ingest_seconds(url: str, key: str, events: int) -> float:
    """Wall time to ingest ``events`` fresh events sent by two concurrent clients."""
    prefix = uuid.uuid4().hex[:8]
    bodies = [_body(prefix, b) for b in range(events // BATCH)]
    headers = {"x-api-key": key, "content-type": "application/json"}

    def send(chunk: list[bytes]) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
            for body in chunk:
                response = c.post("/api/v1/events/batch", content=body)
                assert response.status_code == 202
                assert response.json()["accepted"] == BATCH

    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(send, [bodies[0::2], bodies[1::2]]))
    return time.perf_counter() - started


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _dropped(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    found = re.search(r"^avila_live_dropped_messages_total ([0-9.e+]+)$", text, re.MULTILINE)
    assert found, "avila_live_dropped_messages_total missing from /metrics"
    return float(found.group(1))


def _stalled_subscriber(server: Any) -> socket.socket:
    """A socket that completes the WebSocket handshake (websockets' sans-I/O client),
    subscribes to events, reads the reply and then never reads again. Its receive buffer is
    small, so TCP back-pressure reaches the server soon (localhost autotuning would otherwise
    absorb tens of MB)."""
    protocol = ClientProtocol(parse_uri(ws_url(server)))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    protocol.send_request(protocol.connect())
    sock.sendall(b"".join(protocol.data_to_send()))
    while protocol.state is not State.OPEN:
        protocol.receive_data(sock.recv(4096))
    protocol.send_text(
        json.dumps({"type": "Subscribe", "payload": {"channels": ["events"]}}).encode()
    )
    sock.sendall(b"".join(protocol.data_to_send()))
    frames: list[Frame] = []
    while not any(b"Subscribed" in f.data for f in frames):
        protocol.receive_data(sock.recv(4096))
        frames.extend(e for e in protocol.events_received() if isinstance(e, Frame))
    return sock


def test_stalled_subscriber_does_not_slow_ingest_or_grow_memory(make_server: Any) -> None:
    server = make_server()
    assert server.proc is not None
    pid = server.proc.pid
    quiet_key, _ = KeyStore(server.data_dir / "keys.sqlite").create("quiet", ["ingest"])
    _ingest_seconds(server.url, TEST_KEY, 20_000)  # warm up: allocator arenas, DuckDB
    _ingest_seconds(server.url, quiet_key, 20_000)
    rss_before = _rss_mb(pid)

    with _stalled_subscriber(server):
        # Until the socket buffers are full the server still sends; measure once it is stuck.
        _ingest_seconds(server.url, TEST_KEY, 30_000)
        assert _dropped(server.url) > 0
        watched = quiet = 0.0
        for _ in range(ROUNDS):
            watched += _ingest_seconds(server.url, TEST_KEY, ROUND_EVENTS)
            quiet += _ingest_seconds(server.url, quiet_key, ROUND_EVENTS)
        rss_after = _rss_mb(pid)
        dropped = _dropped(server.url)

    total = ROUNDS * ROUND_EVENTS
    with_stalled, without = total / watched, total / quiet
    print(
        f"ingest {without:.0f} ev/s without, {with_stalled:.0f} with a stalled subscriber; "
        f"RSS {rss_before:.0f} -> {rss_after:.0f} MB; {dropped:.0f} messages dropped"
    )
    assert with_stalled >= 0.5 * without, (with_stalled, without)
    # Unbounded, ~150,000 queued event messages (~800 bytes of JSON each) would be >100 MB.
    assert rss_after - rss_before < 48, (rss_before, rss_after)
    assert dropped >= total * 0.9
