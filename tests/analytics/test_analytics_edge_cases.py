"""Edge cases of trends, the overview, funnel breakdowns and sessions against independent
oracles (plain Python and pandas, written from docs/analytics.md, never calling the code under
test), on a real store of every backend.

Protocol, fixed before running: the data are generated with a fixed seed; the expected answer
of each report is computed from the documented semantics only:

* trends: buckets are the local calendar hour / day / ISO week (Monday) / month in
  ``timezone`` of each event, zero-filled from the bucket of ``start_time`` to that of
  ``end_time`` minus 1 µs; with a breakdown, the ``breakdown_limit`` values with most events
  (ties: non-null before null, then by text) and then one ``"Other"`` series of the rest, whose
  ``users`` are distinct users of the merged values. A value that is itself the text
  ``"Other"`` is a value like any other: it is not merged with the rest.
* overview: distinct users per local day / ISO week / month; counts, pages, referrers,
  countries and devices ranked by count, ties by key; revenue is the sum of the purchases'
  revenue (oracle: ``math.fsum``, the correctly rounded sum).
* sessions: ``sessions_oracle`` (analytics_oracles.py), grouped by the local date of each
  session's first event.

Edge cases: local times before 1970-01-01 (a client clock reset to the epoch, seen west of
UTC), DST changes (America/New_York, Europe/Berlin, Australia/Lord_Howe's 30-minute change),
ranges starting and ending mid-bucket, empty ranges, NULL and unicode values, a value named
"Other", duplicates, ties, revenue of +-1e15 beside cents.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from analytics_data import OTHER_PROJECT, PROJECT, event, to_table
from analytics_oracles import funnel_counts, matches, sessions_oracle

from avila.analytics import funnel, overview, sessions, trends
from avila.analytics.rollup_reads import overview_aggregates
from avila.storage import open_store
from avila.storage.base import Store

# --- shared data --------------------------------------------------------------------------

BROWSERS = ["Chrome", "Other", "Ünïcödé 🚀", None, "Firefox", "édge", "Edge", ""]
COUNTRIES = ["DE", "de", "Éire", "日本", "US", None]
DEVICES = ["desktop", "mobile", None, "tablet"]
URLS = ["/", "/a", "/a/b", "/ü", "/b", "/c"]
REFERRERS = ["https://google.com/", "https://t.co/x", None, "ünïcode.example"]
TYPES = ["page_view", "page_view", "page_view", "click", "purchase", "custom", "login"]
#: windows of generated events: around the Unix epoch (New York's DST end of 1969-10-26
#: included), around Berlin's and Lord Howe's spring 2024 changes (2024-03-31, 2024-04-07)
#: and Berlin's autumn change (2024-10-27, with events in the repeated hour)
WINDOWS = [
    (datetime(1969, 10, 15), datetime(1970, 1, 8)),
    (datetime(2024, 3, 24), datetime(2024, 4, 13)),
    (datetime(2024, 10, 24), datetime(2024, 11, 4)),
]


def _rows(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for lo, hi in WINDOWS:
        span = int((hi - lo).total_seconds() // 60)
        for u in range(40):
            user = f"u{u:02d}-{lo.year}" if u % 3 else f"ü{u:02d}"  # some users in all windows
            browser = rng.choice(BROWSERS)
            country = rng.choice(COUNTRIES)
            for _ in range(rng.randint(1, 25)):
                ts = lo + timedelta(minutes=rng.randint(0, span), microseconds=rng.choice([0, 1]))
                etype = rng.choice(TYPES)
                fields: dict[str, Any] = {
                    "browser": browser if rng.random() < 0.8 else rng.choice(BROWSERS),
                    "country": country,
                    "device_type": rng.choice(DEVICES),
                    "referrer": rng.choice(REFERRERS),
                }
                if etype in ("page_view", "click"):
                    fields["url"] = rng.choice(URLS)
                elif etype == "purchase":
                    fields["order_id"] = f"o{rng.randint(0, 99)}"
                    fields["revenue"] = round(rng.uniform(0, 500), 2)
                elif etype == "custom":
                    fields["event_name"] = "x"
                rows.append(event(user, ts, etype, **fields))
                if rng.random() < 0.05:  # a duplicate delivery
                    rows.append(dict(rows[-1]))
    # the epoch itself and just after it (a reset client clock), and Berlin's repeated hour
    for i, ts in enumerate([datetime(1970, 1, 1), datetime(1970, 1, 1, 0, 30)]):
        rows.append(event(f"epoch{i}", ts, url="/", browser="Other"))
    for minute in (0, 30, 59, 60, 90, 119):  # 2024-10-27 02:00-02:59 local, twice
        ts = datetime(2024, 10, 27) + timedelta(minutes=minute)
        rows.append(event("dst", ts, url="/", browser="Chrome", country="DE"))
    rows.append(event("stranger", datetime(1970, 1, 1, 1), project_id=OTHER_PROJECT, url="/"))
    return rows


ROWS = _rows(7)


@pytest.fixture(scope="module")
def data_store(module_store: Store) -> Store:
    # late events: the first window arrives after the others, in two batches
    later = [r for r in ROWS if r["ts"] >= WINDOWS[1][0]]
    first = [r for r in ROWS if r["ts"] < WINDOWS[1][0]]
    module_store.append_events(to_table(later[::2]))
    module_store.append_events(to_table(later[1::2]))
    module_store.append_events(to_table(first))
    return module_store


def _mine(
    rows: list[dict[str, Any]],
    start: datetime,
    end: datetime,
    keep: Callable[[dict[str, Any]], bool] = lambda r: True,
) -> list[dict[str, Any]]:
    return [r for r in rows if r["project_id"] == PROJECT and start <= r["ts"] < end and keep(r)]


def _local(ts: list[datetime], tz: str) -> pd.Series:
    """Wall time in ``tz`` of naive UTC datetimes (pandas' own conversion)."""
    utc = pd.Series(pd.to_datetime(pd.Series(ts, dtype="datetime64[us]")))
    return utc.dt.tz_localize("UTC").dt.tz_convert(tz).dt.tz_localize(None)


def _labels(local: pd.Series, interval: str) -> list[str]:
    if interval == "hour":
        return list(local.dt.floor("h").dt.strftime("%Y-%m-%dT%H:00"))
    if interval == "day":
        return list(local.dt.floor("D").dt.strftime("%Y-%m-%d"))
    freq = "W-SUN" if interval == "week" else "M"
    return list(local.dt.to_period(freq).dt.start_time.dt.strftime("%Y-%m-%d"))


def _all_labels(start: datetime, end: datetime, tz: str, interval: str) -> list[str]:
    lo, hi = _local([start, end - timedelta(microseconds=1)], tz)
    if interval == "hour":
        stamps = pd.date_range(lo.floor("h"), hi.floor("h"), freq="h")
        return list(stamps.strftime("%Y-%m-%dT%H:00"))
    if interval == "day":
        return list(pd.date_range(lo.floor("D"), hi.floor("D"), freq="D").strftime("%Y-%m-%d"))
    freq = "W-SUN" if interval == "week" else "M"
    periods = pd.period_range(lo.to_period(freq), hi.to_period(freq), freq=freq)
    return list(periods.start_time.strftime("%Y-%m-%d"))


def _ranked(counts: dict[Any, int]) -> list[Any]:
    return sorted(counts, key=lambda v: (-counts[v], v is None, str(v)))


# --- trends -------------------------------------------------------------------------------


class _Merged:
    """The oracle's key of the merged rest: no stored value equals it, not even "Other"."""


MERGED = _Merged()


def trends_oracle(
    rows: list[dict[str, Any]],
    start: datetime,
    end: datetime,
    tz: str,
    interval: str,
    breakdown: str | None,
    limit: int,
    cond: dict[str, Any] | None,
) -> list[tuple[Any, int, list[tuple[str, int, int]]]]:
    """``[(breakdown value, total, [(time, count, users)])]`` in the documented order."""
    mine = _mine(rows, start, end, lambda r: matches(r, cond))
    labels = _labels(_local([r["ts"] for r in mine], tz), interval) if mine else []
    value = [r.get(breakdown) if breakdown else None for r in mine]
    ranked = _ranked(Counter(value)) if breakdown else [None]
    keep = ranked[:limit]
    groups: list[Any] = list(keep) + ([MERGED] if len(ranked) > limit else [])
    cells: dict[Any, dict[str, tuple[int, set[str]]]] = defaultdict(dict)
    for r, label, v in zip(mine, labels, value, strict=True):
        g = v if v in keep else MERGED
        n, users = cells[g].get(label, (0, set()))
        cells[g][label] = (n + 1, users | {r["user_id"]})
    out = []
    for g in groups or [None]:
        data = [
            (t, cells[g].get(t, (0, set()))[0], len(cells[g].get(t, (0, set()))[1]))
            for t in _all_labels(start, end, tz, interval)
        ]
        out.append(("Other" if g is MERGED else g, sum(c[1] for c in data), data))
    return out


PAGE_A = {"condition_type": "page_view", "condition_value": "/a", "match": "prefix"}
PURCHASE = {"condition_type": "purchase", "condition_value": ""}
TREND_CASES = [
    # zone, start, end, interval, breakdown_limit, event condition
    ("America/New_York", datetime(1969, 10, 20, 3, 17), datetime(1970, 1, 4, 5), "day", 2, None),
    ("America/New_York", datetime(1969, 12, 30), datetime(1970, 1, 2, 12, 30), "hour", 3, None),
    ("America/New_York", datetime(1969, 10, 16), datetime(1970, 1, 7), "week", 10, PAGE_A),
    ("America/New_York", datetime(1969, 10, 16), datetime(1970, 1, 7), "month", 1, None),
    ("Australia/Lord_Howe", datetime(2024, 4, 5, 7, 45), datetime(2024, 4, 9), "hour", 2, None),
    ("Australia/Lord_Howe", datetime(2024, 3, 25), datetime(2024, 4, 12), "month", 1, PURCHASE),
    ("Europe/Berlin", datetime(2024, 3, 26, 13), datetime(2024, 4, 11, 10), "week", 3, None),
    ("Europe/Berlin", datetime(2024, 10, 26, 22), datetime(2024, 10, 27, 4), "hour", 4, None),
    ("Europe/Berlin", datetime(2024, 10, 24, 5), datetime(2024, 11, 3, 23), "day", 3, PAGE_A),
    ("UTC", datetime(2024, 5, 1), datetime(2024, 5, 3, 7), "day", 2, None),  # empty range
]


@pytest.mark.parametrize(("tz", "start", "end", "interval", "limit", "cond"), TREND_CASES)
@pytest.mark.parametrize("breakdown", [None, "browser"])
def test_trends_match_oracle_across_dst_and_the_epoch(
    data_store: Store,
    tz: str,
    start: datetime,
    end: datetime,
    interval: str,
    limit: int,
    cond: dict[str, Any] | None,
    breakdown: str | None,
) -> None:
    query: dict[str, Any] = {
        "start_time": start.isoformat() + "Z",
        "end_time": end.isoformat() + "Z",
        "interval": interval,
        "timezone": tz,
        "breakdown_limit": limit,
    }
    if breakdown:
        query["breakdown"] = breakdown
    if cond:
        query["event"] = cond
    got = trends(data_store, PROJECT, query)
    want = trends_oracle(ROWS, start, end, tz, interval, breakdown, limit, cond)
    assert [
        (s["breakdown_value"], s["total"], [(p["time"], p["count"], p["users"]) for p in s["data"]])
        for s in got["series"]
    ] == want


def test_a_value_named_other_is_not_merged_with_the_rest(load: Callable[..., Store]) -> None:
    t = datetime(2024, 3, 1, 10)
    rows = [event(u, t, browser="Other") for u in "abc"]  # the top value is the text "Other"
    rows += [event("d", t, browser="Chrome"), event("d", t, browser="Chrome")]
    rows += [event("e", t, browser="Firefox"), event("a", t, browser="Safari")]
    store = load(rows)
    span = {"start_time": "2024-03-01T00:00:00Z", "end_time": "2024-03-02T00:00:00Z"}
    got = trends(store, PROJECT, {**span, "breakdown": "browser", "breakdown_limit": 2})
    series = [(s["breakdown_value"], s["total"], s["data"][0]["users"]) for s in got["series"]]
    # "Other" (3 events, 3 users), Chrome (2, 1), then the rest: Firefox and Safari (2, 2)
    assert series == [("Other", 3, 3), ("Chrome", 2, 1), ("Other", 2, 2)]
    assert sum(s["total"] for s in got["series"]) == len(rows)


def test_funnel_breakdown_keeps_a_value_named_other_apart(load: Callable[..., Store]) -> None:
    t = datetime(2024, 3, 1, 10)
    rows = []
    for user, browser, converts in [
        ("a", "Other", True),
        ("b", "Other", True),
        ("c", "Other", False),
        ("d", "Chrome", True),
        ("e", "Chrome", False),
        ("f", "Firefox", False),
        ("g", "Safari", True),
        ("h", None, False),
    ]:
        rows.append(event(user, t, url="/", browser=browser))
        if converts:
            rows.append(event(user, t + timedelta(minutes=5), "purchase", order_id=user))
    store = load(rows)
    steps = [
        {"condition_type": "page_view", "condition_value": "/"},
        {"condition_type": "purchase", "condition_value": ""},
    ]
    lo, hi = datetime(2024, 3, 1), datetime(2024, 3, 2)
    got = funnel(
        store,
        PROJECT,
        {
            "steps": steps,
            "start_time": lo.isoformat(),
            "end_time": hi.isoformat(),
            "breakdown": "browser",
            "breakdown_limit": 2,
        },
    )
    _, _, _, levels = funnel_counts(rows, PROJECT, lo, hi, steps, timedelta(days=14), "ordered")
    browser = {r["user_id"]: r.get("browser") for r in rows if r["event_type"] == "page_view"}
    ranked = _ranked(Counter(browser.values()))
    groups: dict[Any, list[str]] = defaultdict(list)
    for user, value in browser.items():
        groups[value if value in ranked[:2] else MERGED].append(user)
    want = [
        ("Other" if g is MERGED else g, [sum(levels[u] >= k for u in groups[g]) for k in (1, 2)])
        for g in [*ranked[:2], MERGED]
    ]
    assert want == [("Other", [3, 2]), ("Chrome", [2, 1]), ("Other", [3, 1])]
    assert [(b["value"], [s["count"] for s in b["steps"]]) for b in got["breakdowns"]] == want


# --- overview -----------------------------------------------------------------------------

EVERY_ROW = [{"property": "event_type", "operator": "is_set"}]


def overview_oracle(
    rows: list[dict[str, Any]], start: datetime, end: datetime, tz: str, top_n: int
) -> dict[str, Any]:
    mine = _mine(rows, start, end)

    def top(counts: dict[Any, int]) -> list[tuple[Any, int]]:
        return [(k, counts[k]) for k in sorted(counts, key=lambda k: (-counts[k], k))][:top_n]

    def distinct(key: str) -> dict[Any, int]:
        users: dict[Any, set[str]] = defaultdict(set)
        for r in mine:
            if r.get(key) is not None:
                users[r[key]].add(r["user_id"])
        return {k: len(v) for k, v in users.items()}

    def active(interval: str) -> list[tuple[str, int]]:
        labels = _labels(_local([r["ts"] for r in mine], tz), interval) if mine else []
        users: dict[str, set[str]] = defaultdict(set)
        for r, label in zip(mine, labels, strict=True):
            users[label].add(r["user_id"])
        return sorted((k, len(v)) for k, v in users.items())

    pages = Counter(r["url"] for r in mine if r["event_type"] == "page_view")
    return {
        "total_events": len(mine),
        "unique_users": len({r["user_id"] for r in mine}),
        "sessions": len(sessions_oracle(rows, PROJECT, start, end)),
        "events_by_type": dict(Counter(r["event_type"] for r in mine)),
        "top_pages": top(pages),
        "top_referrers": top(Counter(r["referrer"] for r in mine if r.get("referrer"))),
        "countries": top(distinct("country")),
        "devices": top(distinct("device_type")),
        "dau": active("day"),
        "wau": active("week"),
        "mau": active("month"),
        "revenue": math.fsum(r["revenue"] for r in mine if r["event_type"] == "purchase"),
    }


def _overview_as_oracle(got: dict[str, Any]) -> dict[str, Any]:
    return {
        "total_events": got["total_events"],
        "unique_users": got["unique_users"],
        "sessions": got["sessions"],
        "events_by_type": got["events_by_type"],
        "top_pages": [(p["url"], p["views"]) for p in got["top_pages"]],
        "top_referrers": [(p["referrer"], p["events"]) for p in got["top_referrers"]],
        "countries": [(p["country"], p["users"]) for p in got["countries"]],
        "devices": [(p["device_type"], p["users"]) for p in got["devices"]],
        "dau": [(p["date"], p["users"]) for p in got["dau"]],
        "wau": [(p["week_start"], p["users"]) for p in got["wau"]],
        "mau": [(p["month"], p["users"]) for p in got["mau"]],
        "revenue": got["revenue"],
    }


OVERVIEW_CASES = [
    # zone, start, end (whole UTC days inside, so DuckDB reads its rollups without filters)
    ("Europe/Berlin", datetime(2024, 10, 25, 13, 30), datetime(2024, 11, 2, 7)),
    ("America/New_York", datetime(1969, 10, 20, 3, 17), datetime(1970, 1, 4, 5)),
    ("Australia/Lord_Howe", datetime(2024, 3, 28, 23, 59), datetime(2024, 4, 11)),
    ("UTC", datetime(2024, 5, 1), datetime(2024, 5, 4)),  # empty
]


@pytest.mark.parametrize(("tz", "start", "end"), OVERVIEW_CASES)
@pytest.mark.parametrize("filtered", [False, True], ids=["default", "raw-rows"])
def test_overview_matches_oracle_across_dst(
    data_store: Store, tz: str, start: datetime, end: datetime, filtered: bool
) -> None:
    query: dict[str, Any] = {"start_time": start, "end_time": end, "timezone": tz, "top_n": 3}
    if filtered:
        query["filters"] = EVERY_ROW
    elif data_store.has_rollups and start.year > 2000:  # the rollups answer
        assert overview_aggregates(data_store, PROJECT, start, end, 3, stitched=False)
    got = _overview_as_oracle(overview(data_store, PROJECT, query))
    want = overview_oracle(ROWS, start, end, tz, 3)
    assert got.pop("revenue") == pytest.approx(want.pop("revenue"), rel=1e-12, abs=1e-9)
    assert got == want


#: Revenue of +-1e15 (the API's bound) beside many cents: the sum must keep the cents.
BIG_REVENUES = [1e15, -1e15, 1e15, -1e15, 123.45, 999999999999999.0] + [0.01] * 1000


def _revenue_rows(revenues: list[float], day: datetime) -> list[dict[str, Any]]:
    order = list(revenues)
    random.Random(3).shuffle(order)
    return [
        event(f"u{i % 7}", day + timedelta(seconds=i), "purchase", order_id=f"o{i}", revenue=r)
        for i, r in enumerate(order)
    ]


@pytest.mark.parametrize("span", ["partial-day", "filtered"])
def test_overview_revenue_keeps_cents_next_to_huge_values(
    load: Callable[..., Store], span: str
) -> None:
    day = datetime(2024, 3, 1)
    rows = _revenue_rows(BIG_REVENUES, day + timedelta(hours=10))
    # a refund that cancels the near-1e15 purchase but for 1.0
    rows.append(event("r", day + timedelta(hours=11), "purchase", revenue=-999999999999998.0))
    store = load(rows)
    if span == "partial-day":  # no whole UTC day: raw rows
        query: dict[str, Any] = {
            "start_time": day + timedelta(hours=9),
            "end_time": day.replace(hour=23),
        }
    else:
        query = {"start_time": day, "end_time": day + timedelta(days=1), "filters": EVERY_ROW}
    want = math.fsum(r["revenue"] for r in rows)  # 123.45 + 10 + 1
    assert want == pytest.approx(134.45, abs=1e-9)
    assert overview(store, PROJECT, query)["revenue"] == pytest.approx(want, rel=1e-12, abs=1e-6)


def test_rollup_revenue_keeps_cents_next_to_huge_values(tmp_path: Path) -> None:
    store = open_store("duckdb:///" + str(tmp_path / "rollups.duckdb"))
    try:
        day = datetime(2024, 3, 1)
        rows = _revenue_rows(BIG_REVENUES, day + timedelta(hours=10))
        rows.append(event("r", day + timedelta(hours=11), "purchase", revenue=-999999999999998.0))
        store.append_events(to_table(rows))
        lo, hi = day, day + timedelta(days=1)
        assert overview_aggregates(store, PROJECT, lo, hi, 10, stitched=False) is not None
        got = overview(store, PROJECT, {"start_time": lo, "end_time": hi})["revenue"]
        assert got == pytest.approx(math.fsum(r["revenue"] for r in rows), rel=1e-12, abs=1e-6)
    finally:
        store.close()


# --- sessions -----------------------------------------------------------------------------


def _session_rows() -> list[dict[str, Any]]:
    rng = random.Random(11)
    rows: list[dict[str, Any]] = []
    t = datetime(2024, 10, 26, 21, 50)  # Berlin: 23:50 local, the night the clocks go back
    # gaps of exactly 30 min (no split) and 30 min + 1 µs (split)
    rows += [event("gap", t + timedelta(minutes=30 * i)) for i in range(5)]
    rows.append(event("gap", t + timedelta(minutes=150, microseconds=1), "click", url="/x"))
    # 30 h of activity every 20 min: cut at 24 h from its first event, across the DST change
    rows += [event("long", t + timedelta(minutes=20 * i)) for i in range(90)]
    # client sessions interleaved with anonymous events of the same user
    for i in range(8):
        ts = t + timedelta(minutes=25 * i)
        rows.append(event("mix", ts, session_id="S1" if i % 2 else None))
    rows.append(event("mix", t + timedelta(days=1), "login", session_id="S1"))
    rows.append(event("mix", t + timedelta(hours=3), "login", session_id="Ü2"))
    # one-event sessions: a bounce and a non-bounce
    rows += [event("bounce", t + timedelta(hours=4)), event("click", t, "click", url="/")]
    # random users around the change (equal times, duplicates)
    for u in range(25):
        for _ in range(rng.randint(1, 12)):
            ts = t + timedelta(minutes=10 * rng.randint(-30, 200))
            sid = rng.choice([None, None, "s1", "s2"])
            rows.append(event(f"r{u}", ts, rng.choice(["page_view", "click"]), session_id=sid))
            if rng.random() < 0.1:
                rows.append(dict(rows[-1]))
    return rows


@pytest.mark.parametrize("tz", ["Europe/Berlin", "Australia/Lord_Howe", "America/New_York"])
def test_sessions_by_local_day_match_oracle(load: Callable[..., Store], tz: str) -> None:
    rows = _session_rows()
    store = load(rows)
    start, end = datetime(2024, 10, 26, 20), datetime(2024, 10, 28, 6, 7)
    got = sessions(store, PROJECT, {"start_time": start, "end_time": end, "timezone": tz})
    found = sessions_oracle(rows, PROJECT, start, end)
    days = _labels(_local([s for _, s, *_ in found], tz), "day")
    by_day: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for (_, first, last, n, pv), day in zip(found, days, strict=True):
        by_day[day].append(((last - first).total_seconds(), n == 1 and pv == 1))
    want = [
        (d, len(v), statistics.fmean(x for x, _ in v), sum(b for _, b in v) / len(v))
        for d, v in sorted(by_day.items())
    ]
    assert got["sessions"] == len(found)
    assert got["users"] == len({u for u, *_ in found})
    assert [
        (d["date"], d["sessions"], d["avg_duration_seconds"], d["bounce_rate"])
        for d in got["by_day"]
    ] == [(d, n, pytest.approx(a), pytest.approx(b)) for d, n, a, b in want]
