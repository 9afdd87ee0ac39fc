"""No API key in any log line, whichever way the key was sent.

A real server (debug level, so every logger speaks) receives keys in every way a client can
send one: ``x-api-key``, ``Authorization: Bearer``, ``?api_key=`` on HTTP and on the WebSocket
(uvicorn logs the WebSocket request line with its query string), the ``avila.key.*`` WebSocket
subprotocol, Segment HTTP Basic auth and Segment ``writeKey`` in the body, plus unknown keys
the server never configured (only the patterns can catch those). Its whole log holds none.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
from collections.abc import Callable

import httpx

from avila.testing import ServerProcess


def _key(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(12)}"


def test_no_key_in_the_whole_log(make_server: Callable[..., ServerProcess]) -> None:
    from websockets.exceptions import InvalidStatus, WebSocketException
    from websockets.sync.client import connect

    configured = {
        name: _key(name)
        for name in ("header", "bearer", "wsquery", "wsproto", "basic", "writekey", "query")
    }
    unknown = {name: _key(name) for name in ("unknown-ws", "unknown-query", "unknown-header")}
    server = make_server(API_KEYS=",".join(configured.values()), LOG_LEVEL="debug")
    base, ws_base = server.url, server.url.replace("http://", "ws://")
    event = {"user_id": "u1", "event_type": {"type": "PageView", "data": {"url": "/"}}}

    with httpx.Client(base_url=base, timeout=30) as client:
        realtime = "/api/v1/analytics/realtime"
        assert client.get(realtime, headers={"x-api-key": configured["header"]}).status_code == 200
        bearer = {"authorization": f"Bearer {configured['bearer']}"}
        assert client.get(realtime, headers=bearer).status_code == 200
        # Keys in an HTTP query string are not accepted, but a client may still send them.
        assert client.get(f"{realtime}?api_key={configured['query']}").status_code == 401
        assert client.get(f"{realtime}?api_key={unknown['unknown-query']}").status_code == 401
        assert (
            client.get(realtime, headers={"x-api-key": unknown["unknown-header"]}).status_code
            == 401
        )
        basic = base64.b64encode(f"{configured['basic']}:".encode()).decode()
        track = {"userId": "u1", "event": "Signed Up", "type": "track"}
        segment = client.post("/v1/track", json=track, headers={"authorization": f"Basic {basic}"})
        assert segment.status_code == 200, segment.text
        body = {**track, "writeKey": configured["writeKey".lower()]}
        assert client.post("/v1/track", json=body).status_code == 200
        # A failing request that carries the key in its body too.
        bad = client.post(
            "/api/v1/events",
            content=json.dumps({"event": event, "api_key": configured["header"]}) + "{",
            headers={"x-api-key": configured["header"]},
        )
        assert bad.status_code == 400

    with connect(f"{ws_base}/ws?api_key={configured['wsquery']}") as ws:
        ws.send(json.dumps({"type": "Ping"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "Pong"
    with (
        contextlib.suppress(InvalidStatus, WebSocketException, TimeoutError, OSError),
        connect(f"{ws_base}/ws?api_key={unknown['unknown-ws']}") as ws,
    ):
        ws.recv(timeout=10)
    with (
        contextlib.suppress(InvalidStatus, WebSocketException, TimeoutError, OSError),
        connect(
            f"{ws_base}/ws", subprotocols=["avila.v1", f"avila.key.{configured['wsproto']}"]
        ) as ws,
    ):
        ws.send(json.dumps({"type": "Ping"}))
        ws.recv(timeout=10)

    assert server.stop() == 0
    log = server.log()
    # The WebSocket request line is logged (so this test can fail), with the key redacted.
    assert "WebSocket /ws?api_key=[redacted]" in log, log[-3000:]
    for name, key in {**configured, **unknown}.items():
        assert key not in log, f"the {name} key is in the log"
    assert basic not in log, "the Basic credentials are in the log"
