"""Edge cases of paths, lifecycle, stickiness, RFM, real time, user profiles and funnel
breakdowns / dropped users against independent oracles (plain Python and pandas, written from
docs/analytics.md and docs/users.md, never calling the code under test), on a real store of
every backend; and bad query input through the real HTTP server.

Protocol, fixed before running: data come from fixed seeds; expected answers come from the
documented semantics only (journey_oracles.py for paths / lifecycle / stickiness, which follow
PostHog's definitions; analytics_oracles.py for funnel levels; ``math.fsum`` for revenue sums).

Edge cases: local times before 1970-01-01 (west and east of UTC: New York, Kathmandu +05:45),
DST changes (Sao Paulo 2018, Pacific/Chatham +12:45/+13:45 in 2024), ties in timestamps,
duplicates, unicode and 3,000-character values, null / empty / "Other" breakdown values,
revenue of +-1e15 beside cents, reports over more than 64 periods (lifecycle's second SQL
shape), instants at the ends of what a ``datetime`` holds, and every kind of bad field.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from analytics_data import OTHER_PROJECT, PROJECT, event, to_table
from analytics_oracles import by_user, funnel_counts, in_range, matches
from journey_oracles import lifecycle_oracle, paths_oracle, stickiness_oracle

from avila.analytics import funnel, funnel_dropped, realtime, rfm, user_profile, user_segment
from avila.analytics.lifecycle import lifecycle
from avila.analytics.paths import paths
from avila.analytics.stickiness import stickiness
from avila.errors import ValidationFailed
from avila.storage.base import Store
from avila.testing import ServerProcess

# --- shared data --------------------------------------------------------------------------

#: Windows of generated events: across the Unix epoch (and New York's DST end of 1969-10-26),
#: Sao Paulo's DST start (2018-11-04) and Chatham's DST end (2024-04-07).
WINDOWS = [
    (datetime(1969, 10, 15), datetime(1970, 2, 10)),
    (datetime(2018, 10, 20), datetime(2018, 11, 15)),
    (datetime(2024, 3, 25), datetime(2024, 4, 20)),
]
LONG = "x" * 3000
URLS = ["/", "/ü", "/a", LONG, ""]
TYPES = ["page_view"] * 3 + ["click", "purchase", "custom", "login", "add_to_cart"]


def _rows(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for lo, hi in WINDOWS:
        quarters = int((hi - lo).total_seconds() // 900)
        for u in range(30):
            user = f"u{u}" if u % 4 else f"{lo.year}-ü{u}"  # most users in every window
            for _ in range(rng.randint(1, 12)):
                ts = lo + timedelta(minutes=15 * rng.randint(0, quarters))  # ties are common
                ts += timedelta(microseconds=rng.choice([0, 0, 1]))
                etype = rng.choice(TYPES)
                fields: dict[str, Any] = {}
                if etype in ("page_view", "click"):
                    fields["url"] = rng.choice(URLS)
                elif etype == "purchase":
                    fields["order_id"] = f"o{rng.randint(0, 9)}"
                    fields["revenue"] = 1.0
                elif etype == "custom":
                    fields["event_name"] = rng.choice(["Other", "x"])
                elif etype == "add_to_cart":
                    fields["product_id"] = "p"
                rows.append(event(user, ts, etype, **fields))
                if rng.random() < 0.05:  # a duplicate delivery
                    rows.append(dict(rows[-1]))
    rows.append(event("stranger", datetime(1970, 1, 1), project_id=OTHER_PROJECT))
    return rows


ROWS = _rows(5)


@pytest.fixture(scope="module")
def data_store(module_store: Store) -> Store:
    module_store.append_events(to_table(ROWS))
    return module_store


def _lifecycle_table(got: dict[str, Any]) -> dict[str, dict[str, int]]:
    statuses = ("new", "returning", "resurrecting", "dormant")
    return {p["period_start"]: {k: p[k] for k in statuses} for p in got["periods"]}


PAGE_PREFIX = {"condition_type": "page_view", "condition_value": "/", "match": "prefix"}
# zone, start, end
CASES = [
    ("America/New_York", datetime(1969, 10, 20, 3), datetime(1970, 2, 5)),
    ("Asia/Kathmandu", datetime(1969, 12, 1), datetime(1970, 2, 1)),
    ("UTC", datetime(1969, 12, 31, 23), datetime(1970, 1, 1, 1)),
    ("America/Sao_Paulo", datetime(2018, 10, 25, 3), datetime(2018, 11, 12)),
    ("Pacific/Chatham", datetime(2024, 3, 30), datetime(2024, 4, 15, 11, 45)),
    ("UTC", datetime(2030, 1, 1), datetime(2030, 1, 2)),  # empty
]


# --- stickiness and lifecycle ---------------------------------------------------------------


@pytest.mark.parametrize(("tz", "start", "end"), CASES)
@pytest.mark.parametrize("period", ["week", "month"])
@pytest.mark.parametrize("cond", [None, PAGE_PREFIX], ids=["any", "page"])
def test_stickiness_matches_oracle_before_1970_and_across_dst(
    data_store: Store,
    tz: str,
    start: datetime,
    end: datetime,
    period: str,
    cond: dict[str, Any] | None,
) -> None:
    # Before the fix a week before 1970 failed on both engines: the day of the week was
    # (day + 3) % 7, negative for negative days, and a bit shift by it is an error.
    body: dict[str, Any] = {"period": period, "start_time": start, "end_time": end, "timezone": tz}
    if cond:
        body["event"] = cond
    got = stickiness(data_store, PROJECT, body)
    table = {p["period_start"]: [d["users"] for d in p["distribution"]] for p in got["periods"]}
    assert table == stickiness_oracle(ROWS, start, end, period, tz, cond)


@pytest.mark.parametrize(("tz", "start", "end"), CASES)
@pytest.mark.parametrize("period", ["day", "week", "month"])
def test_lifecycle_matches_oracle_before_1970_and_across_dst(
    data_store: Store, tz: str, start: datetime, end: datetime, period: str
) -> None:
    body = {"period": period, "start_time": start, "end_time": end, "timezone": tz}
    got = lifecycle(data_store, PROJECT, body)
    assert _lifecycle_table(got) == lifecycle_oracle(ROWS, start, end, period, tz)


def test_lifecycle_of_many_periods_does_not_make_old_users_new_on_1970_01_01(
    load: Callable[..., Store],
) -> None:
    # More than 64 days: the activity query. A user first seen before its scan window has no
    # first-period row; ClickHouse's LEFT JOIN filled it with 0 (= 1970-01-01), so on chdb
    # everyone active on that day who was seen long before counted as "new".
    rows = [
        event("old", datetime(1969, 9, 1)),
        event("old", datetime(1969, 12, 31, 12)),
        event("old", datetime(1970, 1, 1, 12)),
        event("gap", datetime(1969, 9, 2)),
        event("gap", datetime(1970, 1, 1, 13)),
        event("new", datetime(1970, 1, 1, 14)),
    ]
    store = load(rows)
    start, end = datetime(1969, 11, 1), datetime(1970, 2, 1)
    got = _lifecycle_table(
        lifecycle(store, PROJECT, {"period": "day", "start_time": start, "end_time": end})
    )
    assert got["1970-01-01"] == {"new": 1, "returning": 1, "resurrecting": 1, "dormant": 0}
    assert got == lifecycle_oracle(rows, start, end, "day", "UTC")


# --- paths --------------------------------------------------------------------------------

PURCHASE = {"condition_type": "purchase", "condition_value": ""}
OTHER_NAME = {"condition_type": "custom", "condition_value": "Other"}


@pytest.mark.parametrize(("tz", "start", "end"), CASES[::2])
@pytest.mark.parametrize(
    ("start_c", "end_c", "steps", "limit"),
    [
        (None, None, 5, 2),
        (PAGE_PREFIX, None, 20, 1),
        (None, PURCHASE, 4, 50),
        (PAGE_PREFIX, PURCHASE, 5, 3),
        (OTHER_NAME, None, 2, 1),
    ],
)
def test_paths_match_oracle_with_ties_long_names_and_cut_ties(
    data_store: Store,
    tz: str,
    start: datetime,
    end: datetime,
    start_c: dict[str, Any] | None,
    end_c: dict[str, Any] | None,
    steps: int,
    limit: int,
) -> None:
    body: dict[str, Any] = {
        "start_time": start,
        "end_time": end,
        "steps": steps,
        "limit_per_step": limit,
    }
    if start_c:
        body["start"] = start_c
    if end_c:
        body["end"] = end_c
    got = paths(data_store, PROJECT, body)
    want = paths_oracle(ROWS, start, end, steps, start_c, end_c, None, limit)
    assert got["users"] == want["users"]
    assert {(n["step"], n["name"]): n["users"] for n in got["nodes"]} == want["nodes"]
    assert {(k["source"], k["target"]): k["users"] for k in got["links"]} == want["links"]


# --- revenue of one user and RFM ----------------------------------------------------------

#: Revenue of +-1e15 (the API's bound) beside many cents, and a refund of all but 1.0.
BIG_REVENUES = [1e15, -1e15, 1e15, -1e15, 123.45, 999999999999999.0] + [0.01] * 1000


def _revenue_rows() -> list[dict[str, Any]]:
    day = datetime(2024, 3, 1, 10)
    order = list(BIG_REVENUES)
    random.Random(3).shuffle(order)
    rows = [
        event("big", day + timedelta(seconds=i), "purchase", order_id=f"o{i}", revenue=r)
        for i, r in enumerate(order)
    ]
    rows.append(event("big", day + timedelta(hours=2), "purchase", revenue=-999999999999998.0))
    rows.append(event("small", day, "purchase", order_id="s", revenue=5.0))
    return rows


def test_profile_and_rfm_revenue_keep_cents_next_to_huge_values(
    load: Callable[..., Store],
) -> None:
    # A plain double sum gave 125.5 (DuckDB) or 132.875 (chdb) for the profile, and
    # 130.49... / 132.645 for the RFM monetary value, instead of 134.45.
    rows = _revenue_rows()
    store = load(rows)
    want = math.fsum(r["revenue"] for r in rows if r["user_id"] == "big")
    assert want == pytest.approx(134.45, abs=1e-9)
    profile = user_profile(store, PROJECT, "big")
    assert profile["total_revenue"] == pytest.approx(want, rel=1e-12, abs=1e-6)
    segment = user_segment(store, PROJECT, "big", {"reference_date": "2024-03-02T00:00:00Z"})
    assert segment["frequency"] == len(BIG_REVENUES) + 1
    assert segment["monetary"] == pytest.approx(want, rel=1e-12, abs=1e-6)
    assert rfm(store, PROJECT, {"reference_date": "2024-03-02T00:00:00Z"})["users_scored"] == 2


# --- funnel breakdowns and dropped users ----------------------------------------------------

BREAKDOWN_VALUES = ["Other", "", None, "ü🚀", LONG, "A", "a", "Chrome"]
FUNNEL_STEPS = [
    {"condition_type": "page_view", "condition_value": "/"},
    {"condition_type": "click", "condition_value": ""},
    {"condition_type": "purchase"},
]


def _funnel_rows(seed: int) -> list[dict[str, Any]]:
    """Users across the epoch; step-1 candidates never tie within a user (so "the first
    step-1 event" is one event), other events tie freely; duplicates; "Other" as a value."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    t0 = datetime(1969, 12, 31, 20)
    for u in range(120):
        user = rng.choice(["u", "ü", "😀", "Other", "a b"]) + str(u)
        for i in range(rng.randint(1, 8)):
            ts = t0 + timedelta(minutes=30 * rng.randint(0, 20), microseconds=u * 100 + i)
            etype = rng.choice(["page_view", "page_view", "click", "purchase", "login"])
            fields: dict[str, Any] = {"browser": rng.choice(BREAKDOWN_VALUES)}
            if etype in ("page_view", "click"):
                fields["url"] = rng.choice(["/", "/a"])
            elif etype == "purchase":
                fields.update(order_id="o", revenue=1e15)
            rows.append(event(user, ts, etype, **fields))
            if rng.random() < 0.1:
                rows.append(dict(rows[-1]))
    rows.append(event("stranger", t0, project_id=OTHER_PROJECT))
    return rows


FUNNEL_ROWS = _funnel_rows(3)


@pytest.fixture(scope="module")
def funnel_store(module_store: Store) -> Store:
    module_store.append_events(to_table(FUNNEL_ROWS))
    return module_store


@pytest.mark.parametrize("mode", ["ordered", "strict_order", "strict_increase", "unordered"])
@pytest.mark.parametrize("limit", [1, 3, 100])
def test_funnel_breakdown_and_dropped_users_match_oracle(
    funnel_store: Store, mode: str, limit: int
) -> None:
    start, end = datetime(1969, 12, 31, 21), datetime(1970, 1, 1, 6)
    query: dict[str, Any] = {
        "steps": FUNNEL_STEPS,
        "start_time": start,
        "end_time": end,
        "mode": mode,
        "breakdown": "browser",
        "breakdown_limit": limit,
        "conversion_window_seconds": 7200,
    }
    got = funnel(funnel_store, PROJECT, query)
    window = timedelta(seconds=7200)
    counts, _, _, levels = funnel_counts(
        FUNNEL_ROWS, PROJECT, start, end, FUNNEL_STEPS, window, mode
    )
    assert [s["count"] for s in got["steps"]] == counts
    # Breakdown value: the user's first step-1 event (unordered: first event of any step).
    value: dict[str, Any] = {}
    for user, events in by_user(in_range(FUNNEL_ROWS, PROJECT, start, end)).items():
        if levels[user] >= 1:
            first = next(
                e
                for e in events
                if any(
                    matches(e, s)
                    for s in (FUNNEL_STEPS if mode == "unordered" else [FUNNEL_STEPS[0]])
                )
            )
            value[user] = first.get("browser")
    n = Counter(value.values())
    ranked = sorted(n, key=lambda v: (-n[v], v is None, str(v)))
    keep = ranked[:limit]

    def step_counts(users: list[str]) -> list[int]:
        return [sum(levels[u] >= k for u in users) for k in (1, 2, 3)]

    want = [(v, step_counts([u for u in value if value[u] == v])) for v in keep]
    if len(ranked) > limit:
        want.append(("Other", step_counts([u for u in value if value[u] not in keep])))
    assert [(b["value"], [s["count"] for s in b["steps"]]) for b in got["breakdowns"]] == want
    for step in (1, 2):
        dropped = sorted(u for u, level in levels.items() if level == step)
        for shown in (1, 1000):
            answer = funnel_dropped(funnel_store, PROJECT, {**query, "step": step, "limit": shown})
            assert answer["total"] == len(dropped) == got["steps"][step]["drop_off"]
            assert [u["user_id"] for u in answer["users"]] == dropped[:shown]


# --- real time ------------------------------------------------------------------------------


def test_realtime_windows_are_closed_at_both_ends(load: Callable[..., Store]) -> None:
    now = datetime(2024, 3, 1, 12)
    rows = []
    for i, age in enumerate(
        [timedelta(0), timedelta(minutes=1), timedelta(minutes=1, microseconds=1)]
        + [timedelta(minutes=5), timedelta(minutes=15), timedelta(minutes=15, microseconds=1)]
        + [-timedelta(microseconds=1)]  # after now: not counted
    ):
        got_at = now - age
        rows.append(event(f"u{i % 3}", datetime(1969, 1, 1), url="/ü", received_at=got_at))
    rows.append(event("r", now, received_at=now, metadata='{"source": "backfill"}'))
    store = load(rows)
    got = realtime(store, PROJECT, {"now": now, "top_n": 1})
    ages = [now - r["received_at"] for r in rows[:-1]]

    def within(d: timedelta) -> list[int]:
        return [i for i, a in enumerate(ages) if timedelta(0) <= a <= d]

    m1, m5, m15 = (within(timedelta(minutes=m)) for m in (1, 5, 15))
    assert (got["events_last_minute"], got["events_last_5_minutes"]) == (len(m1), len(m5))
    assert got["events_last_15_minutes"] == len(m15)
    assert got["active_users_last_minute"] == len({i % 3 for i in m1})
    assert got["active_users_last_15_minutes"] == len({i % 3 for i in m15})
    assert got["top_pages"] == [{"url": "/ü", "views": len(m5)}]
    with pytest.raises(ValidationFailed) as caught:
        realtime(store, PROJECT, {"now": "0001-01-01T00:00:00Z"})
    assert caught.value.code == "invalid_time_range"
    assert caught.value.details[0]["path"] == "now"


# --- bad input through the HTTP server ----------------------------------------------------

KEY = "reports-edge-key"
STEPS = [{"condition_type": "page_view"}, {"condition_type": "purchase"}]
POSTS: dict[str, dict[str, Any]] = {
    "/api/v1/analytics/funnel": {"steps": STEPS, "trend": "week"},
    "/api/v1/analytics/funnel/dropped": {"steps": STEPS, "step": 1},
    "/api/v1/analytics/paths": {},
    "/api/v1/analytics/lifecycle": {"period": "month"},
    "/api/v1/analytics/stickiness": {"period": "month"},
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    data_dir: Path = tmp_path_factory.mktemp("reports-edge")
    server = ServerProcess(data_dir, env={"API_KEYS": KEY, "RATE_LIMIT_PER_MINUTE": "0"})
    server.start(timeout=120)  # the machine may be busy; startup time is not under test
    try:
        with httpx.Client(base_url=server.url, headers={"x-api-key": KEY}, timeout=60) as c:
            one = {
                "event_id": "e1",
                "user_id": "u",
                "timestamp": "2024-03-01T00:00:00Z",
                "event_type": {"type": "Purchase", "data": {"order_id": "o", "revenue": 1.0}},
            }
            assert c.post("/api/v1/events/batch", json={"events": [one]}).status_code == 202
            yield c
    finally:
        server.stop()


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    # ``1e999`` is sent as the JSON number it is (json.dumps would write "Infinity").
    text = json.dumps(body).replace('"__1e999__"', "1e999")
    return client.post(path, content=text, headers={"content-type": "application/json"})


def _assert_422(response: httpx.Response, path: str, code: str | None = None) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    if code is not None:
        assert error["code"] == code, error
    assert path in [d.get("path") for d in error["details"]], error


#: Instants a datetime cannot hold once converted or shifted by the reports' margins.
EXTREME_TIMES = [
    ("start_time", "0001-01-01T00:00:00+14:00"),  # before year 1 in UTC
    ("start_time", "9999-12-31T23:59:59-14:00"),  # after year 9999 in UTC
    ("end_time", "0001-01-02T00:00:00Z"),  # the default start (30 days before) is year 0
    ("end_time", "9999-12-31T23:59:59.999999Z"),
    ("end_time", "9999-12-31T23:59:59.999999-12:00"),
]


@pytest.mark.parametrize("route", list(POSTS))
@pytest.mark.parametrize(("field", "value"), EXTREME_TIMES)
@pytest.mark.parametrize("tz", ["UTC", "Pacific/Kiritimati", "Etc/GMT+12"])
def test_times_at_the_ends_of_the_calendar_are_422_not_500(
    client: httpx.Client, route: str, field: str, value: str, tz: str
) -> None:
    body = {**POSTS[route], field: value, "timezone": tz}
    if route == "/api/v1/analytics/paths":
        del body["timezone"]
    _assert_422(_post(client, route, body), field, "invalid_time_range")


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00"])
def test_rfm_reference_date_at_the_start_of_the_calendar_is_422(
    client: httpx.Client, value: str
) -> None:
    body = {"reference_date": value}
    _assert_422(_post(client, "/api/v1/analytics/rfm", body), "reference_date")
    response = client.get("/api/v1/users/u/segment", params={"reference_date": value})
    assert response.status_code == 422, response.text


def test_reports_at_the_first_and_last_queryable_days_answer(client: httpx.Client) -> None:
    # The two days at each end of the calendar stay queryable in every zone.
    for route, body in POSTS.items():
        for lo, hi in [
            ("0001-01-03T00:00:00Z", "0001-01-05T00:00:00Z"),
            ("9999-12-28T00:00:00Z", "9999-12-30T00:00:00Z"),
        ]:
            for tz in ["Pacific/Kiritimati", "Etc/GMT+12", "UTC"]:
                full = {**body, "start_time": lo, "end_time": hi}
                if route != "/api/v1/analytics/paths":
                    full["timezone"] = tz
                response = _post(client, route, full)
                assert response.status_code == 200, (route, tz, response.text)


BAD_FIELDS: list[tuple[str, str, Any]] = [
    # route, field, value
    *[
        (route, field, value)
        for route in POSTS
        for field, value in [
            ("start_time", "__1e999__"),
            ("start_time", 5),
            ("start_time", "2024-13-01"),
            ("end_time", "yesterday"),
            ("timezone", 5),
            ("filters", "x"),
            ("filters", [{"property": "browser", "operator": "nope"}]),
            ("filters", [{"property": 7}]),
        ]
        if not (route.endswith("paths") and field == "timezone")
    ],
    ("/api/v1/analytics/funnel", "steps", "x"),
    ("/api/v1/analytics/funnel", "conversion_window_seconds", 0),
    ("/api/v1/analytics/funnel", "conversion_window_seconds", 10**30),
    ("/api/v1/analytics/funnel", "conversion_window_seconds", "__1e999__"),
    ("/api/v1/analytics/funnel", "breakdown_limit", -1),
    ("/api/v1/analytics/funnel", "breakdown_limit", 101),
    ("/api/v1/analytics/funnel", "mode", "bogus"),
    ("/api/v1/analytics/funnel", "trend", "month"),
    ("/api/v1/analytics/funnel", "breakdown", ""),
    ("/api/v1/analytics/funnel/dropped", "step", 0),
    ("/api/v1/analytics/funnel/dropped", "step", 10**30),
    ("/api/v1/analytics/funnel/dropped", "limit", -1),
    ("/api/v1/analytics/funnel/dropped", "limit", 1001),
    ("/api/v1/analytics/funnel/dropped", "limit", 1.5),
    ("/api/v1/analytics/paths", "steps", 1),
    ("/api/v1/analytics/paths", "steps", 21),
    ("/api/v1/analytics/paths", "steps", "__1e999__"),
    ("/api/v1/analytics/paths", "limit_per_step", -1),
    ("/api/v1/analytics/paths", "limit_per_step", 10**30),
    ("/api/v1/analytics/paths", "include", "page_view"),
    ("/api/v1/analytics/paths", "include", [""]),
    ("/api/v1/analytics/paths", "start", {}),
    ("/api/v1/analytics/paths", "end", {"condition_type": "purchase", "match": "glob"}),
    ("/api/v1/analytics/lifecycle", "period", "year"),
    ("/api/v1/analytics/lifecycle", "event", {"condition_type": 1}),
    ("/api/v1/analytics/stickiness", "period", "day"),
    ("/api/v1/analytics/stickiness", "period", None),
    ("/api/v1/analytics/rfm", "window_days", 0),
    ("/api/v1/analytics/rfm", "window_days", -1),
    ("/api/v1/analytics/rfm", "window_days", 10**30),
    ("/api/v1/analytics/rfm", "window_days", "__1e999__"),
    ("/api/v1/analytics/rfm", "reference_date", "soon"),
]


@pytest.mark.parametrize(("route", "field", "value"), BAD_FIELDS)
def test_every_bad_field_is_422_with_its_path(
    client: httpx.Client, route: str, field: str, value: Any
) -> None:
    body = {**POSTS.get(route, {}), field: value}
    response = _post(client, route, body)
    assert response.status_code == 422, response.text
    paths_given = [d.get("path", "") for d in response.json()["error"]["details"]]
    assert any(p == field or p.startswith((field + ".", field + "[")) for p in paths_given), (
        response.text
    )


SEMANTIC: list[tuple[str, dict[str, Any], str, str]] = [
    # route, body, code, path
    ("/api/v1/analytics/lifecycle", {"timezone": "Mars/Olympus"}, "unknown_timezone", "timezone"),
    ("/api/v1/analytics/stickiness", {"timezone": "../etc/passwd"}, "unknown_timezone", "timezone"),
    ("/api/v1/analytics/funnel", {"steps": STEPS, "timezone": ""}, "unknown_timezone", "timezone"),
    (
        "/api/v1/analytics/lifecycle",
        {"start_time": "2024-03-02T00:00:00Z", "end_time": "2024-03-01T00:00:00Z"},
        "invalid_time_range",
        "end_time",
    ),
    ("/api/v1/analytics/paths", {"include": ["nope"]}, "unknown_event_type", "include[0]"),
    (
        "/api/v1/analytics/paths",
        {"start": {"condition_type": "page_view", "condition_value": "(", "match": "regex"}},
        "invalid_regex",
        "start.condition_value",
    ),
    (
        "/api/v1/analytics/stickiness",
        {"event": {"condition_type": "login", "condition_value": "x"}},
        "condition_value_unsupported",
        "event.condition_value",
    ),
    (
        "/api/v1/analytics/funnel/dropped",
        {"steps": STEPS, "step": 2},
        "funnel_step_out_of_range",
        "step",
    ),
    (
        "/api/v1/analytics/funnel",
        {"steps": STEPS, "breakdown": "properties.a b"},
        "unknown_property",
        "breakdown",
    ),
    (
        "/api/v1/analytics/rfm",
        {"filters": [{"property": "revenue", "value": "abc"}]},
        "invalid_filter",
        "filters[0].value",
    ),
]


@pytest.mark.parametrize(("route", "body", "code", "path"), SEMANTIC)
def test_semantic_errors_name_the_field(
    client: httpx.Client, route: str, body: dict[str, Any], code: str, path: str
) -> None:
    _assert_422(_post(client, route, body), path, code)


def test_cohort_whose_horizon_passes_the_calendar_answers(client: httpx.Client) -> None:
    # end + (periods + 2) months is past year 9999: the scan horizon saturates (was a 500)
    body = {
        "start_time": "9999-11-30T00:00:00Z",
        "end_time": "9999-12-30T00:00:00Z",
        "period": "month",
        "periods": 400,
    }
    for tz in ["UTC", "Pacific/Kiritimati", "Etc/GMT+12"]:
        response = _post(client, "/api/v1/analytics/cohort", {**body, "timezone": tz})
        assert response.status_code == 200, (tz, response.text)
        assert response.json()["cohorts"] == []
