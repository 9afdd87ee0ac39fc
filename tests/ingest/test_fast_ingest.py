"""The plain-ASGI ingest layer (avila.api.fast_ingest) against a real server: what it answers
itself equals what the framework answers, and what it hands over arrives intact."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx

from tests.conftest import TEST_KEY
from tests.foundation.helpers import assert_error, page_view

HEADERS = {"x-api-key": TEST_KEY, "content-type": "application/json"}


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_a_chunked_body_is_read_whole_and_a_too_large_one_is_refused(server) -> None:  # noqa: ANN001
    events = [page_view(event_id=f"chunk-{uuid.uuid4().hex}-{i}") for i in range(50)]
    body = json.dumps({"events": events}).encode()
    # No Content-Length (a generator body is sent chunked): the layer must read every chunk.
    response = httpx.post(
        server.url + "/api/v1/events/batch", content=_chunks(body, 1000), headers=HEADERS
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 50
    assert response.headers["content-type"] == "application/json"

    big = json.dumps({"events": [page_view(event_id=f"big-{i}") for i in range(80_000)]}).encode()
    assert len(big) > 10 * 1024 * 1024
    too_large = httpx.post(
        server.url + "/api/v1/events/batch", content=_chunks(big, 1 << 20), headers=HEADERS
    )
    error = assert_error(too_large, 413, "payload_too_large")
    assert error["details"][0]["limit_bytes"] == 10 * 1024 * 1024
    with_length = httpx.post(server.url + "/api/v1/events/batch", content=big, headers=HEADERS)
    assert assert_error(with_length, 413, "payload_too_large")["details"][0][
        "received_bytes"
    ] == len(big)


def test_errors_handed_to_the_framework_keep_their_shape(server) -> None:  # noqa: ANN001
    url = server.url + "/api/v1/events"
    assert_error(httpx.post(url, content=b"{not json", headers=HEADERS), 400, "malformed_json")
    bad = page_view()
    del bad["user_id"]
    error = assert_error(
        httpx.post(url, json={"event": bad}, headers=HEADERS), 422, "invalid_event"
    )
    assert error["details"][0]["path"] == "event.user_id"
    empty = httpx.post(server.url + "/api/v1/events/batch", json={"events": []}, headers=HEADERS)
    assert_error(empty, 422, "validation_failed")
    # A bad key is explained by the guard even when the body is also bad.
    assert_error(
        httpx.post(url, content=b"{not json", headers={"x-api-key": "nope"}), 401, "invalid_api_key"
    )
    bearer = httpx.post(
        url,
        json={"event": page_view(event_id=f"bearer-{uuid.uuid4().hex}")},
        headers={"authorization": f"Bearer {TEST_KEY}"},
    )
    assert bearer.status_code == 202 and bearer.json()["accepted"] == 1


def test_cors_requests_get_cors_headers_and_requests_are_counted(server) -> None:  # noqa: ANN001
    origin = {"origin": "https://shop.example", **HEADERS}
    event_id = f"cors-{uuid.uuid4().hex}"
    response = httpx.post(
        server.url + "/api/v1/events", json={"event": page_view(event_id=event_id)}, headers=origin
    )
    assert response.status_code == 202
    assert response.headers["access-control-allow-origin"] in ("*", "https://shop.example")
    plain = httpx.post(
        server.url + "/api/v1/events",
        json={"event": page_view(event_id=event_id)},
        headers=HEADERS,
    )
    assert plain.json() == {"accepted": 0, "duplicates": 1, "event_ids": [event_id]}
    metrics = httpx.get(server.url + "/metrics").text
    line = next(
        m
        for m in metrics.splitlines()
        if m.startswith("avila_http_requests_total{")
        and 'route="/api/v1/events"' in m
        and 'status="202"' in m
    )
    assert float(line.rsplit(" ", 1)[1]) >= 2


def test_browser_requests_are_answered_with_cors_headers_on_every_outcome(make_server) -> None:  # noqa: ANN001
    """A web page's request always carries ``Origin``; with CORS on for a list of origins its
    answers (accepted, a rejected event, over the rate limit, from a refused origin) carry what
    a browser needs to read them, whichever layer answers."""
    shop = "https://shop.example"
    server = make_server(ENABLE_CORS="true", CORS_ORIGINS=shop, RATE_LIMIT_PER_MINUTE="4")
    browser = {**HEADERS, "origin": shop}

    def readable_by_shop(response: httpx.Response) -> None:
        assert response.headers["access-control-allow-origin"] == shop
        assert "ratelimit-remaining" in response.headers["access-control-expose-headers"].lower()
        assert "origin" in response.headers["vary"].lower()

    single = httpx.post(server.url + "/api/v1/events", json={"event": page_view()}, headers=browser)
    assert single.status_code == 202, single.text
    readable_by_shop(single)
    assert single.headers["ratelimit-limit"] == "4"

    batch = httpx.post(
        server.url + "/api/v1/events/batch",
        json={"events": [page_view(), {**page_view(), "timestamp": "not a time"}]},
        headers=browser,
    )
    assert batch.status_code == 202, batch.text
    assert batch.json()["accepted"] == 1 and batch.json()["rejected"][0]["index"] == 1
    readable_by_shop(batch)

    bad = {**page_view(), "timestamp": "not a time"}
    rejected = httpx.post(server.url + "/api/v1/events", json={"event": bad}, headers=browser)
    assert assert_error(rejected, 422, "invalid_event")["details"][0]["path"] == "event.timestamp"
    readable_by_shop(rejected)

    other = httpx.post(
        server.url + "/api/v1/events",
        json={"event": page_view()},
        headers={**HEADERS, "origin": "https://elsewhere.example"},
    )
    # CORS is the browser's rule: the event is stored, the page just may not read the answer.
    assert other.status_code == 202, other.text
    assert "access-control-allow-origin" not in other.headers
    assert "origin" in other.headers["vary"].lower()

    limited = httpx.post(
        server.url + "/api/v1/events", json={"event": page_view()}, headers=browser
    )
    assert_error(limited, 429, "rate_limited")
    readable_by_shop(limited)
    assert int(limited.headers["retry-after"]) >= 1
