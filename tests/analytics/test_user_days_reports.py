"""Retention, stickiness, lifecycle and trends read from the daily rollups' user days equal the same reports read
from the events (``raw=True``) and the pandas oracles (avila.analytics.rollup_reads.USER_DAYS).

Data: random users over ten weeks on an hourly grid (ties), a user active in the last and
the first microsecond of days, unicode ids, another project's rows, loaded in shuffled
batches with late events (the first weeks arrive last) through both write paths; then GDPR
erasure. Each comparison first checks which path was taken, so two raw answers cannot pass
for one. With identity links the user days are read mapped to persons (the oracles see the
rows with the linked id replaced). Questions the user days cannot answer (an event condition,
filters, a time zone with an offset, bounds off midnight, a write that bypassed the rollups)
must read the events.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from analytics_data import (
    OTHER_PROJECT,
    PROJECT,
    T0,
    event,
    link_identity,
    load_late_and_shuffled,
    random_events,
    to_table,
)
from analytics_oracles import retention_oracle
from journey_oracles import lifecycle_oracle, stickiness_oracle

from avila.analytics import (
    erase_user,
    lifecycle,
    retention,
    rollup_reads,
    sessions,
    stickiness,
    trends,
)
from avila.storage import open_store
from avila.storage.base import Store

# the module (the package's ``retention`` is the function)
retention_module = importlib.import_module("avila.analytics.retention")

SPAN = timedelta(weeks=10)
# (start, end, period, periods): bounds at UTC midnight; T0 (2024-03-01) is a Friday
QUESTIONS = [
    (T0, T0 + SPAN, "week", 8),
    (T0 + timedelta(days=10), T0 + timedelta(days=40), "day", 20),
    (T0 + timedelta(days=3), T0 + timedelta(weeks=6), "week", 5),
    (T0, T0 + SPAN, "month", 3),
    (T0 + timedelta(days=31), T0 + timedelta(days=32), "day", 30),  # one day, later returns
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store("duckdb:///" + str(tmp_path / "retention.duckdb"))
    assert opened.has_rollups
    yield opened
    opened.close()


def _rows(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = random_events(seed, 90, span=SPAN, grid=timedelta(hours=1), max_events=20)
    day = T0 + timedelta(days=20)
    rows += [
        event("édge ☕", day - timedelta(microseconds=1)),  # the last microsecond of a day
        event("édge ☕", day + timedelta(days=7)),  # the first of a day a week later
        event("late", T0 + timedelta(days=60)),
        event("late", T0 + timedelta(days=2)),  # its first event, written last (below)
        event("u001", T0 + timedelta(days=5), project_id=OTHER_PROJECT),
    ]
    rng.shuffle(rows)
    return rows


def _load_late_and_shuffled(store: Store, rows: list[dict[str, Any]], seed: int) -> None:
    """Batches in random order through both write paths; the first three weeks come last."""
    load_late_and_shuffled(
        store, rows, seed, late_before=T0 + timedelta(weeks=3), batch_rows=53, first_position=2000
    )


def _bypass_the_rollups(store: Store, user: str, ts: datetime) -> None:
    """A page view written straight into the events table, as no writer of ours does."""
    store.execute(
        "INSERT INTO events (project_id, event_id, user_id, ts, received_at, event_type, url)"
        " VALUES (?, ?, ?, ?, ?, 'page_view', '/')",
        [PROJECT, f"sneaky-{user}", user, ts, ts],
    )


def _body(start: datetime, end: datetime, period: str, periods: int, mode: str) -> dict[str, Any]:
    return {
        "period": period,
        "periods": periods,
        "start_time": start,
        "end_time": end,
        "mode": mode,
    }


def _source(store: Store, body: dict[str, Any]) -> str:
    """Which rows ``retention`` read for ``body``: ``"history"`` (the per-user history and the
    user days after its watermark), ``"user days"`` (mapped to persons) or ``"events"``."""
    taken: list[str] = []
    original = retention_module._cohort_counts

    def spy(store: Store, users: Any, *args: Any) -> Any:
        taken.append(users.sql)
        return original(store, users, *args)

    retention_module._cohort_counts = spy  # type: ignore[assignment]
    try:
        retention(store, PROJECT, body)
    finally:
        retention_module._cohort_counts = original  # type: ignore[assignment]
    assert len(taken) == 1
    if "rollup_user_history" in taken[0]:
        return "history"
    return "user days" if "rollup_user_days" in taken[0] else "events"


def _takes_user_days(store: Store, body: dict[str, Any]) -> bool:
    return _source(store, body) != "events"


def _linked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` as the project sees them after ``link_identity(store, "u002", "u001")``."""
    return [
        {**r, "user_id": "u001"} if r["user_id"] == "u002" and r["project_id"] == PROJECT else r
        for r in rows
    ]


