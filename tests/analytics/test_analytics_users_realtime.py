from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from analytics_data import PROJECT, T0, event

from avila.analytics import erase_user, realtime, user_profile
from avila.errors import NotFound


def test_profile_and_erase(load):
    store = load(
        [
            event(
                "u1",
                T0,
                url="/a",
                browser="Chrome",
                os="Linux",
                device_type="desktop",
                country="BR",
                city="Recife",
            ),
            event(
                "u1",
                T0 + timedelta(minutes=5),
                url="/a",
                browser="Chrome",
                os="Linux",
                device_type="desktop",
                country="BR",
                city="Recife",
            ),
            event("u1", T0 + timedelta(hours=2), "purchase", order_id="o1", revenue=10.5),
            event("u2", T0, url="/b"),
            event("u1", T0, url="/x", project_id="other"),
        ]
    )
    profile = user_profile(store, PROJECT, "u1")
    assert profile["first_seen"] == "2024-03-01T00:00:00Z"
    assert profile["last_seen"] == "2024-03-01T02:00:00Z"
    assert profile["total_events"] == 3
    assert profile["sessions"] == 2
    assert profile["total_revenue"] == 10.5
    assert profile["events_by_type"] == {"page_view": 2, "purchase": 1}
    assert profile["top_pages"] == [{"url": "/a", "views": 2}]
    assert profile["devices"][0] == {
        "device_type": "desktop",
        "os": "Linux",
        "browser": "Chrome",
        "events": 2,
    }
    assert profile["locations"][0] == {"country": "BR", "city": "Recife", "events": 2}
    assert [e["event_type"] for e in profile["recent_events"]] == [
        "purchase",
        "page_view",
        "page_view",
    ]
    assert erase_user(store, PROJECT, "u1") == {"deleted_events": 3}
    with pytest.raises(NotFound):
        user_profile(store, PROJECT, "u1")
    assert erase_user(store, PROJECT, "u1") == {"deleted_events": 0}
    assert user_profile(store, "other", "u1")["total_events"] == 1
    assert user_profile(store, PROJECT, "u2")["total_events"] == 1


def test_realtime_windows_by_receive_time(load):
    now = datetime(2024, 3, 1, 12, 0, 0)
    rows = [
        event("a", now - timedelta(days=3), url="/late", received_at=now - timedelta(seconds=10)),
        event("b", now - timedelta(seconds=60), url="/x", received_at=now - timedelta(seconds=60)),
        event("b", now, "click", received_at=now - timedelta(minutes=4)),
        event("c", now, received_at=now - timedelta(minutes=15)),
        event("d", now, received_at=now - timedelta(minutes=15, microseconds=1)),
        event("e", now, received_at=now + timedelta(seconds=1)),
        event("f", now, received_at=now, project_id="other"),
    ]
    store = load(rows)
    got = realtime(store, PROJECT, {"now": now.isoformat() + "Z"})
    assert got["events_last_minute"] == 2
    assert got["events_last_5_minutes"] == 3
    assert got["events_last_15_minutes"] == 4
    assert got["active_users_last_minute"] == 2
    assert got["active_users_last_5_minutes"] == 2
    assert got["active_users_last_15_minutes"] == 3
    assert got["events_per_second"] == pytest.approx(2 / 60)
    assert got["top_pages"] == [{"url": "/late", "views": 1}, {"url": "/x", "views": 1}]
    assert got["events_by_type"] == {"page_view": 2, "click": 1}
