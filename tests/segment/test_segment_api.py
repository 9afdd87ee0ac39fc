"""POST /v1/* against a real server: auth, Segment's error statuses, and what gets stored."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from .live import LiveServer

Rows = Callable[[Any, str], list[dict]]


def basic(key: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def post(
    live: LiveServer, path: str, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(live.url + path, content=content, headers=headers or {}, timeout=30)


TRACK = {"userId": "auth-user", "event": "Auth Checked"}


@pytest.mark.parametrize(
    ("how", "status", "code"),
    [
        ("basic_all_scopes", 200, None),
        ("basic_ingest_only", 200, None),
        ("write_key_in_body", 200, None),
        ("x_api_key_header", 200, None),
        ("none", 401, "missing_api_key"),
        ("unknown", 401, "invalid_api_key"),
        ("read_only_key", 403, "missing_scope"),
    ],
)
def test_write_key_auth(
    shared_live_server: LiveServer, how: str, status: int, code: str | None
) -> None:
    live = shared_live_server
    body, headers = dict(TRACK), {}
    if how == "basic_all_scopes":
        headers = basic(live.key)
    elif how == "basic_ingest_only":
        headers = basic(live.ingest_key)
    elif how == "write_key_in_body":
        body["writeKey"] = live.ingest_key
    elif how == "x_api_key_header":
        headers = {"x-api-key": live.ingest_key}
    elif how == "unknown":
        headers = basic("not-a-key")
    elif how == "read_only_key":
        body["writeKey"] = live.read_key
    response = post(live, "/v1/track", body, headers)
    assert response.status_code == status, response.text
    if code is None:
        assert response.json()["success"] is True
    else:
        assert response.json()["error"]["code"] == code


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code


def test_invalid_json_and_oversize_are_400(shared_live_server: LiveServer) -> None:
    live = shared_live_server
    auth = basic(live.ingest_key)
    _error(post(live, "/v1/track", b'{"userId": ', auth), 400, "malformed_json")
    _error(post(live, "/v1/batch", b"[1, 2]", auth), 400, "bad_request")
    big = {**TRACK, "properties": {"blob": "x" * (32 * 1024)}}
    _error(post(live, "/v1/track", big, auth), 400, "payload_too_large")
    # 500 KB per batch: 17 messages of ~31 KB each are each fine but too many together.
    part = {**TRACK, "properties": {"blob": "x" * (31 * 1024)}}
    _error(post(live, "/v1/batch", {"batch": [part] * 17}, auth), 400, "payload_too_large")
    # The limit holds for the decompressed body too (a gzip bomb is refused, not inflated).
    bomb = gzip.compress(json.dumps({"batch": [part] * 17}).encode())
    assert len(bomb) < 10_000
    _error(
        post(live, "/v1/batch", bomb, {**auth, "content-encoding": "gzip"}),
        400,
        "payload_too_large",
    )


def test_single_call_that_cannot_become_an_event_is_400(shared_live_server: LiveServer) -> None:
    live = shared_live_server
    auth = basic(live.ingest_key)
    response = post(live, "/v1/track", {"event": "No User"}, auth)
    _error(response, 400, "missing_user")
    assert response.json()["error"]["details"] == [{"path": "userId"}]
    # Our own validator's limits still apply (custom event names are at most 256 characters).
    _error(post(live, "/v1/track", {"userId": "u", "event": "n" * 300}, auth), 400, "invalid_event")


def test_batch_keeps_valid_messages_and_lists_rejected(shared_live_server: LiveServer) -> None:
    live = shared_live_server
    batch = [
        {"type": "track", "userId": "b1", "event": "Kept"},
        {"type": "track", "event": "No User"},
        {"type": "wat", "userId": "b1"},
        {"type": "track", "userId": "b1", "event": "x" * 300},
        "not an object",
        {"type": "page", "userId": "b1", "properties": {"url": "https://a.example/"}},
    ]
    response = post(live, "/v1/batch", {"batch": batch, "writeKey": live.ingest_key})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["success"], body["accepted"], body["duplicates"]) == (True, 2, 0)
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [
        (1, "missing_user"),
        (2, "invalid_message_type"),
        (3, "invalid_event"),
        (4, "invalid_message"),
    ]
    assert body["rejected"][0]["path"] == "batch[1].userId"
    assert body["rejected"][2]["path"] == "batch[3].event"  # the field the client sent


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_messages_are_stored_mapped_deduplicated_skew_corrected_and_stitched(
    live_server: LiveServer, rows: Rows
) -> None:
    live = live_server
    auth = basic(live.ingest_key)
    order = {
        "type": "track",
        "messageId": "msg-order-1",
        "anonymousId": "anon-1",
        "userId": "user-1",
        "event": "Order Completed",
        "properties": {
            "order_id": "o-1",
            "revenue": 30,
            "currency": "EUR",
            "products": [{"product_id": "p-1", "quantity": 3, "price": 10}],
        },
    }
    assert post(live, "/v1/batch", {"batch": [order]}, auth).json()["accepted"] == 1
    # messageId is the idempotency key: a retry of the same message is not a second event.
    again = post(live, "/v1/track", order, auth).json()
    assert (again["accepted"], again["duplicates"]) == (0, 1)

    # A client clock 3 h fast: timestamp and sentAt are both shifted; the stored time is
    # receivedAt - (sentAt - timestamp), i.e. 45 s before the server received the call.
    fast = datetime.now(UTC) + timedelta(hours=3)
    before = datetime.now(UTC).replace(tzinfo=None)
    skewed = {
        "messageId": "msg-skew",
        "anonymousId": "anon-1",
        "event": "Viewed Pricing",
        "timestamp": _iso(fast - timedelta(seconds=45)),
        "sentAt": _iso(fast),
        "context": {
            "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
            "locale": "en-US",
            "ip": "192.0.2.10",
            "page": {"referrer": "https://ref.example/"},
        },
    }
    assert post(live, "/v1/track", skewed, auth).status_code == 200
    after = datetime.now(UTC).replace(tzinfo=None)

    # analytics.js style: one-letter path, text/plain body, write key in the body.
    page = {
        "messageId": "msg-page",
        "anonymousId": "anon-1",
        "writeKey": live.ingest_key,
        "properties": {"url": "https://shop.example/pricing", "title": "Pricing"},
    }
    assert post(live, "/v1/p", page, {"content-type": "text/plain"}).status_code == 200

    identify = {
        "messageId": "msg-identify",
        "anonymousId": "anon-1",
        "userId": "user-1",
        "traits": {"plan": "pro"},
    }
    assert post(live, "/v1/identify", identify, auth).status_code == 200
    alias = {"messageId": "msg-alias", "previousId": "legacy-7", "userId": "user-1"}
    assert post(live, "/v1/alias", alias, auth).status_code == 200
    legacy = {"messageId": "msg-legacy", "userId": "legacy-7", "event": "Old App Opened"}
    assert post(live, "/v1/track", legacy, auth).status_code == 200

    conn = live.stored()
    stored = {r["event_id"]: r for r in rows(conn, "SELECT * FROM events")}
    assert set(stored) == {
        "msg-order-1",
        "msg-skew",
        "msg-page",
        "msg-identify",
        "msg-alias",
        "msg-legacy",
    }
    purchase = stored["msg-order-1"]
    assert (
        purchase["event_type"],
        purchase["order_id"],
        purchase["revenue"],
        purchase["currency"],
    ) == ("purchase", "o-1", 30.0, "EUR")
    assert purchase["user_id"] == "user-1"

    skew = stored["msg-skew"]
    assert before - timedelta(seconds=45) <= skew["ts"] <= after - timedelta(seconds=45)
    assert (skew["user_id"], skew["event_name"], skew["referrer"]) == (
        "anon-1",
        "Viewed Pricing",
        "https://ref.example/",
    )
    assert (skew["browser"], skew["os"]) == ("Safari", "macOS")
    assert json.loads(skew["context"])["locale"] == "en-US"

    assert (stored["msg-page"]["event_type"], stored["msg-page"]["url"]) == (
        "page_view",
        "https://shop.example/pricing",
    )
    assert stored["msg-identify"]["event_name"] == "$identify"

    links = rows(
        conn, "SELECT anonymous_id, user_id, source, event_id FROM identities ORDER BY event_id"
    )
    assert links == [
        {
            "anonymous_id": "legacy-7",
            "user_id": "user-1",
            "source": "alias",
            "event_id": "msg-alias",
        },
        {
            "anonymous_id": "anon-1",
            "user_id": "user-1",
            "source": "identify",
            "event_id": "msg-identify",
        },
    ]
    # Stitched: every event, anonymous or under the old id, resolves to one person.
    resolved = rows(conn, "SELECT DISTINCT user_id FROM events_resolved")
    assert resolved == [{"user_id": "user-1"}]
    conn.close()


def test_a_value_msgspec_cannot_read_is_named_and_costs_only_its_message(
    shared_live_server: LiveServer,
) -> None:
    """1e309 and a lone surrogate escape made msgspec refuse the whole body: a single call got
    400 with no path (or "Input data was truncated"), and a batch lost every message in it."""
    live = shared_live_server
    auth = basic(live.ingest_key)
    for value, reason in ((b"1e309", "number out of range"), (b'"\\ud800"', "lone UTF-16")):
        single = b'{"userId": "u", "event": "x", "properties": {"a": [1, ' + value + b"]}}"
        response = post(live, "/v1/track", single, auth)
        _error(response, 400, "invalid_message")
        (detail,) = response.json()["error"]["details"]
        assert detail["path"] == "properties.a[1]" and reason in detail["message"]

        good = b'{"type": "track", "userId": "ok", "event": "Kept"}'
        bad = b'{"type": "track", "userId": "u", "event": "x", "properties": {"k": ' + value + b"}}"
        body = (
            b'{"sentAt": "2026-01-01T00:00:00Z", "batch": [' + b", ".join([good, bad, good]) + b"]}"
        )
        response = post(live, "/v1/batch", body, auth)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["accepted"] + answer["duplicates"] == 2
        assert [(r["index"], r["path"]) for r in answer["rejected"]] == [
            (1, "batch[1].properties.k")
        ]
        assert reason in answer["rejected"][0]["message"]
    # Outside the messages (or not JSON at all) the body is still refused whole.
    _error(post(live, "/v1/batch", b'{"sentAt": 1e309, "batch": []}', auth), 400, "invalid_message")
    _error(post(live, "/v1/batch", b'{"batch": [1e309', auth), 400, "malformed_json")
