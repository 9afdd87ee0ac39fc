"""Ids that ingest accepts are reachable in URL paths once percent-encoded (docs/users.md).

Any string of 1-256 characters is a valid ``user_id`` / ``device_id``, including ``/``, ``%``,
``?``, ``#``, spaces, ``..`` and ``segment``. A client percent-encodes the id as one path
segment (``quote(id, safe="")``; ``.`` and ``..`` as ``%2E``, since clients drop dot segments)
and the server must hand the handler exactly that id, decoded once: ``a%2Fb`` is ``a/b``,
``a%252Fb`` is ``a%2Fb``, and ``a%2Fsegment`` is the user ``a/segment``, never user ``a``'s
segment. A real server on its own port and data directory; nothing is mocked.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from avila.testing import ServerProcess
from tests.api.api_data import assert_error

KEY = "test-key-all-scopes"
I40 = "/api/v1/industry40"
NOW = datetime.now(UTC).replace(microsecond=0)

#: Ids ingest accepts that a naive URL would mangle, one test each.
ODD_IDS = [
    "a/b",
    "a/segment",  # decoded-path routing made this user "a"'s segment
    "a/sessions",
    "a/predictions",
    "org/team/user 7",
    "/leading",
    "trailing/",
    "a//b",
    "/",
    "100%",
    "a%2Fb",  # a literal percent sequence: sent as a%252Fb, must not become a/b
    "a%252Fb",
    "what?x=1&y=2",
    "tag#frag",
    "with space",
    "plus+sign",
    "José/São Paulo/日本 😀",
    ".",
    "..",
    "../../etc/passwd",
    "a/../b",
    "segment",
    "sessions",
    "predictions",
    "x" * 120 + "/" + "é" * 135,  # 256 characters, ~1.6 KB once encoded
]


def enc(value: str) -> str:
    """One path segment: every reserved character percent-encoded, dots too (a client would
    otherwise remove ``.`` and ``..`` segments before sending)."""
    return quote(value, safe="").replace(".", "%2E")


def _event(user: str, etype: str = "PageView", **data: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "user_id": user,
        "session_id": f"s-{uuid.uuid4().hex[:8]}",
        "timestamp": (NOW - timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
        "event_type": {"type": etype, "data": data or {"url": "/"}},
    }


def _ingest(client: httpx.Client, events: list[dict[str, Any]]) -> None:
    response = client.post("/api/v1/events/batch", json={"events": events})
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(events), response.text


def _user_events(user: str) -> list[dict[str, Any]]:
    return [
        _event(user, url="/"),
        _event(user, "Purchase", order_id=f"o-{uuid.uuid4().hex[:6]}", revenue=10.0),
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Its own server: the ids here are exact (``..``, ``segment``), not made unique."""
    data: Path = tmp_path_factory.mktemp("ids-in-paths")
    proc = ServerProcess(data, env={"API_KEYS": KEY, "RATE_LIMIT_PER_MINUTE": "0"})
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"x-api-key": KEY}, timeout=30) as c:
        # The neighbours an encoded slash used to route to instead: "a" and "a/b"'s first part.
        _ingest(c, [_event(n) for n in ("a", "a", "a", "org", "x" * 120)])
        yield c


def _total_events(client: httpx.Client) -> int:
    params = {
        "start_time": (NOW - timedelta(days=2)).isoformat(),
        "end_time": (NOW + timedelta(days=1)).isoformat(),
    }
    response = client.get("/api/v1/analytics/overview", params=params)
    assert response.status_code == 200, response.text
    total: int = response.json()["total_events"]
    return total


