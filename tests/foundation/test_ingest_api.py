"""Ingestion over HTTP against a real server: acceptance, partial acceptance, idempotency and
every 4xx path with the one error shape."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.foundation.helpers import assert_error, page_view


def test_batch_partial_acceptance_keeps_valid_events(client: httpx.Client) -> None:
    good1, good2 = page_view(), page_view(user="ü-ser ✓")
    bad_type = page_view() | {"event_type": {"type": "Teleport"}}
    future = page_view() | {"timestamp": "2999-01-01T00:00:00Z"}
    response = client.post(
        "/api/v1/events/batch", json={"events": [good1, bad_type, good2, future]}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 2 and body["duplicates"] == 0
    assert body["event_ids"] == [good1["event_id"], good2["event_id"]]
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [
        (1, "invalid_event"),
        (3, "timestamp_in_future"),
    ]
    assert body["rejected"][0]["path"] == "events[1].event_type.type"
    again = client.post("/api/v1/events/batch", json={"events": [good1, good2]}).json()
    assert again["accepted"] == 0 and again["duplicates"] == 2


def test_duplicates_inside_one_batch_count_once(client: httpx.Client) -> None:
    event = page_view()
    body = client.post("/api/v1/events/batch", json={"events": [event, event, event]}).json()
    assert body["accepted"] == 1 and body["duplicates"] == 2


def test_missing_event_id_gets_a_server_uuid(client: httpx.Client) -> None:
    event = page_view()
    del event["event_id"]
    body = client.post("/api/v1/events", json={"event": event}).json()
    assert body["accepted"] == 1 and len(body["event_ids"][0]) == 36


def test_bearer_authorization_is_accepted(server, client: httpx.Client) -> None:  # noqa: ANN001
    response = httpx.post(
        server.url + "/api/v1/events",
        json={"event": page_view()},
        headers={"Authorization": f"Bearer {client.headers['x-api-key']}"},
    )
    assert response.status_code == 202


def test_malformed_json_is_400(client: httpx.Client) -> None:
    response = client.post(
        "/api/v1/events/batch",
        content=b'{"events": [',
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400, "malformed_json")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/events", {"evt": {}}, "event"),
        ("/api/v1/events/batch", {"events": {"not": "a list"}}, "events"),
        ("/api/v1/events/batch", [1, 2], ""),  # "" is the whole body (docs/api.md)
    ],
)
def test_schema_violations_are_422_with_path(
    client: httpx.Client, path: str, body: object, field: str
) -> None:
    error = assert_error(client.post(path, json=body), 422, "validation_failed")
    assert error["details"][0]["path"] == field


def test_single_invalid_event_is_422_with_field_path(client: httpx.Client) -> None:
    event = page_view() | {
        "event_type": {"type": "Purchase", "data": {"order_id": "o", "revenue": "ten"}}
    }
    error = assert_error(client.post("/api/v1/events", json={"event": event}), 422, "invalid_event")
    assert error["details"][0]["path"] == "event.event_type.data.revenue"


def test_single_future_event_is_422(client: httpx.Client) -> None:
    event = page_view() | {"timestamp": "2999-01-01T00:00:00Z"}
    assert_error(client.post("/api/v1/events", json={"event": event}), 422, "timestamp_in_future")


def test_oversize_single_event_is_413(client: httpx.Client) -> None:
    event = page_view() | {"metadata": {"blob": "x" * 40_000}}
    assert_error(client.post("/api/v1/events", json={"event": event}), 413, "payload_too_large")


def test_oversize_event_inside_batch_is_rejected_alone(client: httpx.Client) -> None:
    big = page_view() | {"metadata": {"blob": "x" * 33_000}}
    body = client.post("/api/v1/events/batch", json={"events": [big, page_view()]}).json()
    assert body["accepted"] == 1 and body["rejected"][0]["code"] == "event_too_large"


def test_batch_over_ten_thousand_events_is_413(client: httpx.Client) -> None:
    tiny = json.dumps({"user_id": "u", "event_type": {"type": "Login"}})
    payload = ('{"events": [' + ",".join([tiny] * 10_001) + "]}").encode()
    assert_error(client.post("/api/v1/events/batch", content=payload), 413, "batch_too_large")


def test_batch_body_over_ten_megabytes_is_413(client: httpx.Client) -> None:
    payload = b'{"events": ["' + b"x" * (10 * 1024 * 1024 + 10) + b'"]}'
    assert_error(client.post("/api/v1/events/batch", content=payload), 413, "payload_too_large")


def test_unknown_route_and_wrong_method(client: httpx.Client) -> None:
    assert_error(client.get("/api/v1/nothing-here"), 404, "not_found")
    assert_error(client.get("/api/v1/events"), 405, "method_not_allowed")


def test_invalid_utf8_in_metadata_is_422_and_the_valid_batch_event_is_kept(
    client: httpx.Client,
) -> None:
    good = b'{"event_id": "utf8-ok", "user_id": "u", "event_type": {"type": "PageView", "data": {"url": "/"}}}'
    bad = b'{"user_id": "u", "event_type": {"type": "PageView", "data": {"url": "/"}}, "metadata": {"k": "\xff"}}'
    single = client.post(
        "/api/v1/events",
        content=b'{"event": ' + bad + b"}",
        headers={"content-type": "application/json"},
    )
    assert single.status_code == 422, single.text
    assert single.json()["error"]["details"][0]["path"] == "event.metadata"
    batch = client.post(
        "/api/v1/events/batch",
        content=b'{"events": [' + bad + b", " + good + b"]}",
        headers={"content-type": "application/json"},
    )
    assert batch.status_code == 202, batch.text
    body = batch.json()
    assert body["event_ids"] == ["utf8-ok"]
    assert [r["path"] for r in body["rejected"]] == ["events[0].metadata"]