def _assert_same(store: Store, rows: list[dict[str, Any]], *, user_days: bool = True) -> None:
    for start, end, period, periods in QUESTIONS:
        for mode in ("exact", "on_or_after"):
            body = _body(start, end, period, periods, mode)
            assert _takes_user_days(store, body) is user_days, body
            got = retention(store, PROJECT, body)
            assert got == retention(store, PROJECT, body, raw=True), body
            want = retention_oracle(
                rows, PROJECT, start, end, period, periods, "UTC", mode, None, None
            )
            assert {c["cohort_start"]: c["retained"] for c in got["cohorts"]} == want, body


@pytest.mark.parametrize("seed", [1, 2])
def test_user_days_answer_equals_the_events_and_the_oracle(store: Store, seed: int) -> None:
    rows = _rows(seed)
    _load_late_and_shuffled(store, rows, seed)
    _assert_same(store, rows)
    # an erased user is forgotten by both sources
    erase_user(store, PROJECT, "u003")
    erase_user(store, PROJECT, "édge ☕")
    _assert_same(store, [r for r in rows if r["user_id"] not in ("u003", "édge ☕")])


def test_a_user_first_seen_before_the_range_is_no_cohort(store: Store) -> None:
    rows = [
        event("old", T0 + timedelta(days=1, hours=23)),
        event("old", T0 + timedelta(days=9)),
        event("new", T0 + timedelta(days=7)),  # Friday: start's midnight
        event("new", T0 + timedelta(days=14, hours=5)),
    ]
    store.append_events(to_table(rows))
    body = _body(T0 + timedelta(days=7), T0 + timedelta(days=21), "week", 3, "exact")
    assert _takes_user_days(store, body)
    got = retention(store, PROJECT, body)
    assert [(c["cohort_start"], c["retained"]) for c in got["cohorts"]] == [
        ("2024-03-04", [1, 1, 0])
    ]
    assert got == retention(store, PROJECT, body, raw=True)


def test_identity_links_read_the_user_days_mapped_to_persons(store: Store) -> None:
    rows = _rows(3)
    _load_late_and_shuffled(store, rows, 3)
    link_identity(store, "u002", "u001")
    _assert_same(store, _linked(rows))
    assert _linked(rows) != rows  # (the link joins two ids that have events)


def test_a_write_that_bypasses_the_rollups_reads_the_events(store: Store) -> None:
    rows = _rows(4)
    _load_late_and_shuffled(store, rows, 4)
    sneaky = T0 + timedelta(days=30)
    _bypass_the_rollups(store, "ghost", sneaky)
    body = _body(T0, T0 + SPAN, "week", 8, "exact")
    assert not _takes_user_days(store, body)
    got = retention(store, PROJECT, body)
    want = retention_oracle(
        [*rows, event("ghost", sneaky)], PROJECT, T0, T0 + SPAN, "week", 8, "UTC", "exact",
        None, None,
    )  # fmt: skip
    assert {c["cohort_start"]: c["retained"] for c in got["cohorts"]} == want
    assert "2024-03-25" in want  # the ghost's cohort week