@pytest.mark.parametrize("user", ODD_IDS)
def test_every_user_route_reaches_the_id_and_erase_removes_its_events(
    client: httpx.Client, user: str
) -> None:
    _ingest(client, _user_events(user))
    base = f"/api/v1/users/{enc(user)}"

    profile = client.get(base)
    assert profile.status_code == 200, profile.text
    assert profile.json()["user_id"] == user
    assert profile.json()["total_events"] == 2

    segment = client.get(f"{base}/segment")
    assert segment.status_code == 200, segment.text
    assert segment.json()["user_id"] == user
    assert segment.json()["frequency"] == 1

    sessions = client.get(f"{base}/sessions")
    assert sessions.status_code == 200, sessions.text
    assert sessions.json()["user_id"] == user
    assert sessions.json()["sessions"] == 2

    predictions = client.get(f"{base}/predictions")
    assert predictions.status_code == 200, predictions.text
    assert predictions.json()["user_id"] == user

    before = _total_events(client)
    erased = client.delete(base)
    assert erased.status_code == 200, erased.text
    assert erased.json() == {"deleted_events": 2}
    # Gone from the store: every route of the id is 404 and the project lost exactly 2 events.
    for suffix in ("", "/segment", "/sessions", "/predictions"):
        assert_error(client.get(f"{base}{suffix}"), 404, "user_not_found")
    assert _total_events(client) == before - 2
    assert client.delete(base).json() == {"deleted_events": 0}


def test_an_encoded_slash_never_reaches_another_user(client: httpx.Client) -> None:
    """``a%2Fsegment`` names the user ``a/segment``; user ``a`` keeps its events."""
    assert_error(client.get("/api/v1/users/a%2Fsegment"), 404, "user_not_found")
    assert_error(client.get("/api/v1/users/a%2Fsessions"), 404, "user_not_found")
    assert_error(client.get("/api/v1/users/a%2Fpredictions"), 404, "user_not_found")
    erased = client.delete("/api/v1/users/a%2Fsegment")
    assert erased.status_code == 200, erased.text
    assert erased.json() == {"deleted_events": 0}
    assert client.get("/api/v1/users/a").json()["total_events"] == 3


def test_percent_decoding_happens_exactly_once(client: httpx.Client) -> None:
    literal, slashed = "p%2Fq", "p/q"
    _ingest(client, [_event(literal), _event(slashed), _event(slashed)])
    assert client.get("/api/v1/users/p%252Fq").json()["total_events"] == 1
    assert client.get("/api/v1/users/p%2Fq").json()["total_events"] == 2
    assert client.get("/api/v1/users/p%2fq").json()["user_id"] == slashed  # either hex case
    # Unencoded reserved characters keep their URL meaning: '?' starts the query.
    assert client.get("/api/v1/users/p%2Fq?recent=1").json()["user_id"] == slashed
    assert client.delete("/api/v1/users/p%2Fq").json() == {"deleted_events": 2}
    assert client.get("/api/v1/users/p%252Fq").json()["total_events"] == 1


def test_existing_urls_are_unchanged(client: httpx.Client) -> None:
    assert client.get("/api/v1/users/a").json()["user_id"] == "a"
    assert client.get("/api/v1/users/a/segment").json()["user_id"] == "a"
    assert client.get("/api/v1/users/a/sessions").json()["user_id"] == "a"
    # a real '/' is still a separator: no such route
    assert_error(client.get("/api/v1/users/a/b/c"), 404, "not_found")
    assert_error(client.get("/api/v1/users/a%2Fb/c"), 404, "not_found")
    # the other methods of the path are still listed
    allow = client.options("/api/v1/users/a%2Fb").headers.get("allow", "")
    assert {"GET", "DELETE"} <= set(allow.replace(" ", "").split(","))


DEVICE_IDS = ["plant/line 1/press#2", "sensor?id=7", "50%", "..", "Ünïcode/機械"]


