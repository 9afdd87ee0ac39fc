"""Errors a person can act on (docs/api.md, "Errors"), against a real server.

413 names the limit and the size received; an invalid enum lists the allowed values; paths are
in one style on every route; each kind of mistake has one code; out-of-range parameters are
refused with the range; an empty batch is refused.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from avila.api.events import MAX_SINGLE_BYTES
from avila.schemas.analytics import FunnelMode
from avila.schemas.events import EventTypeName

EVENT = {"user_id": "u-errors", "event_type": {"type": "PageView", "data": {"url": "/"}}}
STEPS = [{"condition_type": "page_view"}, {"condition_type": "purchase"}]


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    return body["error"]


def test_413_names_the_limit_and_the_size_received(client: httpx.Client) -> None:
    big = json.dumps({"event": {**EVENT, "user_id": "x" * 40_000}}).encode()
    error = error_of(client.post("/api/v1/events", content=big), 413, "payload_too_large")
    assert f"{len(big):,} bytes" in error["message"]
    assert f"{MAX_SINGLE_BYTES:,} bytes" in error["message"]
    assert error["details"][0]["limit_bytes"] == MAX_SINGLE_BYTES
    assert error["details"][0]["received_bytes"] == len(big)

    # Chunked (no Content-Length): the size is not known, the message says "more than".
    def chunks() -> Any:
        yield big

    chunked = client.post("/api/v1/events", content=chunks())
    error = error_of(chunked, 413, "payload_too_large")
    assert f"more than {MAX_SINGLE_BYTES:,} bytes" in error["message"]
    assert error["details"][0]["received_bytes"] is None

    huge = b'{"events": [' + b",".join([json.dumps(EVENT).encode()] * 160_000) + b"]}"
    assert len(huge) > 10 * 1024 * 1024
    error = error_of(client.post("/api/v1/events/batch", content=huge), 413, "payload_too_large")
    assert f"{len(huge):,} bytes" in error["message"] and "10,485,760" in error["message"]


def test_segment_too_large_keeps_segments_400_and_names_the_sizes(client: httpx.Client) -> None:
    big = json.dumps({"userId": "u", "event": "x" * 40_000, "type": "track"}).encode()
    error = error_of(client.post("/v1/track", content=big), 400, "payload_too_large")
    assert f"{len(big):,} bytes" in error["message"] and "32,768 bytes" in error["message"]
    assert error["details"][0]["received_bytes"] == len(big)


@pytest.mark.parametrize(
    ("request_kwargs", "path", "allowed", "code"),
    [
        (
            {
                "method": "POST",
                "url": "/api/v1/events",
                "json": {"event": {**EVENT, "event_type": {"type": "pageview"}}},
            },
            "event.event_type.type",
            sorted(EventTypeName.__args__),
            "invalid_event",
        ),
        (
            {
                "method": "POST",
                "url": "/api/v1/analytics/funnel",
                "json": {"steps": STEPS, "mode": "loose"},
            },
            "mode",
            sorted(FunnelMode.__args__),
            "validation_failed",
        ),
        (
            {
                "method": "POST",
                "url": "/api/v1/analytics/funnel",
                "json": {"steps": [{**STEPS[0], "match": "glob"}, STEPS[1]]},
            },
            "steps[0].match",
            ["contains", "exact", "prefix", "regex"],
            "validation_failed",
        ),
        (
            {"method": "GET", "url": "/api/v1/analytics/trends", "params": {"interval": "year"}},
            "interval",
            ["day", "hour", "month", "week"],
            "invalid_query",
        ),
    ],
)
def test_an_invalid_enum_lists_the_allowed_values(
    client: httpx.Client, request_kwargs: dict[str, Any], path: str, allowed: list[str], code: str
) -> None:
    error = error_of(client.request(**request_kwargs), 422, code)
    detail = error["details"][0]
    assert detail["path"] == path
    listed = detail["message"].split("expected one of: ")[1].split(", ")
    assert sorted(listed) == allowed
    assert "expected one of: " in error["message"]
    if code != "invalid_event":  # the framework-decoded routes also give the list as data
        assert sorted(detail["allowed"]) == allowed


def test_one_path_style_on_every_route(client: httpx.Client) -> None:
    batch = client.post(
        "/api/v1/events/batch",
        json={"events": [EVENT, {**EVENT, "event_type": {"type": "PageView", "data": {}}}]},
    )
    assert batch.status_code == 202
    assert batch.json()["rejected"][0]["path"] == "events[1].event_type.data.url"

    iot = "/api/v1/industry40/iot/ingest"
    readings = {
        "readings": [
            {"device_id": "d-err", "metrics": {"t": 1}},
            {"device_id": "d-err", "metrics": {"t": "hot"}},
        ]
    }
    assert client.post(iot, json=readings).json()["rejected"][0]["path"] == "readings[1].metrics.t"
    single = client.post(iot, json={"device_id": "d-err", "metrics": {"t": "hot"}})
    assert error_of(single, 422, "non_numeric_value")["details"][0]["path"] == "metrics.t"

    oee = client.post(
        "/api/v1/industry40/oee/calculate",
        json={
            "device_id": "d",
            "production_data": {
                "planned_production_time_hours": 8,
                "actual_runtime_hours": 7,
                "ideal_cycle_time_ms": 1000,
                "total_units_produced": 100,
                "good_units": 101,
            },
        },
    )
    assert error_of(oee, 422, "oee_good_exceeds_total")["details"][0]["path"] == (
        "production_data.good_units"
    )
    export = client.post("/api/v1/export", json={"format": "csv", "filters": {"user_ids": 3}})
    assert error_of(export, 422, "validation_failed")["details"][0]["path"] == "filters.user_ids"
    not_an_object = client.post("/api/v1/events/batch", json=[1, 2])
    assert error_of(not_an_object, 422, "validation_failed")["details"][0]["path"] == ""
    for response in (oee, export, single, not_an_object):
        for detail in response.json()["error"]["details"]:
            assert not detail["path"].startswith(("$", ".")), detail


def test_one_code_per_kind_of_mistake(client: httpx.Client) -> None:
    # A query-string type error and a query-string range error: the same code.
    wrong_type = client.get("/api/v1/analytics/overview", params={"top_n": "ten"})
    out_of_range = client.get("/api/v1/analytics/overview", params={"top_n": 500})
    bad_time = client.get("/api/v1/analytics/overview", params={"start_time": "yesterday"})
    for response in (wrong_type, out_of_range, bad_time):
        error_of(response, 422, "invalid_query")
    # A body schema violation: validation_failed.
    error_of(client.post("/api/v1/analytics/funnel", json={"steps": "x"}), 422, "validation_failed")
    # end_time before start_time: invalid_time_range on analytics, export and Industry 4.0 alike.
    reversed_range = {"start_time": "2026-01-02T00:00:00Z", "end_time": "2026-01-01T00:00:00Z"}
    error_of(
        client.get("/api/v1/analytics/sessions", params=reversed_range), 422, "invalid_time_range"
    )
    error_of(
        client.post("/api/v1/export", json={"format": "csv", "filters": reversed_range}),
        422,
        "invalid_time_range",
    )
    error_of(
        client.get("/api/v1/industry40/energy/consumption", params=reversed_range),
        422,
        "invalid_time_range",
    )
    # Malformed JSON: malformed_json on raw-body and framework-decoded routes alike.
    for url in ("/api/v1/events", "/api/v1/analytics/funnel", "/api/v1/export", "/api/v1/ml/train"):
        error_of(client.post(url, content=b"{nope"), 400, "malformed_json")


@pytest.mark.parametrize(
    ("url", "params", "name", "low", "high"),
    [
        ("/api/v1/users/user-errors", {"recent": 5000}, "recent", 0, 200),
        ("/api/v1/analytics/overview", {"top_n": 500}, "top_n", 1, 100),
        ("/api/v1/analytics/realtime", {"top_n": 0}, "top_n", 1, 100),
        ("/api/v1/ml/anomalies", {"limit": 5000}, "limit", 1, 1000),
        ("/api/v1/users/user-errors/sessions", {"limit": 1001}, "limit", 0, 1000),
    ],
)
def test_out_of_range_is_refused_with_the_range(
    client: httpx.Client, url: str, params: dict[str, int], name: str, low: int, high: int
) -> None:
    error = error_of(client.get(url, params=params), 422, "invalid_query")
    detail = error["details"][0]
    assert detail["path"] == name
    bound = high if params[name] > high else low
    assert str(bound) in detail["message"]
    assert f"between {low} and {high}" in detail["message"]


def test_a_too_long_time_range_is_refused_with_the_limit(client: httpx.Client) -> None:
    params = {"start_time": "1900-01-01T00:00:00Z", "end_time": "2026-01-01T00:00:00Z"}
    error = error_of(
        client.get("/api/v1/analytics/sessions", params=params), 422, "time_range_too_long"
    )
    assert "3,660 days" in error["message"]
    error = error_of(
        client.get("/api/v1/industry40/energy/consumption", params=params),
        422,
        "time_range_too_long",
    )
    assert "366 days" in error["message"]


def test_an_empty_batch_is_refused(client: httpx.Client) -> None:
    events = error_of(
        client.post("/api/v1/events/batch", json={"events": []}), 422, "validation_failed"
    )
    assert events["details"][0]["path"] == "events"
    readings = error_of(
        client.post("/api/v1/industry40/iot/ingest", json={"readings": []}),
        422,
        "validation_failed",
    )
    assert readings["details"][0]["path"] == "readings"


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        (
            "PUT",
            "/api/v1/industry40/alarms/rules/press",
            b'{"rules": [{"metric": "t", "max": 80}, {"metric": "p", "max": 1e999}]}',
            "rules[1].max",
        ),
        (
            "POST",
            "/api/v1/analytics/funnel",
            b'{"steps": [{"condition_type": "page_view"}], "window_days": -1e400}',
            "window_days",
        ),
        ("POST", "/api/v1/analytics/rfm", b'{"window_days": ' + b"9" * 400 + b".5}", "window_days"),
    ],
)
def test_a_number_past_any_double_is_422_at_its_field(
    client: httpx.Client, method: str, path: str, body: bytes, field: str
) -> None:
    """``1e999`` is valid JSON text but no number the server can hold: the framework refused it
    before any schema as a 400 naming no field (``$[...][0][...]``)."""
    response = client.request(
        method, path, content=body, headers={"content-type": "application/json"}
    )
    error = error_of(response, 422, "validation_failed")
    assert error["details"][0]["path"] == field
    assert "out of range" in error["message"]
