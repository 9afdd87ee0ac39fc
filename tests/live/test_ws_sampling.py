"""Sampling above the per-project rate, filtered subscriptions, and the exact metrics channel,
against real server processes."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.conftest import TEST_KEY
from tests.live.ws_client import barrier, collect_events, events_of, open_ws, recv, send, subscribe

RATE = 100
BATCHES, BATCH = 20, 250


def _events(prefix: str, n: int, **overrides: Any) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"{prefix}-{i}",
            "user_id": f"user-{i % 7}",
            "timestamp": "2026-11-30T10:00:00Z",
            "event_type": {"type": "PageView", "data": {"url": f"/p/{i}"}},
            **overrides,
        }
        for i in range(n)
    ]


def _post(url: str, events: list[dict[str, Any]]) -> None:
    response = httpx.post(
        url + "/api/v1/events/batch", json={"events": events}, headers={"x-api-key": TEST_KEY}
    )
    assert response.status_code == 202 and response.json()["accepted"] == len(events)


def test_sampling_states_its_rate_and_metrics_stay_exact(make_server: Any) -> None:
    server = make_server(AVILA_LIVE_MAX_EVENTS_PER_SECOND=str(RATE))
    sent: set[str] = set()
    with open_ws(server) as ws:
        subscribe(ws, "events", "metrics")
        for b in range(BATCHES):
            batch = _events(f"s{b}", BATCH)
            _post(server.url, batch)
            sent.update(e["event_id"] for e in batch)
        total = BATCHES * BATCH
        offered = 0
        received: list[str] = []
        frames: list[dict[str, Any]] = []
        metrics: list[dict[str, Any]] = []
        while offered < total:  # every frame accounts for the events it stands for
            message = recv(ws)
            if message["type"] == "Metrics":
                metrics.append(message["payload"])
                continue
            frames.append(message)
            got = [e["event_id"] for e in events_of(message)]
            received.extend(got)
            sampled = message["payload"]["sampled"] if message["type"] == "Events" else 1.0
            assert 0.0 < sampled <= 1.0
            offered += round(len(got) / sampled)
        assert offered == total
        assert any(f["type"] == "Events" and f["payload"]["sampled"] < 1.0 for f in frames)
        assert all(f["payload"].get("dropped", 0) == 0 for f in frames if f["type"] == "Events")
        assert len(received) < total  # sampled ...
        assert len(set(received)) == len(received) and set(received) <= sent  # ... uniquely
        # The metrics channel counts every accepted event, sampled or not.
        while not metrics or metrics[-1]["events_last_minute"] < total:
            message = recv(ws)
            if message["type"] == "Metrics":
                metrics.append(message["payload"])
        assert metrics[-1]["events_last_minute"] == total


def test_filtered_subscriptions_get_exactly_their_events(server: Any) -> None:
    prefix = "f" + uuid.uuid4().hex[:8]
    buyer = f"buyer-{prefix}"
    with open_ws(server) as purchases, open_ws(server) as one_user, open_ws(server) as everything:
        send(
            purchases,
            {
                "type": "Subscribe",
                "payload": {"channels": ["events"], "filter": {"event_types": ["Purchase"]}},
            },
        )
        reply = recv(purchases)
        assert reply["payload"] == {
            "channels": ["events"],
            "filter": {"event_types": ["Purchase"], "user_ids": []},
        }
        send(
            one_user,
            {
                "type": "Subscribe",
                "payload": {"channels": ["events"], "filter": {"user_ids": [buyer]}},
            },
        )
        assert recv(one_user)["payload"]["filter"]["user_ids"] == [buyer]
        subscribe(everything, "events")

        views = _events(prefix + "-v", 30)
        buys = _events(
            prefix + "-b",
            6,
            event_type={"type": "Purchase", "data": {"order_id": "o1", "revenue": 9.5}},
        )
        mine = _events(prefix + "-m", 4, user_id=buyer)
        batch = views + buys + mine
        _post(server.url, batch)
        all_ids = {e["event_id"] for e in batch}
        seen, _ = collect_events(everything, all_ids)
        got_buys, _ = collect_events(purchases, {e["event_id"] for e in buys})
        got_mine, _ = collect_events(one_user, {e["event_id"] for e in mine})
        got_buys += [e for m in barrier(purchases) for e in events_of(m)]
        got_mine += [e for m in barrier(one_user) for e in events_of(m)]
        ours = lambda events: [e for e in events if e["event_id"] in all_ids]  # noqa: E731
        assert sorted(e["event_id"] for e in ours(got_buys)) == sorted(e["event_id"] for e in buys)
        assert all(e["event_type"]["type"] == "Purchase" for e in got_buys)
        assert sorted(e["event_id"] for e in ours(got_mine)) == sorted(e["event_id"] for e in mine)
        assert all(e["user_id"] == buyer for e in got_mine)
        assert {e["event_id"] for e in ours(seen)} == all_ids


def test_bad_filters_get_an_error_and_change_nothing(server: Any) -> None:
    with open_ws(server) as ws:
        cases = [
            ({"event_types": ["Teleport"]}, "payload.filter.event_types"),
            ({"user_ids": "u1"}, "payload.filter.user_ids"),
            ({"colour": ["red"]}, "payload.filter.colour"),
            ([1], "payload.filter"),
        ]
        for bad, path in cases:
            send(ws, {"type": "Subscribe", "payload": {"channels": ["events"], "filter": bad}})
            error = recv(ws)
            assert error["type"] == "Error" and error["payload"]["code"] == "invalid_filter"
            assert error["payload"]["details"][0]["path"] == path
        assert subscribe(ws)["payload"] == {"channels": []}