@pytest.mark.parametrize("device", DEVICE_IDS)
def test_device_and_twin_routes_reach_the_id(client: httpx.Client, device: str) -> None:
    readings = [
        {
            "device_id": device,
            "device_type": "press/hydraulic",
            "timestamp": (NOW - timedelta(minutes=10 - i)).isoformat().replace("+00:00", "Z"),
            "metrics": {"temperature": 70.0 + i},
        }
        for i in range(4)
    ]
    response = client.post(f"{I40}/iot/ingest", json={"readings": readings})
    assert response.status_code == 202, response.text
    path = enc(device)

    twin = client.get(f"{I40}/twin/{path}")
    assert twin.status_code == 200, twin.text
    assert twin.json()["device_id"] == device

    updated = client.put(f"{I40}/devices/{path}", json={"attributes": {"line": "L/1"}})
    assert updated.status_code == 200, updated.text
    assert updated.json()["device_id"] == device

    desired = client.put(f"{I40}/twin/{path}/desired", json={"setpoint": 5})
    assert desired.status_code == 200, desired.text
    assert desired.json()["device_id"] == device
    assert client.get(f"{I40}/twin/{path}").json()["desired"] == {"setpoint": 5}

    history = client.get(f"{I40}/twin/{path}/history", params={"resolution": "raw"})
    assert history.status_code == 200, history.text
    assert history.json()["device_id"] == device

    forecast = client.get(f"{I40}/twin/{path}/forecast", params={"metric": "temperature"})
    assert forecast.status_code == 200, forecast.text


def test_unknown_encoded_device_is_device_not_found(client: httpx.Client) -> None:
    assert_error(client.get(f"{I40}/twin/{enc('no/such/device')}"), 404, "device_not_found")


def test_alarm_rules_of_a_device_type_with_a_slash(client: httpx.Client) -> None:
    rules = {"rules": [{"metric": "temperature", "max": 100.0}]}
    response = client.put(f"{I40}/alarms/rules/{enc('press/hydraulic')}", json=rules)
    assert response.status_code == 200, response.text
    assert response.json()["device_type"] == "press/hydraulic"
    listed = client.get(f"{I40}/alarms/rules").json()["rules"]
    assert "press/hydraulic" in listed


def test_product_ids_with_a_slash_reach_also_bought(client: httpx.Client) -> None:
    # No model trained here: reaching the handler is the model's 404, not an unmatched route.
    response = client.get(f"/api/v1/ml/products/{enc('sku/42')}/also-bought")
    assert_error(response, 404, "model_not_trained")


def test_alert_rule_routes_answer_for_any_encoded_id(client: httpx.Client) -> None:
    for odd in ("a/b", "..", "segment", "100%", "x?y#z"):
        assert_error(client.get(f"/api/v1/alerts/rules/{enc(odd)}"), 404, "alert_rule_not_found")
        assert_error(client.delete(f"/api/v1/alerts/rules/{enc(odd)}"), 404, "alert_rule_not_found")


ID_ROUTES = [
    ("GET", "/api/v1/users/{}"),
    ("GET", "/api/v1/users/{}/segment"),
    ("GET", "/api/v1/users/{}/sessions"),
    ("GET", "/api/v1/users/{}/predictions"),
    ("DELETE", "/api/v1/users/{}"),
    ("GET", "/api/v1/ml/products/{}/also-bought"),
    ("GET", I40 + "/twin/{}"),
    ("GET", I40 + "/twin/{}/history"),
    ("GET", "/api/v1/alerts/rules/{}"),
    ("DELETE", "/api/v1/alerts/rules/{}"),
    ("DELETE", "/api/v1/keys/{}"),
    ("GET", "/docs/assets/{}"),
    ("GET", "/ui/{}"),
]
#: Raw segments, sent as written: invalid UTF-8, NUL, lone '%', dot segments, 400 slashes.
RAW_SEGMENTS = ["%FF%2F", "%00%2F%00", "%%2F%", "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "%2F" * 400]


@pytest.mark.parametrize(("method", "template"), ID_ROUTES)
def test_odd_encodings_are_answered_never_a_server_error(
    client: httpx.Client, method: str, template: str
) -> None:
    for segment in RAW_SEGMENTS:
        response = client.request(method, template.format(segment))
        # 200: an erase of nobody ({"deleted_events": 0}); else the route's own 404
        assert response.status_code in (200, 404), (segment, response.text)
