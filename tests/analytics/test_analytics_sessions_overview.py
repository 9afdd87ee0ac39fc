from __future__ import annotations

import statistics
from datetime import datetime, timedelta

import pandas as pd
import pytest
from analytics_data import PROJECT, T0, event, random_events, to_table
from analytics_oracles import sessions_oracle

from avila.analytics import overview, sessions, trends, user_sessions
from avila.errors import ValidationFailed

ROWS = random_events(
    seed=21,
    n_users=50,
    span=timedelta(days=3),
    grid=timedelta(minutes=15),
    max_events=30,
    with_sessions=True,
)
START, END = T0 + timedelta(hours=3), T0 + timedelta(days=2, hours=5)
RANGE = {"start_time": START.isoformat(), "end_time": END.isoformat()}


@pytest.fixture(scope="module")
def data_store(module_store):
    module_store.append_events(to_table(ROWS))
    return module_store


def test_sessions_match_oracle(data_store):
    want = sessions_oracle(ROWS, PROJECT, START, END)
    got = sessions(data_store, PROJECT, RANGE)
    assert got["sessions"] == len(want)
    durations = [(e - s).total_seconds() for _, s, e, _, _ in want]
    assert got["avg_duration_seconds"] == pytest.approx(statistics.fmean(durations))
    bounces = sum(1 for *_, n, pv in want if n == 1 and pv == 1)
    assert got["bounce_rate"] == pytest.approx(bounces / len(want))
    assert got["pages_per_session"] == pytest.approx(sum(w[4] for w in want) / len(want))
    by_day: dict[str, int] = {}
    for _, s, *_ in want:
        by_day[s.date().isoformat()] = by_day.get(s.date().isoformat(), 0) + 1
    assert {d["date"]: d["sessions"] for d in got["by_day"]} == by_day


def test_inactivity_edges_and_24h_cut(load):
    t = T0
    rows = [
        event("u", t),
        event("u", t + timedelta(minutes=30)),  # exactly 30 min: same session
        event("u", t + timedelta(minutes=60, microseconds=1)),  # > 30 min: new session
        event("b", t, "click"),  # one event, not a page view: not a bounce
        event("c", t),  # bounce
    ]
    rows += [event("long", t + timedelta(minutes=20 * i)) for i in range(80)]  # 26h20m of activity
    rows += [event("sid", t + timedelta(hours=h), session_id="S1") for h in (0, 5)]
    store = load(rows)
    got = sessions(
        store, PROJECT, {"start_time": "2024-02-28T00:00:00Z", "end_time": "2024-03-05T00:00:00Z"}
    )
    # u: 2, b: 1, c: 1, long: 2 (cut at 24 h), sid: 1 (client session id kept)
    assert got["sessions"] == 7
    assert got["bounce_rate"] == pytest.approx(2 / 7)  # c, and u's second session
    mine = user_sessions(
        store,
        PROJECT,
        "long",
        {"start_time": "2024-02-28T00:00:00Z", "end_time": "2024-03-05T00:00:00Z"},
    )
    assert sorted(s["duration_seconds"] for s in mine["items"]) == [
        2 * 3600 + 20 * 60.0,
        23 * 3600 + 40 * 60.0,
    ]
    sid = user_sessions(
        store,
        PROJECT,
        "sid",
        {"start_time": "2024-02-28T00:00:00Z", "end_time": "2024-03-05T00:00:00Z"},
    )
    assert [s["session_id"] for s in sid["items"]] == ["S1"]


def test_overview_matches_pandas(data_store):
    got = overview(data_store, PROJECT, {**RANGE, "timezone": "Europe/Berlin", "top_n": 3})
    df = pd.DataFrame(ROWS)
    df = df[(df.project_id == PROJECT) & (df.ts >= START) & (df.ts < END)]
    assert got["total_events"] == len(df)
    assert got["unique_users"] == df.user_id.nunique()
    assert got["events_by_type"] == df.event_type.value_counts().to_dict()
    assert got["revenue"] == pytest.approx(df.loc[df.event_type == "purchase", "revenue"].sum())
    pages = df[df.event_type == "page_view"].groupby("url").size()
    assert [p["views"] for p in got["top_pages"]] == sorted(pages, reverse=True)[:3]
    local = df.ts.dt.tz_localize("UTC").dt.tz_convert("Europe/Berlin").dt.date.astype(str)
    dau = df.groupby(local).user_id.nunique().to_dict()
    assert {d["date"]: d["users"] for d in got["dau"]} == dau
    assert got["sessions"] == len(sessions_oracle(ROWS, PROJECT, START, END))
    assert sum(m["users"] for m in got["mau"]) == df.user_id.nunique()


