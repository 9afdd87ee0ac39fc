"""The overview and the sessions report of a project with identity links, read from the kept
sessions and the user days, equal the raw-row answers and a plain-Python oracle over the
events mapped to their persons.

The kept tables hold raw user ids; only the ids a link names are cut again by person
(:func:`avila.analytics.session_reads.stitched_totals`). The data has what that must get right:
a visitor's anonymous session that runs on, minutes later, under the id it logs in as (two kept
sessions, one stitched session), a two-hop chain, a client session id sent under both ids,
a person whose own id has no events, a linked id with events only outside the range, late
events, ties, unicode ids, ranges whose edges cut sessions, and GDPR erasure of a person.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from analytics_data import OTHER_PROJECT, PROJECT, event, link_identity, load_late_and_shuffled
from analytics_oracles import sessions_oracle

from avila.analytics import erase_user, overview, sessions
from avila.analytics.common import events_source, fragments
from avila.analytics.overview import _kept_users_and_sessions
from avila.analytics.rollup_reads import whole_days
from avila.analytics.session_reads import project_totals, stitched_totals
from avila.storage.duckdb.store import DuckDBStore

T0 = datetime(2025, 5, 1)
#: anonymous id -> the id it is linked to (``link_identity``); the persons, resolved by hand
LINKS = {
    "anon-1": "ana",
    "anon-2": "bo",
    "anon-3": "anon-2",  # two hops: anon-3 -> anon-2 -> bo
    "匿名-4": "çé",
    "anon-5": "nobody-yet",  # the person's own id sends nothing
    "anon-6": "ana",  # a second device of ana's, events only before the ranges
}
PERSON = {
    "anon-1": "ana",
    "anon-2": "bo",
    "anon-3": "bo",
    "匿名-4": "çé",
    "anon-5": "nobody-yet",
    "anon-6": "ana",
}
PLAIN = [f"u{i}" for i in range(12)] + ["ü-ñ"]
ZONES = ["UTC", "Asia/Kathmandu", "America/New_York"]


def _rows(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for day in range(8):
        base = T0 + timedelta(days=day)
        # a visit that starts anonymous and goes on after the login, minutes apart
        for anon, person in (("anon-1", "ana"), ("anon-2", "bo"), ("匿名-4", "çé")):
            start = base + timedelta(hours=rng.randint(0, 22), minutes=rng.randint(0, 50))
            t = start
            for _ in range(rng.randint(1, 4)):
                rows.append(event(anon, t, rng.choice(["page_view", "click"])))
                t += timedelta(minutes=rng.randint(0, 20))
            for _ in range(rng.randint(0, 4)):
                t += timedelta(minutes=rng.randint(1, 25))
                rows.append(event(person, t, rng.choice(["page_view", "purchase"])))
        at = base + timedelta(hours=rng.randint(0, 23))
        rows.append(event("anon-3", at, "page_view"))
        rows.append(event("anon-3", at, "click"))  # a tie
        rows.append(event("anon-5", base + timedelta(hours=rng.randint(0, 23)), "page_view"))
        # one client session id sent under both of bo's ids
        sid = f"s-{day}"
        rows.append(event("anon-2", base + timedelta(hours=5), "page_view", session_id=sid))
        rows.append(event("bo", base + timedelta(hours=5, minutes=50), "click", session_id=sid))
        for _ in range(rng.randint(10, 30)):
            user = rng.choice(PLAIN)
            rows.append(event(user, base + timedelta(seconds=rng.randint(0, 86_399))))
        # the last and the first microsecond of a day
        rows.append(event("ana", base - timedelta(microseconds=1), "page_view"))
        rows.append(event("anon-1", base, "page_view"))
    rows.append(event("anon-6", T0 - timedelta(days=3), "page_view"))
    rows.append(event("anon-1", T0 + timedelta(days=2), "page_view", project_id=OTHER_PROJECT))
    return rows


ROWS = _rows(7)
RANGES = [
    (T0, T0 + timedelta(days=8)),  # whole days
    (T0 + timedelta(hours=7, minutes=13), T0 + timedelta(days=5, hours=3)),  # partial edges
    (T0 - timedelta(days=1), T0 + timedelta(days=3, seconds=1)),
    (T0 + timedelta(days=2), T0 + timedelta(days=3)),  # one day
    (T0 + timedelta(days=20), T0 + timedelta(days=22)),  # nothing in it
]


@pytest.fixture
def duck(tmp_path: Path) -> DuckDBStore:
    opened = DuckDBStore(tmp_path / "stitched.duckdb")
    load_late_and_shuffled(opened, ROWS, 3, late_before=T0 + timedelta(days=2), batch_rows=97)
    for anonymous_id, user_id in LINKS.items():
        link_identity(opened, anonymous_id, user_id)
    yield opened
    opened.close()


def _oracle(
    rows: list[dict[str, Any]], start: datetime, end: datetime, person: dict[str, str] = PERSON
) -> dict[str, Any]:
    """Sessions, users and daily active users of ``rows`` with ids mapped to their persons."""
    mapped = [{**r, "user_id": person.get(r["user_id"], r["user_id"])} for r in rows]
    found = sessions_oracle(mapped, PROJECT, start, end)
    inside = [r for r in mapped if r["project_id"] == PROJECT and start <= r["ts"] < end]
    dau: dict[str, set[str]] = {}
    for r in inside:
        dau.setdefault(r["ts"].date().isoformat(), set()).add(r["user_id"])
    return {
        "sessions": len(found),
        "unique_users": len({r["user_id"] for r in inside}),
        "dau": [{"date": d, "users": len(u)} for d, u in sorted(dau.items())],
        "bounces": sum(1 for s in found if s[3] == 1 and s[4] == 1),
    }


def _check(
    store: DuckDBStore,
    rows: list[dict[str, Any]],
    person: dict[str, str] = PERSON,
    *,
    kept_used: bool = True,
) -> None:
    assert events_source(store, PROJECT) != fragments(store)["events_unstitched"]
    for start, end in RANGES:
        query = {"start_time": start.isoformat(), "end_time": end.isoformat()}
        want = _oracle(rows, start, end, person)
        if whole_days(start, end) is not None:  # which path answers is checked, not assumed
            found = _kept_users_and_sessions(store, PROJECT, start, end, "person_map")
            # (an empty range has no linked rows to outweigh the kept ones)
            assert (found is not None) == (kept_used or not want["sessions"]), (start, end)
        kept, raw = overview(store, PROJECT, query), overview(store, PROJECT, query, raw=True)
        for got in (kept, raw):
            for key in ("avg_session_duration_seconds", "bounce_rate", "pages_per_session"):
                got[key] = pytest.approx(got[key], rel=1e-9, abs=1e-12)
        assert kept == raw, query
        assert kept["sessions"] == want["sessions"], query
        assert kept["unique_users"] == want["unique_users"], query
        assert kept["dau"] == want["dau"], query
        if want["sessions"]:
            assert kept["bounce_rate"] == pytest.approx(want["bounces"] / want["sessions"])
        for zone in ZONES:
            _check_sessions(store, {**query, "timezone": zone}, want, kept_used)


def _check_sessions(
    store: DuckDBStore, query: dict[str, str], want: dict[str, Any], kept_used: bool
) -> None:
    start = datetime.fromisoformat(query["start_time"])
    end = datetime.fromisoformat(query["end_time"])
    found = project_totals(store, PROJECT, start, end, None)
    assert (found is not None) == (kept_used or not want["sessions"]), query
    kept, raw = sessions(store, PROJECT, query), sessions(store, PROJECT, query, raw=True)
    for got in (kept, raw):
        for key in ("avg_duration_seconds", "bounce_rate", "pages_per_session"):
            got[key] = pytest.approx(got[key], rel=1e-9, abs=1e-12)
        for day in got["by_day"]:
            day["avg_duration_seconds"] = pytest.approx(
                day["avg_duration_seconds"], rel=1e-9, abs=1e-12
            )
    assert kept == raw, query
    assert (kept["sessions"], kept["users"]) == (want["sessions"], want["unique_users"]), query


def test_the_stitched_overview_from_kept_state_equals_raw_rows_and_the_oracle(
    duck: DuckDBStore,
) -> None:
    _check(duck, ROWS)
    # the links matter here: without them the same data has more sessions and users
    start, end = RANGES[0]
    unlinked = sessions_oracle(ROWS, PROJECT, start, end)
    assert len(unlinked) > _oracle(ROWS, start, end)["sessions"]


def test_erasing_a_person_forgets_them_in_the_stitched_overview(duck: DuckDBStore) -> None:
    erase_user(duck, PROJECT, "bo")
    gone = {"bo", "anon-2", "anon-3"}
    _check(duck, [r for r in ROWS if r["user_id"] not in gone])


def test_the_linked_ids_sessions_replace_their_kept_ones(duck: DuckDBStore) -> None:
    """anon-1's visit goes on as ana: kept as two sessions, one by person."""
    start, end = T0, T0 + timedelta(days=8)
    totals = stitched_totals(duck, PROJECT, start, end, "person_map")
    assert totals is not None
    assert totals.sessions == _oracle(ROWS, start, end)["sessions"]
    # the recursive view (read while a project's map is not current) resolves the same
    by_view = stitched_totals(duck, PROJECT, start, end, "identity_resolved")
    assert by_view is not None and by_view.summary() == totals.summary()
    with pytest.raises(ValueError):
        stitched_totals(duck, PROJECT, start, end, "events; DROP TABLE events")


def test_when_most_rows_are_linked_the_overview_reads_raw_rows(duck: DuckDBStore) -> None:
    """Cutting most of the range again costs more than one pass over raw rows: the kept path
    steps aside (session_reads.LINKED_SHARE), with the same answer."""
    person = dict(PERSON)
    for i in range(1, 12, 2):
        link_identity(duck, f"u{i}", f"u{i - 1}")
        person[f"u{i}"] = f"u{i - 1}"
    start, end = RANGES[0]
    assert stitched_totals(duck, PROJECT, start, end, "person_map") is None
    _check(duck, ROWS, person, kept_used=False)
