"""Helpers for talking to /ws with the ``websockets`` library (sync client)."""

from __future__ import annotations

import json
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.conftest import TEST_KEY


def ws_url(server: Any, key: str | None = TEST_KEY) -> str:
    url = server.url.replace("http://", "ws://") + "/ws"
    return url + (f"?api_key={key}" if key else "")


def open_ws(server: Any, key: str | None = TEST_KEY, **kwargs: Any) -> ClientConnection:
    return connect(ws_url(server, key), open_timeout=10, **kwargs)


def send(ws: ClientConnection, message: Any) -> None:
    ws.send(message if isinstance(message, str) else json.dumps(message))


def recv(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


def subscribe(ws: ClientConnection, *channels: str) -> dict[str, Any]:
    send(ws, {"type": "Subscribe", "payload": {"channels": list(channels)}})
    return until(ws, "Subscribed")[0]


def until(
    ws: ClientConnection, kind: str, timeout: float = 10
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The next message of type ``kind`` and the messages received before it."""
    before: list[dict[str, Any]] = []
    while True:
        message = recv(ws, timeout)
        if message["type"] == kind:
            return message, before
        before.append(message)


def barrier(ws: ClientConnection) -> list[dict[str, Any]]:
    """Ping and wait for the Pong; returns what arrived in between."""
    send(ws, {"type": "Ping", "payload": {"barrier": True}})
    return until(ws, "Pong")[1]


def events_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The events a data frame carries: one for ``Event``, the batch for ``Events``."""
    if message["type"] == "Event":
        return [message["payload"]]
    if message["type"] == "Events":
        return list(message["payload"]["events"])
    return []


def collect_events(
    ws: ClientConnection, wanted: set[str], timeout: float = 10
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read until every event id of ``wanted`` has arrived: (events, frames) received."""
    events: list[dict[str, Any]] = []
    frames: list[dict[str, Any]] = []
    missing = set(wanted)
    while missing:
        message = recv(ws, timeout)
        if message["type"] in ("Event", "Events"):
            frames.append(message)
            got = events_of(message)
            events.extend(got)
            missing -= {e["event_id"] for e in got}
    return events, frames