@pytest.mark.parametrize(
    "change",
    [
        {"start_event": {"condition_type": "page_view", "condition_value": ""}},
        {"return_event": {"condition_type": "purchase", "condition_value": ""}},
        {"filters": [{"property": "country", "operator": "eq", "value": "BR"}]},
        {"timezone": "Europe/Berlin"},
        {"start_time": T0 + timedelta(hours=6)},
        {"end_time": T0 + SPAN - timedelta(microseconds=1)},
    ],
)
def test_questions_the_user_days_cannot_answer_read_the_events(
    store: Store, change: dict[str, Any]
) -> None:
    _load_late_and_shuffled(store, _rows(5), 5)
    body = {**_body(T0, T0 + SPAN, "week", 8, "exact"), **change}
    assert not _takes_user_days(store, body)
    assert retention(store, PROJECT, body) == retention(store, PROJECT, body, raw=True)


def test_a_time_zone_named_otherwise_but_utc_throughout_reads_the_user_days(
    store: Store,
) -> None:
    rows = _rows(6)
    _load_late_and_shuffled(store, rows, 6)
    body = {**_body(T0, T0 + SPAN, "week", 8, "exact"), "timezone": "Etc/UTC"}
    assert _takes_user_days(store, body)
    assert retention(store, PROJECT, body) == retention(store, PROJECT, body, raw=True)


# -- stickiness ---------------------------------------------------------------------------------

stickiness_module = importlib.import_module("avila.analytics.stickiness")

# (start, end, period): stickiness reports whole periods, so bounds off midnight are fine too
STICKY = [
    (T0, T0 + SPAN, "week"),
    (T0 + timedelta(hours=6, minutes=13), T0 + timedelta(days=40, hours=5), "week"),
    (T0 + timedelta(days=3), T0 + SPAN, "month"),
    (T0 + timedelta(days=30, microseconds=-1), T0 + timedelta(days=31), "month"),
]


def _reads_user_days(module: Any, report: Any, store: Store, body: dict[str, Any]) -> bool:
    """Whether ``report`` (of ``module``) asked for the user days and got them."""
    answers: list[str | None] = []
    original = module.user_days_answer

    def spy(*args: Any, **kwargs: Any) -> str | None:
        answers.append(original(*args, **kwargs))
        return answers[-1]

    module.user_days_answer = spy
    try:
        report(store, PROJECT, body)
    finally:
        module.user_days_answer = original
    return len(answers) == 1 and answers[0] is not None


def _sticky_takes_user_days(store: Store, body: dict[str, Any]) -> bool:
    return _reads_user_days(stickiness_module, stickiness, store, body)


def _assert_same_stickiness(
    store: Store, rows: list[dict[str, Any]], *, user_days: bool = True
) -> None:
    for start, end, period in STICKY:
        body = {"period": period, "start_time": start, "end_time": end}
        assert _sticky_takes_user_days(store, body) is user_days, body
        assert_stickiness_answers(store, rows, body)


def assert_stickiness_answers(
    store: Store, rows: list[dict[str, Any]], body: dict[str, Any]
) -> None:
    """Stickiness in UTC for ``body`` equals the events' answer and the oracle's."""
    got = stickiness(store, PROJECT, body)
    assert got == stickiness(store, PROJECT, body, raw=True), body
    want = stickiness_oracle(rows, body["start_time"], body["end_time"], body["period"], "UTC")
    assert {
        p["period_start"]: [r["users"] for r in p["distribution"]] for p in got["periods"]
    } == want, body


