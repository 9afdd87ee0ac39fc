"""Subprotocol authentication and connection caps on /ws, against real server processes."""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from avila.security.keys import KeyStore
from tests.conftest import TEST_KEY
from tests.live.ws_client import open_ws, recv, subscribe, ws_url


def _browser_style(server: Any, key: str) -> ClientConnection:
    """What a browser does: no header, no query string; the key as a subprotocol."""
    return connect(
        ws_url(server, None), subprotocols=["avila.v1", f"avila.key.{key}"], open_timeout=10
    )  # type: ignore[list-item]


def test_key_as_subprotocol_is_accepted_with_avila_v1(server: Any) -> None:
    with _browser_style(server, TEST_KEY) as ws:
        assert ws.subprotocol == "avila.v1"  # never the key back
        assert subscribe(ws, "alerts")["payload"]["channels"] == ["alerts"]


def test_bad_key_as_subprotocol_closes_with_4401(server: Any) -> None:
    with _browser_style(server, "not-a-key") as ws:
        assert ws.subprotocol == "avila.v1"  # accepted, so a browser can read the Error
        error = recv(ws)
        assert error["type"] == "Error" and error["payload"]["code"] == "invalid_api_key"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def _refused(ws: ClientConnection) -> tuple[dict[str, Any], int, str]:
    error = recv(ws)
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None
    return error, closed.value.rcvd.code, closed.value.rcvd.reason


def test_connection_caps_refuse_with_4429(make_server: Any) -> None:
    server = make_server(
        AVILA_LIVE_MAX_CONNECTIONS_PER_KEY="2", AVILA_LIVE_MAX_CONNECTIONS_PER_PROJECT="3"
    )
    keys = KeyStore(server.data_dir / "keys.sqlite")
    second_key, _ = keys.create("default", ["read"])
    third_key, _ = keys.create("default", ["read"])
    other_project, _ = keys.create("elsewhere", ["read"])
    with ExitStack() as stack:
        first = stack.enter_context(open_ws(server))
        second = stack.enter_context(open_ws(server))
        for ws in (first, second):
            assert subscribe(ws, "events")["type"] == "Subscribed"
        with open_ws(server) as over_key:
            error, code, reason = _refused(over_key)
        assert code == 4429
        assert error["payload"]["code"] == "too_many_connections"
        assert error["payload"]["details"] == [{"limit": "key", "max_connections": 2}]
        assert "at most 2" in reason

        third = stack.enter_context(open_ws(server, second_key))  # 3 of 3 in the project
        assert subscribe(third, "events")["type"] == "Subscribed"
        with open_ws(server, third_key) as over_project:
            error, code, _ = _refused(over_project)
        assert code == 4429
        assert error["payload"]["details"] == [{"limit": "project", "max_connections": 3}]
        with open_ws(server, other_project) as elsewhere:  # caps are per project
            assert subscribe(elsewhere, "events")["type"] == "Subscribed"

        first.close()  # a closed connection frees its place once the server notices
        deadline = time.monotonic() + 10
        while True:
            with open_ws(server) as again:
                again.send('{"type": "Subscribe", "payload": {"channels": ["events"]}}')
                if recv(again)["type"] == "Subscribed":
                    break
            assert time.monotonic() < deadline, "a freed connection slot was never reused"
            time.sleep(0.1)
