"""/health, /metrics (parsed by prometheus_client's parser), OpenAPI and structured logs."""

from __future__ import annotations

import json

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.foundation.helpers import page_view


def _families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_are_prometheus_text_with_the_promised_series(client: httpx.Client) -> None:
    client.post(
        "/api/v1/events/batch",
        json={"events": [page_view(), page_view() | {"event_type": {"type": "X"}}]},
    )
    dup = page_view()
    client.post("/api/v1/events", json={"event": dup})
    client.post("/api/v1/events", json={"event": dup})
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = _families(response.text)

    requests = families["avila_http_requests"]
    routes = {
        (s.labels["route"], s.labels["status"])
        for s in requests.samples
        if s.name.endswith("_total")
    }
    assert ("/api/v1/events/batch", "202") in routes and ("/api/v1/events", "202") in routes

    latency = families["avila_http_request_duration_seconds"]
    assert latency.type == "histogram"
    assert any(
        s.name.endswith("_bucket") and s.labels["route"] == "/api/v1/events"
        for s in latency.samples
    )

    outcomes = {
        s.labels["outcome"]: s.value
        for s in families["avila_events"].samples
        if s.name.endswith("_total")
    }
    assert outcomes["accepted"] >= 2 and outcomes["rejected"] >= 1 and outcomes["duplicate"] >= 1

    assert families["avila_group_commit_events"].type == "histogram"
    assert families["avila_group_commit_duration_seconds"].type == "histogram"
    commits = next(
        s.value for s in families["avila_group_commit_events"].samples if s.name.endswith("_count")
    )
    assert commits >= 1


def test_openapi_lists_the_ingest_routes(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert {"/api/v1/events", "/api/v1/events/batch", "/health", "/metrics"} <= set(spec["paths"])


def test_logs_are_json_lines(server) -> None:  # noqa: ANN001
    lines = [line for line in server.log().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]
    assert any(entry.get("msg") == "avila started" for entry in parsed)
    assert all({"ts", "level", "logger", "msg"} <= set(entry) for entry in parsed)