@pytest.mark.parametrize("seed", [7, 8])
def test_stickiness_from_user_days_equals_the_events_and_the_oracle(
    store: Store, seed: int
) -> None:
    rows = _rows(seed)
    _load_late_and_shuffled(store, rows, seed)
    _assert_same_stickiness(store, rows)
    erase_user(store, PROJECT, "late")
    _assert_same_stickiness(store, [r for r in rows if r["user_id"] != "late"])
    link_identity(store, "u002", "u001")  # identity links: the user days, mapped to persons
    _assert_same_stickiness(store, _linked([r for r in rows if r["user_id"] != "late"]))


@pytest.mark.parametrize(
    "change",
    [
        {"event": {"condition_type": "page_view", "condition_value": ""}},
        {"filters": [{"property": "country", "operator": "eq", "value": "BR"}]},
        {"timezone": "Asia/Kolkata"},
    ],
)
def test_stickiness_questions_the_user_days_cannot_answer_read_the_events(
    store: Store, change: dict[str, Any]
) -> None:
    _load_late_and_shuffled(store, _rows(9), 9)
    body = {"period": "week", "start_time": T0, "end_time": T0 + SPAN, **change}
    assert not _sticky_takes_user_days(store, body)
    assert stickiness(store, PROJECT, body) == stickiness(store, PROJECT, body, raw=True)


def test_stickiness_after_a_bypassing_write_reads_the_events(store: Store) -> None:
    rows = _rows(10)
    _load_late_and_shuffled(store, rows, 10)
    sneaky = T0 + timedelta(days=30, hours=1)
    _bypass_the_rollups(store, "ghost", sneaky)
    body = {"period": "week", "start_time": T0, "end_time": T0 + SPAN}
    assert not _sticky_takes_user_days(store, body)
    got = stickiness(store, PROJECT, body)
    want = stickiness_oracle([*rows, event("ghost", sneaky)], T0, T0 + SPAN, "week", "UTC")
    assert {
        p["period_start"]: [r["users"] for r in p["distribution"]] for p in got["periods"]
    } == want


# -- lifecycle ----------------------------------------------------------------------------------

lifecycle_module = importlib.import_module("avila.analytics.lifecycle")

LIFECYCLE = [
    (T0, T0 + SPAN, "week"),
    (T0 + timedelta(days=20, hours=6), T0 + timedelta(days=34, hours=1), "day"),
    (T0 + timedelta(days=3), T0 + SPAN, "month"),
    (T0 + timedelta(days=7), T0 + timedelta(days=8), "week"),
]


