"""GET /ws against a real server with the ``websockets`` client."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from avila.security.keys import KeyStore
from tests.conftest import TEST_KEY
from tests.live.ws_client import (
    barrier,
    collect_events,
    events_of,
    open_ws,
    recv,
    send,
    subscribe,
    until,
    ws_url,
)


def _event(user: str) -> dict[str, Any]:
    return {
        "event_id": "ws-" + uuid.uuid4().hex,
        "user_id": user,
        "timestamp": "2025-11-26T10:00:00.250Z",
        "event_type": {"type": "PageView", "data": {"url": "/ws", "title": "Olá 🌍"}},
        "context": {"location": {"city": "São Paulo"}},
    }


def _post(server: Any, key: str, event: dict[str, Any]) -> None:
    response = httpx.post(
        server.url + "/api/v1/events", json={"event": event}, headers={"x-api-key": key}
    )
    assert response.status_code == 202, response.text


@pytest.fixture(scope="module")
def other_key(server: Any) -> str:
    secret, _ = KeyStore(server.data_dir / "keys.sqlite").create("wsother", ["ingest", "read"])
    return secret


def test_seed_javascript_flow_subscribes_to_every_channel(server: Any) -> None:
    with open_ws(server) as ws:
        send(ws, {"type": "Subscribe", "payload": {"channels": ["events", "metrics", "alerts"]}})
        reply = recv(ws)
        assert reply == {
            "type": "Subscribed",
            "payload": {"channels": ["alerts", "events", "metrics"]},
        }


def test_client_receives_only_its_own_projects_events(server: Any, other_key: str) -> None:
    with open_ws(server) as mine, open_ws(server, other_key) as theirs:
        subscribe(mine, "events")
        subscribe(theirs, "events")
        event = _event("ws-user-" + uuid.uuid4().hex[:6])
        _post(server, TEST_KEY, event)
        events, _ = collect_events(mine, {event["event_id"]})
        payload = next(e for e in events if e["event_id"] == event["event_id"])
        assert payload["user_id"] == event["user_id"]
        assert payload["project_id"] == "default"
        assert payload["timestamp"] == "2025-11-26T10:00:00.250000Z"
        assert payload["event_type"] == event["event_type"]
        assert payload["context"] == event["context"]
        assert [m for m in barrier(theirs) if m["type"] in ("Event", "Events")] == []

        other = _event("ws-other-user")
        _post(server, other_key, other)
        events, _ = collect_events(theirs, {other["event_id"]})
        assert {e["project_id"] for e in events} == {"wsother"}
        leaked = [e for m in barrier(mine) for e in events_of(m)]
        assert all(e["project_id"] == "default" for e in leaked)


def test_project_b_never_receives_project_a_batches(server: Any, other_key: str) -> None:
    """Bursts of both projects at once: every frame B gets holds only B's events, and all of
    them; A likewise."""
    with open_ws(server) as a_ws, open_ws(server, other_key) as b_ws:
        subscribe(a_ws, "events")
        subscribe(b_ws, "events")
        a_ids: set[str] = set()
        b_ids: set[str] = set()
        for round_ in range(3):
            a_batch = [_event(f"a-{round_}-{i}") for i in range(40)]
            b_batch = [_event(f"b-{round_}-{i}") for i in range(15)]
            for key, batch, ids in ((TEST_KEY, a_batch, a_ids), (other_key, b_batch, b_ids)):
                response = httpx.post(
                    server.url + "/api/v1/events/batch",
                    json={"events": batch},
                    headers={"x-api-key": key},
                )
                assert response.status_code == 202, response.text
                ids.update(e["event_id"] for e in batch)
        b_events, b_frames = collect_events(b_ws, b_ids)
        a_events, _ = collect_events(a_ws, a_ids)
        b_events += [e for m in barrier(b_ws) for e in events_of(m)]
        assert {e["project_id"] for e in b_events} == {"wsother"}
        assert not {e["event_id"] for e in b_events} & a_ids
        assert {e["project_id"] for e in a_events} <= {"default"}
        assert any(f["type"] == "Events" for f in b_frames)  # batched, not one per event
        for frame in b_frames:
            if frame["type"] == "Events":
                assert frame["payload"]["sampled"] == 1.0
                assert frame["payload"]["dropped"] == 0


def test_ping_pong_and_errors_keep_the_connection_open(server: Any) -> None:
    with open_ws(server) as ws:
        send(ws, {"type": "Ping", "payload": {"id": 7}})
        pong = recv(ws)
        assert pong["type"] == "Pong" and pong["payload"]["id"] == 7
        assert pong["payload"]["time"].endswith("Z")
        cases = [
            ("not json", "malformed_json"),
            ("[1, 2]", "invalid_message"),
            ({"type": "Dance"}, "unknown_message_type"),
            (
                {"type": "Subscribe", "payload": {"channels": ["events", "gossip"]}},
                "unknown_channel",
            ),
            ({"type": "Subscribe"}, "invalid_message"),
            ("x" * 70_000, "message_too_large"),
        ]
        for message, code in cases:
            send(ws, message)
            reply = recv(ws)
            assert reply["type"] == "Error", message
            assert reply["payload"]["code"] == code
            assert set(reply["payload"]) == {"code", "message", "details"}
        assert subscribe(ws)["payload"]["channels"] == []  # nothing half-applied
        send(ws, {"type": "Ping"})
        assert recv(ws)["type"] == "Pong"


def test_unsubscribe_stops_events(server: Any) -> None:
    with open_ws(server) as ws:
        subscribe(ws, "events", "alerts")
        send(ws, {"type": "Unsubscribe", "payload": {"channels": ["events"]}})
        assert recv(ws) == {"type": "Subscribed", "payload": {"channels": ["alerts"]}}
        _post(server, TEST_KEY, _event("ws-unsub"))
        assert [m for m in barrier(ws) if m["type"] in ("Event", "Events")] == []


def test_metrics_arrive_every_second(server: Any) -> None:
    with open_ws(server) as ws:
        subscribe(ws, "metrics")
        _post(server, TEST_KEY, _event("ws-metrics-user"))
        first, _ = until(ws, "Metrics", timeout=5)
        second, _ = until(ws, "Metrics", timeout=5)
        for message in (first, second):
            payload = message["payload"]
            assert {
                "timestamp",
                "events_per_second",
                "events_last_second",
                "events_last_minute",
                "active_users",
                "error_rate",
                "client_error_rate",
                "requests_per_second",
            } <= set(payload)
            assert 0.0 <= payload["error_rate"] <= 1.0
        assert second["payload"]["events_last_minute"] >= 1
        assert second["payload"]["active_users"] >= 1


@pytest.mark.parametrize(
    ("key", "headers", "code"),
    [
        ("wrong-key", None, 4401),
        (None, None, 4401),
        (None, {"x-api-key": "wrong-key"}, 4401),
    ],
)
def test_auth_failure_closes_with_4401(
    server: Any, key: str | None, headers: Any, code: int
) -> None:
    from websockets.sync.client import connect

    with connect(ws_url(server, key), additional_headers=headers) as ws:
        error = recv(ws)
        assert error["type"] == "Error" and error["payload"]["code"] in (
            "invalid_api_key",
            "missing_api_key",
        )
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code


def test_key_in_header_works_and_scope_is_checked(server: Any) -> None:
    from websockets.sync.client import connect

    with connect(ws_url(server, None), additional_headers={"x-api-key": TEST_KEY}) as ws:
        assert subscribe(ws, "alerts")["payload"]["channels"] == ["alerts"]
    ingest_only, _ = KeyStore(server.data_dir / "keys.sqlite").create("default", ["ingest"])
    with open_ws(server, ingest_only) as ws:
        assert recv(ws)["payload"]["code"] == "missing_scope"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
