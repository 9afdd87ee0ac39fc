"""GET /ws edge cases against a real server: hostile client messages get an Error frame and the
connection stays open (docs/realtime.md, "Messages")."""

from __future__ import annotations

import json
from typing import Any

from tests.live.ws_client import open_ws, recv, send

MAX_CLIENT_MESSAGE = 64 * 1024  # docs/realtime.md: "larger than 64 KiB (message_too_large)"
DOCUMENTED_CODES = {
    "malformed_json",
    "invalid_message",
    "unknown_message_type",
    "unknown_channel",
    "message_too_large",
}


def _still_open(ws: Any) -> None:
    send(ws, {"type": "Ping", "payload": {"alive": True}})
    pong = recv(ws)
    assert pong["type"] == "Pong" and pong["payload"]["alive"] is True


def test_deeply_nested_messages_get_an_error_not_a_dropped_connection(server: Any) -> None:
    # 10 KB of brackets: far below the size limit, but deeper than the decoder's recursion limit.
    cases = [
        "[" * 5000 + "]" * 5000,
        '{"type": "Ping", "payload": {"x": ' + "[" * 5000 + "]" * 5000 + "}}",
        '{"type": "Subscribe", "payload": {"channels": ' + "[" * 5000 + "]" * 5000 + "}}",
    ]
    with open_ws(server) as ws:
        for message in cases:
            assert len(message.encode()) < MAX_CLIENT_MESSAGE
            send(ws, message)
            reply = recv(ws)
            assert reply["type"] == "Error", reply
            assert reply["payload"]["code"] in DOCUMENTED_CODES
            assert set(reply["payload"]) == {"code", "message", "details"}
            _still_open(ws)


def test_every_nesting_depth_near_the_limit_gets_exactly_one_reply(server: Any) -> None:
    with open_ws(server) as ws:
        for depth in range(960, 1040, 4):
            send(ws, '{"type": "Ping", "payload": {"x": ' + "[" * depth + "]" * depth + "}}")
            text = ws.recv(timeout=10)  # a Pong this deep is too deep for json.loads here
            assert text.startswith(('{"type":"Pong"', '{"type":"Error"')), text[:80]
            if text.startswith('{"type":"Error"'):
                assert json.loads(text)["payload"]["code"] in DOCUMENTED_CODES
        _still_open(ws)


def test_the_size_limit_counts_utf8_bytes_not_characters(server: Any) -> None:
    # 25,000 characters but 100,000 UTF-8 bytes (four per emoji): over the 64 KiB limit.
    big = json.dumps({"type": "Ping", "payload": {"s": "🌍" * 25_000}}, ensure_ascii=False)
    assert len(big) < MAX_CLIENT_MESSAGE < len(big.encode())
    # Under the limit in bytes, with multi-byte characters: answered normally.
    small = json.dumps({"type": "Ping", "payload": {"s": "é" * 30_000}}, ensure_ascii=False)
    assert len(small.encode()) < MAX_CLIENT_MESSAGE
    with open_ws(server) as ws:
        send(ws, big)
        reply = recv(ws)
        assert reply["type"] == "Error" and reply["payload"]["code"] == "message_too_large"
        send(ws, small)
        pong = recv(ws)
        assert pong["type"] == "Pong" and pong["payload"]["s"] == "é" * 30_000
        _still_open(ws)
