"""Each alert metric, through ``POST /api/v1/alerts/evaluate`` on a real server, against the
plain-Python oracles of tests/alerts/oracles.py on generated data (window edges, ties,
duplicates, unicode, empty windows, huge values, flat baselines)."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.alerts import oracles
from tests.alerts.oracles import Ev, Reading
from tests.alerts.receivers import wait_for
from tests.foundation.helpers import assert_error

#: Fixed evaluation instant, far from every other test's data.
AT = datetime(2025, 3, 1, 12, 0, 0)
_PASCAL = {"page_view": "PageView", "custom": "Custom", "purchase": "Purchase", "login": "Login"}
_KEY_FIELD = {"page_view": "url", "custom": "name", "purchase": "order_id"}


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def _event_json(ev: Ev, event_id: str) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if ev.type in _KEY_FIELD:
        data[_KEY_FIELD[ev.type]] = ev.key
    if ev.type == "purchase":
        data.update(revenue=ev.revenue, currency="EUR")
    return {
        "event_id": event_id,
        "user_id": ev.user,
        "timestamp": _iso(ev.ts),
        "event_type": {"type": _PASCAL[ev.type], "data": data},
    }


def _evaluate(
    client: httpx.Client, metric: dict[str, Any], window: int, at: datetime = AT
) -> float | None:
    response = client.post(
        "/api/v1/alerts/evaluate",
        json={"metric": metric, "window_seconds": window, "at": _iso(at)},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["window_end"] == _iso(at)[:-4] + "Z"  # millisecond precision
    return body["value"]  # type: ignore[no-any-return]


def _load(client: httpx.Client, events: list[Ev], duplicates: int = 0) -> None:
    """Ingest ``events`` (re-sending ``duplicates`` of them with the same event_id) and wait
    until the store shows them all."""
    rng = random.Random(len(events))
    payload = [_event_json(ev, f"ev-{i}-{uuid.uuid4().hex}") for i, ev in enumerate(events)]
    payload += rng.sample(payload, duplicates)
    rng.shuffle(payload)
    for start in range(0, len(payload), 2000):
        response = client.post(
            "/api/v1/events/batch", json={"events": payload[start : start + 2000]}
        )
        assert response.status_code == 202, response.text
        assert not response.json()["rejected"], response.text
    types = {ev.type for ev in events}

    def visible() -> bool:
        total = 0.0
        for t in types:
            value = _evaluate(
                client,
                {"kind": "event_count", "condition_type": t},
                30 * 86_400,
                AT + timedelta(days=20),
            )
            total += value or 0
        return total == len(events)

    assert wait_for(visible, 30, step=0.2)


def _close(actual: float | None, expected: float | None) -> None:
    if expected is None:
        assert actual is None
    else:
        assert actual is not None and math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize("seed", [1, 2])
def test_event_count_matches_the_oracle(
    new_project: Callable[..., httpx.Client], seed: int
) -> None:
    rng = random.Random(seed)
    client = new_project()
    window = 600
    urls = ["/", "/pricing", "/p/ünïcode", "/p/café", "/product/42"]
    names = ["sign up", "signup", "导出"]
    events: list[Ev] = []
    for _ in range(400):
        kind = rng.choice(["page_view", "custom", "login", "purchase"])
        key = {"page_view": rng.choice(urls), "custom": rng.choice(names)}.get(kind, "")
        if kind == "purchase":
            key = f"o-{rng.randrange(10**6)}"
        offset = rng.uniform(-3 * window, 2 * window)
        events.append(Ev(f"u{rng.randrange(40)}", kind, key, AT + timedelta(seconds=offset)))
    # Window edges (both ends included) and ties.
    since = AT - timedelta(seconds=window)
    for ts in (since, since, AT, since - timedelta(microseconds=1), AT + timedelta(microseconds=1)):
        events.append(Ev("edge", "page_view", "/pricing", ts))
    _load(client, events, duplicates=25)

    queries = [
        ("page_view", "", "exact"),
        ("page_view", "/pricing", "exact"),
        ("page_view", "/p/", "prefix"),
        ("page_view", "ünï", "contains"),
        ("custom", "导出", "exact"),
        ("custom", "sign", "prefix"),
        ("login", "", "exact"),
        ("purchase", "", "exact"),
        ("custom", "nobody sends this", "exact"),
    ]
    for at in (AT, AT - timedelta(seconds=window), AT + timedelta(days=2)):
        for ctype, value, match in queries:
            metric = {"kind": "event_count", "condition_type": ctype, "condition_value": value}
            metric["match"] = match
            expected = oracles.event_count(events, at, window, ctype, value, match)
            assert _evaluate(client, metric, window, at) == expected, (at, ctype, value, match)
    assert (
        _evaluate(
            client, {"kind": "event_count", "condition_type": "login"}, 1, AT + timedelta(days=2)
        )
        == 0
    )


@pytest.mark.parametrize("seed", [3, 4])
def test_conversion_rate_matches_the_oracle(
    new_project: Callable[..., httpx.Client], seed: int
) -> None:
    rng = random.Random(seed)
    client = new_project()
    window = 3600
    events: list[Ev] = []
    for u in range(120):
        user = f"usér-{u}" if u % 7 else f"ユーザー{u}"
        for _ in range(rng.randrange(0, 6)):
            kind = rng.choice(["page_view", "page_view", "purchase", "login"])
            key = rng.choice(["/pricing", "/docs"]) if kind == "page_view" else ""
            if kind == "purchase":
                key = f"o-{uuid.uuid4().hex[:6]}"
            offset = rng.uniform(-1.5 * window, 0.3 * window)
            events.append(Ev(user, kind, key, AT + timedelta(seconds=offset), revenue=10.0))
    # A tie (purchase at the very instant of the first pricing view) converts; a purchase only
    # before it does not; a pricing view just outside the window does not start.
    t = AT - timedelta(seconds=100)
    events += [
        Ev("tie", "page_view", "/pricing", t),
        Ev("tie", "purchase", "o-tie", t, 5.0),
        Ev("before", "purchase", "o-b", t - timedelta(seconds=1), 5.0),
        Ev("before", "page_view", "/pricing", t),
        Ev("outside", "page_view", "/pricing", AT - timedelta(seconds=window, microseconds=1)),
        Ev("outside", "purchase", "o-out", AT - timedelta(seconds=10), 5.0),
    ]
    _load(client, events, duplicates=10)
    metric = {
        "kind": "conversion_rate",
        "steps": [
            {"condition_type": "page_view", "condition_value": "/pricing"},
            {"condition_type": "purchase"},
        ],
    }
    for at in (AT, AT - timedelta(seconds=window / 2), AT + timedelta(days=3)):
        expected = oracles.conversion_rate(
            events, at, window, ("page_view", "/pricing"), ("purchase", "")
        )
        _close(_evaluate(client, metric, window, at), expected)
    assert _evaluate(client, metric, window, AT + timedelta(days=3)) is None  # nobody started


def _anomaly_events(rng: random.Random, at: datetime, window: int, counts: list[int]) -> list[Ev]:
    """counts[k] events in window k (0 = current); revenue spans tiny to huge values."""
    events = []
    width = timedelta(seconds=window)
    for k, n in enumerate(counts):
        start = at - (k + 1) * width
        for i in range(n):
            # The first event of each window sits exactly on its start (an edge).
            ts = (
                start
                if i == 0
                else start + timedelta(microseconds=rng.randrange(1, window * 10**6))
            )
            revenue = rng.choice([0.01, 19.99, 250.0, 1e9]) if rng.random() < 0.5 else 0.0
            kind = "purchase" if revenue else "page_view"
            events.append(
                Ev(
                    f"u{rng.randrange(50)}",
                    kind,
                    "/x" if kind == "page_view" else f"o{k}-{i}",
                    ts,
                    revenue,
                )
            )
    return events


@pytest.mark.parametrize(
    "shape",
    ["poisson_spike", "quiet_dip", "flat_baseline_equal", "flat_baseline_spike", "one_outlier"],
)
def test_anomaly_score_matches_the_oracle(
    new_project: Callable[..., httpx.Client], shape: str
) -> None:
    rng = random.Random(shape)
    client = new_project()
    window = 3600
    base = [rng.randint(8, 16) for _ in range(oracles.BASELINE_WINDOWS)]
    current = {
        "poisson_spike": 60,
        "quiet_dip": 1,
        "flat_baseline_equal": 5,
        "flat_baseline_spike": 9,
        "one_outlier": 7,
    }[shape]
    if shape.startswith("flat"):
        base = [5] * oracles.BASELINE_WINDOWS
    if shape == "one_outlier":
        base = [5] * oracles.BASELINE_WINDOWS
        base[3] = 30
    events = _anomaly_events(rng, AT, window, [current, *base])
    events.append(Ev("late", "page_view", "/x", AT + timedelta(seconds=1)))  # after `at`
    _load(client, events)
    for series in ("events", "revenue"):
        expected = oracles.anomaly_score(events, AT, window, series)
        actual = _evaluate(client, {"kind": "anomaly", "series": series}, window)
        _close(actual, expected)
    # A project whose baseline holds nothing has no score (not an anomaly).
    assert _evaluate(client, {"kind": "anomaly"}, window, AT - timedelta(days=5)) is None


def test_telemetry_aggregates_match_the_oracle(new_project: Callable[..., httpx.Client]) -> None:
    rng = random.Random(7)
    client = new_project()
    window = 300
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(seconds=5)
    devices = [("press-1", "press"), ("press-2", "press"), ("oven-ü", "oven")]
    readings = []
    used: set[datetime] = set()
    for i in range(300):
        device, dtype = rng.choice(devices)
        ts = now - timedelta(seconds=rng.uniform(0, 2 * window))
        while ts in used:  # distinct times: "last" is then well defined
            ts += timedelta(microseconds=1)
        used.add(ts)
        value = rng.choice([rng.gauss(80, 10), -1e12, 1e12]) if i % 50 == 0 else rng.gauss(80, 10)
        readings.append(Reading(device, dtype, rng.choice(["temperature", "vibration"]), value, ts))
    body = {
        "readings": [
            {
                "device_id": r.device,
                "device_type": r.device_type,
                "timestamp": _iso(r.ts),
                "metrics": {r.metric: r.value},
            }
            for r in readings
        ]
    }
    response = client.post("/api/v1/industry40/iot/ingest", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(readings)
    for aggregate in ("max", "min", "avg", "last"):
        for device_id, device_type in (
            (None, None),
            ("press-1", None),
            (None, "press"),
            (None, "oven"),
        ):
            metric: dict[str, Any] = {
                "kind": "telemetry",
                "metric": "temperature",
                "aggregate": aggregate,
            }
            if device_id:
                metric["device_id"] = device_id
            if device_type:
                metric["device_type"] = device_type
            expected = oracles.telemetry(
                readings, now, window, "temperature", aggregate, device_id, device_type
            )
            _close(_evaluate(client, metric, window, now), expected)
    missing = {"kind": "telemetry", "metric": "no_such_metric"}
    assert _evaluate(client, missing, window, now) is None


def test_rule_validation_and_scopes(new_project: Callable[..., httpx.Client]) -> None:
    admin = new_project()
    reader = new_project(scopes=("read",))
    good = {
        "name": "x",
        "metric": {"kind": "event_count", "condition_type": "purchase"},
        "condition": {"op": ">", "threshold": 1},
        "window_seconds": 60,
        "destinations": [{"type": "slack", "url": "https://hooks.slack.com/services/T/B/SECRET"}],
    }
    assert_error(reader.post("/api/v1/alerts/rules", json=good), 403, "missing_scope")
    created = admin.post("/api/v1/alerts/rules", json=good)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert "SECRET" not in created.text  # a Slack URL carries its token: never shown
    assert reader.get(f"/api/v1/alerts/rules/{rule['id']}").json()["id"] == rule["id"]
    assert [r["id"] for r in reader.get("/api/v1/alerts/rules").json()["rules"]] == [rule["id"]]
    assert_error(reader.delete(f"/api/v1/alerts/rules/{rule['id']}"), 403, "missing_scope")
    stranger = new_project(project="elsewhere-" + uuid.uuid4().hex[:6])
    assert_error(stranger.get(f"/api/v1/alerts/rules/{rule['id']}"), 404, "alert_rule_not_found")
    assert stranger.get("/api/v1/alerts/rules").json() == {"rules": []}
    cases = [
        (
            {**good, "metric": {"kind": "event_count", "condition_type": "teleport"}},
            "unknown_condition_type",
            "metric.condition_type",
        ),
        ({**good, "metric": {"kind": "nope"}}, "validation_failed", "metric.kind"),
        ({**good, "condition": {"op": "==", "threshold": 1}}, "validation_failed", "condition.op"),
        ({**good, "window_seconds": 0}, "validation_failed", "window_seconds"),
        (
            {**good, "destinations": [{"type": "webhook", "url": "ftp://x/y"}]},
            "validation_failed",
            "destinations[0].url",
        ),
        (
            {**good, "destinations": [{"type": "email", "to": ["not-an-address"]}]},
            "validation_failed",
            "destinations[0].to[0]",
        ),
        (
            {**good, "metric": {"kind": "conversion_rate", "steps": [{"condition_type": "login"}]}},
            "validation_failed",
            "metric.steps",
        ),
        (
            {
                **good,
                "metric": {
                    "kind": "event_count",
                    "condition_type": "page_view",
                    "condition_value": "(",
                    "match": "regex",
                },
            },
            "invalid_regex",
            "metric.condition_value",
        ),
    ]
    for body, code, path in cases:
        error = assert_error(admin.post("/api/v1/alerts/rules", json=body), 422, code)
        assert any(path in d["path"] for d in error["details"]), (path, error)
    assert_error(admin.get("/api/v1/alerts/rules/nope"), 404, "alert_rule_not_found")
    # evaluate needs only `read`; `breached` applies the condition to the value (0 here).
    for op, threshold, breached in ((">", -1, True), ("<", 0, False), ("<=", 0, True)):
        preview = reader.post(
            "/api/v1/alerts/evaluate",
            json={
                "metric": good["metric"],
                "window_seconds": 60,
                "condition": {"op": op, "threshold": threshold},
            },
        )
        assert preview.status_code == 200, preview.text
        assert preview.json()["value"] == 0 and preview.json()["breached"] is breached
    deleted = admin.delete(f"/api/v1/alerts/rules/{rule['id']}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert admin.get("/api/v1/alerts/rules").json()["rules"] == []
    assert reader.get("/api/v1/alerts/history").json() == {"firings": []}
