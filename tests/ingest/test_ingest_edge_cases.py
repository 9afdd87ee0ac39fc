"""Bad and unusual input on the ingest routes, through a real server process.

The standard (docs/ingestion.md, docs/segment.md, docs/api.md): bad input gets a clear 4xx
naming the field, valid events of the same batch are stored, a retry is a duplicate, and
nothing accepted ever blocks the loader. Each scenario's expected answer comes from the docs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from avila.testing import ServerProcess
from tests.conftest import TEST_KEY

DEEP = "[" * 5000 + "]" * 5000  # valid JSON, deeper than any parser's recursion limit


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # CORS on: a request with an Origin header takes the framework's (slow) ingest path.
    proc = ServerProcess(
        Path(tmp_path_factory.mktemp("ingest-edge")),
        env={"API_KEYS": TEST_KEY, "RATE_LIMIT_PER_MINUTE": "0", "ENABLE_CORS": "true"},
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def api(srv: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, headers={"x-api-key": TEST_KEY}, timeout=60) as c:
        yield c


@pytest.fixture
def seg(srv: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, auth=(TEST_KEY, ""), timeout=60) as c:
        yield c


def _uid() -> str:
    return f"edge-{uuid.uuid4().hex[:10]}"


def _event(user: str, **fields: Any) -> dict[str, Any]:
    return {"user_id": user, "event_type": {"type": "Custom", "data": {"name": "x"}}, **fields}


def _post(client: httpx.Client, path: str, body: str | bytes, **kw: Any) -> httpx.Response:
    return client.post(path, content=body.encode() if isinstance(body, str) else body, **kw)


def _error(response: httpx.Response, status: int, code: str, path: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["details"][0]["path"] == path, error
    return dict(error)


def _exported(client: httpx.Client, user: str) -> list[dict[str, Any]]:
    r = client.post("/api/v1/export", json={"format": "ndjson", "filters": {"user_ids": [user]}})
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines() if line.strip()]


# --- bugs -------------------------------------------------------------------------------------


def test_timestamp_before_year_one_in_utc_is_rejected_and_does_not_block_the_loader(
    api: httpx.Client,
) -> None:
    """0001-01-01T00:00:00+05:45 is 0000-12-31 in UTC: it used to get a 202 and then fail every
    loader round it was in (rollups cannot hold the date), so nothing after it was ever loaded."""
    user = _uid()
    early = _event(user, timestamp="0001-01-01T00:00:00+05:45")
    r = _post(api, "/api/v1/events", json.dumps({"event": early}))
    _error(r, 422, "invalid_event", "event.timestamp")

    purchase = {"type": "Purchase", "data": {"order_id": "o-1", "revenue": 5}}
    batch = [
        _event(user, event_id=f"{user}-a", event_type=purchase),
        early,
        _event(user, event_id=f"{user}-b", timestamp="0001-01-01T00:00:00Z"),
    ]
    r = _post(api, "/api/v1/events/batch", json.dumps({"events": batch}))
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 2
    assert [(x["index"], x["path"]) for x in body["rejected"]] == [(1, "events[1].timestamp")]
    # The accepted events are loaded (a read waits for the loader to catch up, for 5 s at most).
    assert sorted(e["event_id"] for e in _exported(api, user)) == [f"{user}-a", f"{user}-b"]


@pytest.mark.parametrize("route", ["fast", "framework"])
def test_far_future_timestamp_with_a_negative_offset_is_timestamp_in_future(
    api: httpx.Client, route: str
) -> None:
    """9999-12-31T23:59:59-05:00 is past year 9999 in UTC: it used to be a 500."""
    headers = {"origin": "http://example.com"} if route == "framework" else {}
    user = _uid()
    late = _event(user, timestamp="9999-12-31T23:59:59-05:00")
    r = _post(api, "/api/v1/events", json.dumps({"event": late}), headers=headers)
    _error(r, 422, "timestamp_in_future", "event.timestamp")
    ok = _event(user, event_id=f"{user}-ok")
    r = _post(api, "/api/v1/events/batch", json.dumps({"events": [ok, late]}), headers=headers)
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 1
    assert [(x["index"], x["code"], x["path"]) for x in r.json()["rejected"]] == [
        (1, "timestamp_in_future", "events[1].timestamp")
    ]


@pytest.mark.parametrize("route", ["fast", "framework"])
@pytest.mark.parametrize("where", ["metadata", "context", "data"])
def test_deeply_nested_json_is_a_422_not_a_500(api: httpx.Client, route: str, where: str) -> None:
    headers = {"origin": "http://example.com"} if route == "framework" else {}
    data = (
        '{"name": "x", "properties": {"d": ' + DEEP + "}}" if where == "data" else '{"name": "x"}'
    )
    extra = f', "{where}": {{"d": {DEEP}}}' if where != "data" else ""
    event = f'{{"user_id": "{_uid()}", "event_type": {{"type": "Custom", "data": {data}}}{extra}}}'
    r = _post(api, "/api/v1/events", '{"event": ' + event + "}", headers=headers)
    error = _error(r, 422, "validation_failed", "")
    assert "nest" in error["message"]
    # In a batch the deep event is rejected on its own (see the next test), not the batch.
    r = _post(api, "/api/v1/events/batch", '{"events": [' + event + "]}", headers=headers)
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 0
    assert [(x["path"], "nest" in x["message"]) for x in r.json()["rejected"]] == [
        ("events[0]", True)
    ]


@pytest.mark.parametrize("route", ["fast", "framework"])
def test_an_unreadable_event_does_not_cost_the_valid_ones_beside_it(
    api: httpx.Client, route: str
) -> None:
    """A lone surrogate escape or nesting past the decoder's limit made msgspec refuse the whole
    batch body (400/422), losing every valid event sent with it."""
    headers = {"origin": "http://example.com"} if route == "framework" else {}
    user = _uid()
    good = [
        json.dumps(_event(user, event_id=f"{user}-{i}", metadata={"s": "[,]}"})) for i in (1, 2)
    ]
    surrogate = json.dumps(_event(user, event_id=f"{user}-bad")).replace(user, "\\ud800", 1)
    deep = json.dumps(_event(user, event_id=f"{user}-deep"))[:-1] + f', "metadata": {DEEP}}}'
    body = '{"events": [' + ", ".join([good[0], surrogate, deep, good[1]]) + "]}"
    r = _post(api, "/api/v1/events/batch", body, headers=headers)
    assert r.status_code == 202, r.text
    answer = r.json()
    assert answer["accepted"] == 2
    assert [(x["index"], x["path"]) for x in answer["rejected"]] == [
        (1, "events[1]"),
        (2, "events[2]"),
    ]
    assert "nest" in answer["rejected"][1]["message"]
    stored = sorted(e["event_id"] for e in _exported(api, user))
    assert stored == [f"{user}-1", f"{user}-2"]
    # A body that is not the documented shape, or is cut short, is still refused whole.
    for broken in (
        body[:-2],
        body[:-1] + ', "x": 1}',
        body.replace('"s": "[,]}"', '"s": "[,]}', 1),
    ):
        r = _post(api, "/api/v1/events/batch", broken, headers=headers)
        assert r.status_code in (400, 422), (broken[-40:], r.text)


@pytest.mark.parametrize(
    ("message", "path"),
    [
        ({"timestamp": "0001-01-01T00:00:00+05:45"}, "timestamp"),
        ({"timestamp": "9999-12-31T23:59:59-05:00"}, "timestamp"),
        # receivedAt - (sentAt - timestamp) lands ~10,000 years before year 1
        ({"timestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-12-31T00:00:00Z"}, "timestamp"),
        ({"timestamp": "9999-12-31T00:00:00Z", "sentAt": "0001-01-01T00:00:00Z"}, "timestamp"),
    ],
)
def test_segment_out_of_range_times_are_400_not_500(
    seg: httpx.Client, message: dict[str, str], path: str
) -> None:
    user = _uid()
    track = {"userId": user, "event": "Clicked", **message}
    r = seg.post("/v1/track", json=track)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] in ("invalid_timestamp", "timestamp_in_future"), error
    assert error["details"][0]["path"] == path

    # In a batch only that message is rejected; the others are stored.
    good = {"type": "track", "userId": user, "event": "Clicked", "messageId": f"{user}-m"}
    r = seg.post("/v1/batch", json={"batch": [good, {"type": "track", **track}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 1
    assert [(x["index"], x["path"]) for x in body["rejected"]] == [(1, f"batch[1].{path}")]


def test_segment_deeply_nested_json_is_400_not_500(seg: httpx.Client) -> None:
    body = f'{{"userId": "{_uid()}", "event": "x", "properties": {{"d": {DEEP}}}}}'
    r = _post(seg, "/v1/track", body)
    assert r.status_code == 400, r.text
    assert "nest" in r.json()["error"]["message"]
    r = _post(seg, "/v1/batch", '{"batch": [' + body + "]}")
    assert r.status_code == 400, r.text
    assert "nest" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"messageId": "m" * 300}, "messageId"),
        ({"userId": "u" * 300}, "userId"),
        ({"userId": None, "anonymousId": "a" * 300}, "anonymousId"),
        ({"event": "e" * 300}, "event"),
        ({"context": {"sessionId": "s" * 300}}, "context.sessionId"),
    ],
)
def test_segment_rejections_name_the_segment_field(
    seg: httpx.Client, fields: dict[str, Any], path: str
) -> None:
    """Paths name the field the client sent (docs/segment.md: ``batch[3].userId``), not the
    field of the Avila event it maps to (``event_id``, ``user_id``, ``event_type.data.name``)."""
    user = _uid()
    message = {"userId": user, "event": "Clicked", **fields}
    message = {k: v for k, v in message.items() if v is not None}
    r = seg.post("/v1/track", json=message)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["details"][0]["path"] == path
    good = {"type": "track", "userId": user, "event": "Clicked"}
    r = seg.post("/v1/batch", json={"batch": [good, {"type": "track", **message}]})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1
    assert [x["path"] for x in r.json()["rejected"]] == [f"batch[1].{path}"]


# --- areas checked without a bug (kept as regression tests) -----------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code", "path"),
    [
        ("[]", 422, "validation_failed", ""),
        ("42", 422, "validation_failed", ""),
        ("{}", 422, "validation_failed", "event"),
        ('{"event": 5}', 422, "invalid_event", "event"),
        ('{"event": {"user_id": "u", "event_type": {"type": "Purchase", "data": '
         '{"order_id": "o", "revenue": 1e309}}}}', 422, "invalid_event",
         "event.event_type.data.revenue"),
        ('{"event": {"user_id": "u", "event_type": {"type": "AddToCart", "data": '
         '{"product_id": "p", "quantity": 18446744073709551617}}}}', 422, "invalid_event",
         "event.event_type.data.quantity"),
        ('{"event": {"user_id": "u", "timestamp": "2023-02-29T00:00:00Z", '
         '"event_type": {"type": "Login"}}}', 422, "invalid_event", "event.timestamp"),
        ('{"event": {"user_id": "' + "u" * 257 + '", "event_type": {"type": "Login"}}}', 422,
         "invalid_event", "event.user_id"),
        ('{"event": {"user_id": "u", "event_type": {"type": "pageview"}}}', 422,
         "invalid_event", "event.event_type.type"),
    ],
)  # fmt: skip
def test_single_event_errors_name_the_field(
    api: httpx.Client, body: str, status: int, code: str, path: str
) -> None:
    _error(_post(api, "/api/v1/events", body), status, code, path)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_tokens_are_malformed_json(api: httpx.Client, token: str) -> None:
    body = '{"event": {"user_id": "u", "event_type": {"type": "Purchase", "data": '
    body += '{"order_id": "o", "revenue": ' + token + "}}}}"
    r = _post(api, "/api/v1/events", body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json", r.text


def test_unicode_timestamps_and_duplicates_round_trip(api: httpx.Client) -> None:
    user = _uid() + "-😀-עברית\u202e"
    text = "שלום 😀 a\u0000b"
    events = [
        _event(user, event_id=f"{user}-1", timestamp="2024-02-29T12:00:00+05:45",
               event_type={"type": "Custom", "data": {"name": text}}),
        _event(user, event_id=f"{user}-2", timestamp="2024-03-01T12:00:00.123456789Z",
               metadata={"big": 123456789012345678901234567890, "neg0": -0.0}),
        _event(user, event_id=f"{user}-3", timestamp="2024-03-01T12:00:00"),
        _event(user, event_id=f"{user}-1"),  # within the batch: a duplicate
    ]  # fmt: skip
    r = _post(api, "/api/v1/events/batch", json.dumps({"events": events}, ensure_ascii=False))
    assert r.status_code == 202, r.text
    assert (r.json()["accepted"], r.json()["duplicates"], r.json()["rejected"]) == (3, 1, [])
    # across batches and on the single route: duplicates, stored once
    r = _post(api, "/api/v1/events/batch", json.dumps({"events": events[:1]}))
    assert (r.json()["accepted"], r.json()["duplicates"]) == (0, 1)
    r = _post(api, "/api/v1/events", json.dumps({"event": events[1]}))
    assert (r.status_code, r.json()["accepted"], r.json()["duplicates"]) == (202, 0, 1)

    stored = {e["event_id"]: e for e in _exported(api, user)}
    assert sorted(stored) == [f"{user}-1", f"{user}-2", f"{user}-3"]
    first = stored[f"{user}-1"]
    assert first["user_id"] == user
    assert first["event_name"] == text
    assert first["timestamp"].startswith("2024-02-29T06:15:00")
    assert stored[f"{user}-3"]["timestamp"].startswith("2024-03-01T12:00:00")


def test_batch_limits(api: httpx.Client) -> None:
    _error(_post(api, "/api/v1/events/batch", '{"events": []}'), 422, "validation_failed", "events")
    user = _uid()
    events = [_event(user) for _ in range(10_000)]
    r = _post(api, "/api/v1/events/batch", json.dumps({"events": events}))
    assert r.status_code == 202 and r.json()["accepted"] == 10_000, r.text[:300]
    r = _post(api, "/api/v1/events/batch", json.dumps({"events": [*events, _event(user)]}))
    assert r.status_code == 413 and r.json()["error"]["code"] == "batch_too_large", r.text[:300]


def test_segment_message_id_is_idempotent(seg: httpx.Client) -> None:
    user = _uid()
    track = {"userId": user, "event": "Clicked", "messageId": f"{user}-m"}
    assert seg.post("/v1/track", json=track).json()["accepted"] == 1
    again = seg.post("/v1/track", json=track).json()
    assert (again["accepted"], again["duplicates"]) == (0, 1)
    batch = seg.post("/v1/batch", json={"batch": [{"type": "track", **track}] * 2}).json()
    assert (batch["accepted"], batch["duplicates"]) == (0, 2)
    r = seg.post("/v1/track", json={"event": "Clicked"})
    assert r.status_code == 400 and r.json()["error"]["details"][0]["path"] == "userId"
