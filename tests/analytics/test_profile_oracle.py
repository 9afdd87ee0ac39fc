"""The user profile against a plain-Python oracle, on both backends: counts with ties broken by
the keys (NULL last), top-N cuts inside a tie, unicode and empty-string keys, identical
timestamps, revenue next to huge values, and the most recent events."""

from __future__ import annotations

import math
import random
from collections import Counter
from datetime import timedelta
from typing import Any

from analytics_data import PROJECT, T0, event

from avila.analytics import user_profile

USER = "ü-🚀 O'Brien"
DEVICES = [None, "", "desktop", "mobile", "Tablet", "tablet", "ü"]
SYSTEMS = [None, "Linux", "iOS", "", "Ω"]
BROWSERS = [None, "Chrome", "Firefox"]
COUNTRIES = [None, "BR", "DE", "", "日本"]
CITIES = [None, "Recife", "Köln", ""]
URLS = ["/a", "/b", "/ü", "/c", "/d", "/e", "/f", "/g", "/h", "/i", "/j", "/k", "/l"]
TYPES = ["page_view", "page_view", "click", "purchase", "custom", "add_to_cart"]


def _rows(seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    rows = []
    for i in range(400):
        # many events share a second (ties in time); the user's events span two days
        ts = T0 + timedelta(seconds=rnd.randrange(0, 2 * 86400, 7))
        etype = rnd.choice(TYPES)
        fields: dict[str, Any] = {
            "device_type": rnd.choice(DEVICES),
            "os": rnd.choice(SYSTEMS),
            "browser": rnd.choice(BROWSERS),
            "country": rnd.choice(COUNTRIES),
            "city": rnd.choice(CITIES),
            "event_id": f"{seed}-{i:04d}",
        }
        if etype in ("page_view", "click"):
            fields["url"] = rnd.choice(URLS) if rnd.random() > 0.05 else None
        if etype == "purchase":
            fields["order_id"] = f"o{i}"
            fields["revenue"] = rnd.choice([0.01, 19.99, 1e15, -1e15 + 0.5, None, 7.0])
        rows.append(event(USER, ts, etype, **fields))
    # another user and another project with the same id: never counted
    rows.append(event("someone else", T0, device_type="desktop"))
    rows.append(event(USER, T0 - timedelta(days=9), project_id="other", device_type="x"))
    return rows


def _top(rows: list[dict[str, Any]], keys: tuple[str, ...], limit: int) -> list[tuple[Any, int]]:
    counts = Counter(tuple(r.get(k) for k in keys) for r in rows)

    def order(item: tuple[tuple[Any, ...], int]) -> tuple[Any, ...]:
        group, n = item
        return (-n, *((v is None, "" if v is None else v) for v in group))

    return sorted(counts.items(), key=order)[:limit]


def _iso(ts: Any) -> str:
    return ts.isoformat() + "Z"


def test_profile_equals_a_python_oracle(load) -> None:
    rows = _rows(1) + _rows(2)
    store = load(rows)
    mine = [r for r in rows if r["user_id"] == USER and r["project_id"] == PROJECT]
    profile = user_profile(store, PROJECT, USER, recent=25, top_n=4)

    assert profile["total_events"] == len(mine)
    assert profile["first_seen"] == _iso(min(r["ts"] for r in mine))
    assert profile["last_seen"] == _iso(max(r["ts"] for r in mine))
    revenues = [r.get("revenue") for r in mine if r["event_type"] == "purchase"]
    assert profile["total_revenue"] == math.fsum(v for v in revenues if v is not None)

    by_type = _top(mine, ("event_type",), len(mine))
    assert list(profile["events_by_type"].items()) == [(t, n) for (t,), n in by_type]
    views = [r for r in mine if r["event_type"] == "page_view" and r.get("url") is not None]
    assert profile["top_pages"] == [{"url": u, "views": n} for (u,), n in _top(views, ("url",), 4)]
    assert profile["devices"] == [
        {"device_type": d, "os": o, "browser": b, "events": n}
        for (d, o, b), n in _top(mine, ("device_type", "os", "browser"), 4)
    ]
    assert profile["locations"] == [
        {"country": c, "city": ci, "events": n} for (c, ci), n in _top(mine, ("country", "city"), 4)
    ]
    recent = sorted(mine, key=lambda r: r["event_id"])
    recent.sort(key=lambda r: r["ts"], reverse=True)  # stable: ties by event_id ascending
    assert [e["event_id"] for e in profile["recent_events"]] == [r["event_id"] for r in recent[:25]]
    assert [e["timestamp"] for e in profile["recent_events"]] == [
        _iso(r["ts"]) for r in recent[:25]
    ]


def test_a_profile_reads_the_store_three_times_not_once_per_list(load, monkeypatch) -> None:
    """The identity probe, the user's rows, the newest events: every list is counted from the
    rows the sessions need anyway (before, nine queries, each a scan of the events table)."""
    store = load(_rows(3))
    calls: list[str] = []
    for name in ("query", "query_arrow"):
        real = getattr(store, name)

        def counted(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            calls.append(args[0])
            return _real(*args, **kwargs)

        monkeypatch.setattr(store, name, counted)
    profile = user_profile(store, PROJECT, USER)
    assert profile["total_events"] == 400
    assert len(calls) <= 3, calls
