"""``avila serve``'s HTTP protocol (avila.api.http_protocol) on a real server: joining a
connection's writes must keep every answer whole and in order (pipelined requests included)
and pass large bodies through. (That a 202 now leaves in one ``send`` is seen with strace or in
the benchmark's CPU figures, not here: a client may read two sends in one ``recv`` as well.)"""

from __future__ import annotations

import json
import socket
import uuid

import httpx

from tests.conftest import TEST_KEY
from tests.foundation.helpers import page_view


def _request(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"x-api-key: {TEST_KEY}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _read_response(sock: socket.socket, buffered: bytes) -> tuple[bytes, bytes, bytes]:
    """(head, body, what followed) of the next response."""
    data = buffered
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        rest += sock.recv(65536)
    return head, rest[:length], rest[length:]


def test_answers_arrive_whole_and_in_order_on_one_connection(server) -> None:  # noqa: ANN001
    host, port = server.url.removeprefix("http://").split(":")
    ids = [f"proto-{uuid.uuid4().hex}-{i}" for i in range(20)]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        single = json.dumps({"event": page_view(event_id=ids[0])}).encode()
        sock.sendall(_request("/api/v1/events", single))
        head, body, rest = _read_response(sock, b"")
        assert head.startswith(b"HTTP/1.1 202")
        assert rest == b""
        assert json.loads(body)["event_ids"] == [ids[0]]

        # Nineteen requests in one send: the answers come back complete and in order.
        sock.sendall(
            b"".join(
                _request("/api/v1/events", json.dumps({"event": page_view(event_id=i)}).encode())
                for i in ids[1:]
            )
        )
        rest = b""
        for event_id in ids[1:]:
            head, body, rest = _read_response(sock, rest)
            assert head.startswith(b"HTTP/1.1 202"), head
            assert json.loads(body)["event_ids"] == [event_id]
        assert rest == b""


def test_a_large_body_passes_through_whole(server) -> None:  # noqa: ANN001
    # The OpenAPI document is larger than the protocol's flush threshold. (WebSocket upgrades
    # through this protocol: tests/live/test_ws_api.py, which runs against `avila serve` too.)
    response = httpx.get(server.url + "/openapi.json", timeout=30)
    assert response.status_code == 200
    assert len(response.content) > 64 * 1024
    assert response.json()["paths"]