@pytest.mark.parametrize("interval", ["hour", "day", "week"])
def test_trends_match_pandas_with_breakdown(data_store, interval):
    got = trends(
        data_store,
        PROJECT,
        {
            **RANGE,
            "interval": interval,
            "breakdown": "context.device.browser",
            "breakdown_limit": 2,
            "timezone": "America/Sao_Paulo",
        },
    )
    df = pd.DataFrame(ROWS)
    df = df[(df.project_id == PROJECT) & (df.ts >= START) & (df.ts < END)]
    local = df.ts.dt.tz_localize("UTC").dt.tz_convert("America/Sao_Paulo").dt.tz_localize(None)
    freq = {"hour": "h", "day": "D", "week": "W-SUN"}[interval]
    label = local.dt.to_period(freq).dt.start_time
    fmt = "%Y-%m-%dT%H:00" if interval == "hour" else "%Y-%m-%d"
    label = label.dt.strftime(fmt)
    browser = df.browser.astype(object).where(df.browser.notna(), None)
    totals = browser.value_counts(dropna=False)
    top = sorted(totals.index, key=lambda v: (-totals[v], v is None, str(v)))[:2]
    group = browser.map(lambda v: v if v in top else "Other")
    want = (
        df.assign(g=group.fillna("(none)"), b=label)
        .groupby(["g", "b"])
        .agg(n=("user_id", "size"), u=("user_id", "nunique"))
    )
    for series in got["series"]:
        for point in series["data"]:
            key = (series["breakdown_value"] or "(none)", point["time"])
            n, u = (want.loc[key].n, want.loc[key].u) if key in want.index else (0, 0)
            assert (point["count"], point["users"]) == (n, u), key
    assert sum(s["total"] for s in got["series"]) == len(df)


def test_trends_event_condition_and_zero_fill(load):
    store = load(
        [
            event("u", datetime(2024, 3, 1, 10), "purchase", order_id="1", revenue=3.0),
            event("u", datetime(2024, 3, 3, 10)),
        ]
    )
    got = trends(
        store,
        PROJECT,
        {
            "interval": "day",
            "event": {"condition_type": "purchase"},
            "start_time": "2024-03-01T00:00:00Z",
            "end_time": "2024-03-04T00:00:00Z",
        },
    )
    assert [(p["time"], p["count"]) for p in got["series"][0]["data"]] == [
        ("2024-03-01", 1),
        ("2024-03-02", 0),
        ("2024-03-03", 0),
    ]


def test_invalid_filters(store):
    with pytest.raises(ValidationFailed) as info:
        overview(
            store,
            PROJECT,
            {"filters": [{"property": "revenue", "operator": "gt", "value": "lots"}]},
        )
    assert info.value.code == "invalid_filter"
    with pytest.raises(ValidationFailed) as info:
        trends(store, PROJECT, {"interval": "fortnight"})
    assert (info.value.code, info.value.details[0]["path"]) == ("invalid_query", "interval")


def test_session_totals_do_not_depend_on_the_order_sessions_are_added_in():
    """Durations are summed in whole microseconds: 0.1 + 0.2 + 0.3 s in float seconds gives
    0.6000000000000001 one way and 0.6 the other, so the kept path (sessions grouped by
    bucket) and the raw path (sessions by user) could differ in the last digit."""
    from zoneinfo import ZoneInfo

    import numpy as np

    from avila.analytics.sessions import Sessions, SessionTotals

    first = 1_700_000_000_000_000  # three sessions on one UTC day, an hour apart

    def one(k: int, duration_us: int) -> Sessions:
        start = np.array([first + k * 3_600_000_000], dtype=np.int64)
        return Sessions(
            n_users=1,
            user=np.zeros(1, dtype=np.int64),
            session_id=np.array([None], dtype=object),
            start_us=start,
            end_us=start + duration_us,
            events=np.array([2]),
            page_views=np.array([1]),
        )

    parts = [one(0, 100_000), one(1, 200_000), one(2, 300_000)]

    def totals(order: list[int]) -> tuple[dict, list]:
        t = SessionTotals(ZoneInfo("UTC"), datetime(2023, 11, 1), datetime(2023, 12, 1))
        for i in order:
            t.add(parts[i])
        return t.summary(), t.by_day()

    assert totals([0, 1, 2]) == totals([2, 1, 0])