def _lifecycle_table(result: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {
        p["period_start"]: {k: p[k] for k in ("new", "returning", "resurrecting", "dormant")}
        for p in result["periods"]
    }


def _assert_same_lifecycle(
    store: Store, rows: list[dict[str, Any]], *, user_days: bool = True
) -> None:
    for start, end, period in LIFECYCLE:
        body = {"period": period, "start_time": start, "end_time": end}
        assert _reads_user_days(lifecycle_module, lifecycle, store, body) is user_days, body
        got = lifecycle(store, PROJECT, body)
        assert got == lifecycle(store, PROJECT, body, raw=True), body
        assert _lifecycle_table(got) == lifecycle_oracle(rows, start, end, period, "UTC"), body


@pytest.mark.parametrize("seed", [11, 12])
def test_lifecycle_from_user_days_equals_the_events_and_the_oracle(store: Store, seed: int) -> None:
    rows = _rows(seed)
    _load_late_and_shuffled(store, rows, seed)
    _assert_same_lifecycle(store, rows)
    erase_user(store, PROJECT, "late")  # its first event was days before the rest
    _assert_same_lifecycle(store, [r for r in rows if r["user_id"] != "late"])
    link_identity(store, "u002", "u001")  # identity links: the user days, mapped to persons
    _assert_same_lifecycle(store, _linked([r for r in rows if r["user_id"] != "late"]))


@pytest.mark.parametrize(
    "change",
    [
        {"event": {"condition_type": "page_view", "condition_value": ""}},
        {"filters": [{"property": "country", "operator": "eq", "value": "BR"}]},
        {"timezone": "America/Sao_Paulo"},
    ],
)
def test_lifecycle_questions_the_user_days_cannot_answer_read_the_events(
    store: Store, change: dict[str, Any]
) -> None:
    _load_late_and_shuffled(store, _rows(13), 13)
    body = {"period": "week", "start_time": T0, "end_time": T0 + SPAN, **change}
    assert not _reads_user_days(lifecycle_module, lifecycle, store, body)
    assert lifecycle(store, PROJECT, body) == lifecycle(store, PROJECT, body, raw=True)


def test_lifecycle_after_a_bypassing_write_reads_the_events(store: Store) -> None:
    rows = _rows(14)
    _load_late_and_shuffled(store, rows, 14)
    sneaky = T0 - timedelta(days=400)  # long before: a first event that makes a user older
    _bypass_the_rollups(store, "u005", sneaky)
    body = {"period": "week", "start_time": T0, "end_time": T0 + SPAN}
    assert not _reads_user_days(lifecycle_module, lifecycle, store, body)
    got = lifecycle(store, PROJECT, body)
    assert _lifecycle_table(got) == lifecycle_oracle(
        [*rows, event("u005", sneaky)], T0, T0 + SPAN, "week", "UTC"
    )


# -- trends -------------------------------------------------------------------------------------

TRENDS = [
    (T0, T0 + SPAN, "day"),
    (T0 + timedelta(days=3), T0 + timedelta(days=45), "week"),
    (T0, T0 + SPAN, "month"),
    (T0 + timedelta(days=20), T0 + timedelta(days=21), "day"),
]


def _bucket_start(ts: datetime, interval: str) -> str:
    day = ts.date()
    if interval == "week":
        day -= timedelta(days=day.weekday())
    elif interval == "month":
        day = day.replace(day=1)
    return day.isoformat()


def _trends_oracle(
    rows: list[dict[str, Any]], start: datetime, end: datetime, interval: str
) -> dict[str, tuple[int, int]]:
    """Plain Python: events and distinct users per UTC bucket that has events."""
    events: dict[str, int] = {}
    users: dict[str, set[str]] = {}
    for r in rows:
        if r["project_id"] == PROJECT and start <= r["ts"] < end:
            key = _bucket_start(r["ts"], interval)
            events[key] = events.get(key, 0) + 1
            users.setdefault(key, set()).add(r["user_id"])
    return {key: (n, len(users[key])) for key, n in events.items()}


def _trend_cells(result: dict[str, Any]) -> dict[str, tuple[int, int]]:
    (series,) = result["series"]
    return {d["time"]: (d["count"], d["users"]) for d in series["data"] if d["count"]}


def _assert_same_trends(store: Store, rows: list[dict[str, Any]]) -> None:
    for start, end, interval in TRENDS:
        body = {"interval": interval, "start_time": start, "end_time": end}
        assert _reads_user_days(rollup_reads, trends, store, body), body
        got = trends(store, PROJECT, body)
        assert got == trends(store, PROJECT, body, raw=True), body
        assert _trend_cells(got) == _trends_oracle(rows, start, end, interval), body


def test_trends_from_the_rollups_equal_the_events_and_the_oracle(store: Store) -> None:
    rows = _rows(15)
    _load_late_and_shuffled(store, rows, 15)
    _assert_same_trends(store, rows)
    erase_user(store, PROJECT, "u004")
    _assert_same_trends(store, [r for r in rows if r["user_id"] != "u004"])
    for user in {r["user_id"] for r in rows if r["project_id"] == PROJECT}:
        erase_user(store, PROJECT, user)  # everything erased: zero-filled, as from raw rows
    _assert_same_trends(store, [])


@pytest.mark.parametrize(
    "change",
    [
        {"event": {"condition_type": "page_view", "condition_value": ""}},
        {"filters": [{"property": "country", "operator": "eq", "value": "BR"}]},
        {"breakdown": "country"},
        {"timezone": "Asia/Kolkata"},
        {"interval": "hour", "end_time": T0 + timedelta(days=2)},
        {"start_time": T0 + timedelta(hours=1)},
    ],
)
def test_trends_questions_the_rollups_cannot_answer_read_the_events(
    store: Store, change: dict[str, Any]
) -> None:
    _load_late_and_shuffled(store, _rows(16), 16)
    body = {"interval": "day", "start_time": T0, "end_time": T0 + SPAN, **change}
    assert not _reads_user_days(rollup_reads, trends, store, body)
    assert trends(store, PROJECT, body) == trends(store, PROJECT, body, raw=True)


def test_trends_with_links_read_the_user_days_mapped_to_persons(store: Store) -> None:
    rows = _rows(19)
    _load_late_and_shuffled(store, rows, 19)
    link_identity(store, "u002", "u001")
    assert _linked(rows) != rows
    for interval in ("day", "week", "month"):
        body = {"interval": interval, "start_time": T0, "end_time": T0 + SPAN}
        assert _reads_user_days(rollup_reads, trends, store, body)
        got = trends(store, PROJECT, body)
        assert got == trends(store, PROJECT, body, raw=True), body
        assert _trend_cells(got) == _trends_oracle(_linked(rows), T0, T0 + SPAN, interval)


def test_trends_after_a_bypassing_write_read_the_events(store: Store) -> None:
    rows = _rows(17)
    _load_late_and_shuffled(store, rows, 17)
    body = {"interval": "week", "start_time": T0, "end_time": T0 + SPAN}
    sneaky = T0 + timedelta(days=30, hours=1)
    _bypass_the_rollups(store, "ghost", sneaky)
    assert not _reads_user_days(rollup_reads, trends, store, body)
    want = _trends_oracle([*rows, event("ghost", sneaky)], T0, T0 + SPAN, "week")
    assert _trend_cells(trends(store, PROJECT, body)) == want


# -- the sessions report's distinct users -------------------------------------------------------

SESSION_RANGES = [
    (T0, T0 + SPAN),  # whole days
    (T0 + timedelta(days=2, hours=7, minutes=13), T0 + timedelta(days=30, hours=5)),  # edges
    (T0 + timedelta(days=19, hours=23), T0 + timedelta(days=21, hours=1)),
]


def _distinct_users_oracle(rows: list[dict[str, Any]], start: datetime, end: datetime) -> int:
    return len(
        {r["user_id"] for r in rows if r["project_id"] == PROJECT and start <= r["ts"] < end}
    )


def test_sessions_count_users_from_the_user_days_as_from_the_events(store: Store) -> None:
    rows = _rows(18)
    _load_late_and_shuffled(store, rows, 18)
    erase_user(store, PROJECT, "u006")
    rows = [r for r in rows if r["user_id"] != "u006"]
    for start, end in SESSION_RANGES:
        body = {"start_time": start, "end_time": end}
        assert rollup_reads.distinct_users(store, PROJECT, start, end) is not None
        got = sessions(store, PROJECT, body)
        assert got == sessions(store, PROJECT, body, raw=True), body
        assert got["users"] == _distinct_users_oracle(rows, start, end)
    # rollups that disagree with the events (a day inside every range lost its user days):
    # the users are counted from the kept sessions
    store.execute("DELETE FROM rollup_user_days WHERE day = ?", [(T0 + timedelta(days=20)).date()])
    for start, end in SESSION_RANGES:
        body = {"start_time": start, "end_time": end}
        assert rollup_reads.distinct_users(store, PROJECT, start, end) is None
        got = sessions(store, PROJECT, body)
        assert got == sessions(store, PROJECT, body, raw=True), body
        assert got["users"] == _distinct_users_oracle(rows, start, end)
