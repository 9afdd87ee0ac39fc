"""Overview figures read from the daily rollups (:mod:`avila.storage.rollups`) instead of raw rows.

A range ``[start, end)`` is split into its whole UTC days ``[d0, d1)``, read from the rollups,
and the partial days at either edge, read from the events table and aggregated by the very
same SQL that fills the rollups; the union is then aggregated once. Counts and sums add up
across the two parts, and distinct users are counted over the union of user ids, so the
answer is exactly the raw-row answer (revenue up to the order of floating-point additions).

Used only when it cannot change an answer: the DuckDB backend (the rollups are its tables), no
filters (a rollup has no per-event properties), at least one whole day in the range, and the
rollups agree with the events table over those days (:func:`rollups_agree`; otherwise a write
bypassed them and the caller reads raw rows). With identity stitching, user ids are mapped
through the relation that resolves them for the project's events source (the person map, or
``identity_resolved`` while the map is not current: :func:`avila.analytics.common.persons_relation`).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from avila.analytics.calendar import bucket_expr, local_us_expr, utc_throughout
from avila.analytics.common import events_source, fragments, persons_relation
from avila.storage.base import Store
from avila.storage.rollups import DAILY_FROM, USER_KEY

_EDGES = (
    "(SELECT * FROM events WHERE project_id = ? AND ((ts >= ? AND ts < ?) OR (ts >= ? AND ts < ?)))"
)

_EVENTS_PART = """
WITH d AS (
  SELECT event_type, kind, value, events, revenue FROM rollup_daily
  WHERE project_id = ? AND day >= ? AND day < ?
  UNION ALL
  SELECT event_type, kind, value, events, revenue FROM ({edges})
), t AS (
  SELECT 7 AS g, NULL AS k1, NULL AS k2, coalesce(sum(events), 0) AS n, NULL::BIGINT AS pv,
    sum(revenue) FILTER (WHERE event_type = 'purchase') AS rev FROM d WHERE kind = 'type'
), ty AS (
  SELECT 3, event_type, NULL, sum(events) AS n, NULL::BIGINT, NULL::DOUBLE FROM d
  WHERE kind = 'type' GROUP BY event_type HAVING n > 0
), u AS (
  SELECT 5, NULL, value, NULL::BIGINT, sum(events) AS pv, NULL::DOUBLE FROM d
  WHERE kind = 'url' AND event_type = 'page_view' GROUP BY value HAVING pv > 0
  ORDER BY pv DESC, value LIMIT ?
), r AS (
  SELECT 6, NULL, value, sum(events) AS n, NULL::BIGINT, NULL::DOUBLE FROM d
  WHERE kind = 'referrer' GROUP BY value HAVING n > 0 ORDER BY n DESC, value LIMIT ?
)
SELECT 'events', * FROM t UNION ALL SELECT 'events', * FROM ty
UNION ALL SELECT 'events', * FROM u UNION ALL SELECT 'events', * FROM r
"""

_USERS_PART = """
SELECT 'users', GROUPING(country, device_type), country, device_type,
  count(DISTINCT {person}), NULL, NULL
FROM (
  SELECT user_id, country, device_type FROM rollup_user_days
  WHERE project_id = ? AND day >= ? AND day < ?
  UNION ALL
  SELECT user_id, country, device_type FROM {edges}
) x {join}
GROUP BY GROUPING SETS ((country), (device_type))
"""
_STITCH_JOIN = "LEFT JOIN {persons} r ON r.project_id = ? AND r.anonymous_id = x.user_id"
#: The relations a stitched read may map user ids through (never text from a request).
PERSONS_RELATIONS = ("person_map", "identity_resolved")


def checked_persons(persons: str) -> str:
    """``persons`` if it is one of :data:`PERSONS_RELATIONS` (it goes into SQL as a name)."""
    if persons not in PERSONS_RELATIONS:
        raise ValueError(f"unknown persons relation {persons!r}")
    return persons


def whole_days(start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
    """The first and last midnight of the whole UTC days inside ``[start, end)``, or None."""
    d0 = datetime.combine(start.date(), datetime.min.time())
    if d0 < start:
        d0 += timedelta(days=1)
    d1 = datetime.combine(end.date(), datetime.min.time())
    return (d0, d1) if d0 < d1 else None


def covering_days(start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
    """The first and last midnight of the UTC days that cover ``[start, end)``, or None when
    ``end`` falls on the calendar's last day (no midnight after it)."""
    d0 = datetime.combine(start.date(), datetime.min.time())
    d1 = datetime.combine(end.date(), datetime.min.time())
    if d1 < end:
        if d1.date() == date.max:
            return None
        d1 += timedelta(days=1)
    return d0, d1


def rollups_agree(store: Store, project_id: str, d0: datetime, d1: datetime) -> bool:
    """Both rollups count exactly the events the table holds over ``[d0, d1)``."""
    day0, day1 = d0.date(), d1.date()
    rows = store.query(
        "SELECT (SELECT coalesce(sum(events), 0) FROM rollup_daily WHERE project_id = ?"
        " AND kind = 'type' AND day >= ? AND day < ?), (SELECT coalesce(sum(events), 0)"
        " FROM rollup_user_days WHERE project_id = ? AND day >= ? AND day < ?),"
        " (SELECT count(*) FROM events WHERE project_id = ? AND ts >= ? AND ts < ?)",
        [project_id, day0, day1, project_id, day0, day1, project_id, d0, d1],
    )
    daily, user_days, events = rows[0]
    return int(daily) == int(events) == int(user_days)


#: The user days as the events they stand for: a row per user and UTC day the user was active
#: on, at that day's midnight (several rows per user and day, for countries, devices and partial
#: rows, which a minimum, a maximum or a bitwise or does not mind). A report that only asks
#: *whether* a user was active on a day, in UTC days, weeks or months, and compares event times
#: only with midnights, gets the events' answer from it (:func:`user_days_answer`). Its
#: ``user_id`` is the user's key (:data:`avila.storage.rollups.USER_KEY`), a number cheaper to
#: group by than the id: readers of it only group, join and count users, never return them.
USER_DAYS = (
    "(SELECT project_id, user_key AS user_id, CAST(day AS TIMESTAMP) AS ts FROM rollup_user_days)"
)
#: ``read_from`` of a report that reads every event before some time (a user's first event).
EARLIEST = datetime(1, 1, 1)


#: :data:`USER_DAYS` with each raw id mapped to its person (``{persons}``: one of
#: :data:`PERSONS_RELATIONS`), for a project with identity links.
_PERSON_DAYS = (
    "(SELECT d.project_id, coalesce(r.user_id, d.user_id) AS user_id,"
    " CAST(d.day AS TIMESTAMP) AS ts FROM rollup_user_days d LEFT JOIN {persons} r"
    " ON r.project_id = d.project_id AND r.anonymous_id = d.user_id)"
)


def user_days_answer(
    store: Store,
    project_id: str,
    tz: ZoneInfo,
    lo: datetime,
    hi: datetime,
    *,
    read_from: datetime | None = None,
) -> str | None:
    """The user days as a relation that can stand in for the project's events read over
    ``[lo, hi)`` (from ``read_from`` when the question also reads earlier events, in UTC) by a
    question about any event without filters (the caller checks that), or None: local time in
    ``tz`` is UTC over ``[lo, hi)``, and the rollups count exactly the events of the whole days
    that cover what is read (a write that bypassed them would show; an erasure forgets the
    user in both). :data:`USER_DAYS` for a project without identity links; with them the
    rollups' raw ids are mapped to persons through the relation the project's events source
    resolves them with (a person active under two ids on a day is active that day)."""
    days = covering_days(read_from or lo, hi)
    if not (
        days is not None
        and store.has_rollups
        and utc_throughout(tz, lo, hi)
        and rollups_agree(store, project_id, *days)
    ):
        return None
    source = events_source(store, project_id)
    if source == fragments(store)["events_unstitched"]:
        return USER_DAYS
    return _PERSON_DAYS.format(persons=persons_relation(store, source))


def _agreeing_days(
    store: Store, project_id: str, start: datetime, end: datetime
) -> tuple[datetime, datetime] | None:
    """The range's whole UTC days (:func:`whole_days`) when the rollups hold them exactly."""
    if not store.has_rollups:
        return None
    days = whole_days(start, end)
    if days is None or not rollups_agree(store, project_id, *days):
        return None
    return days


def overview_aggregates(
    store: Store,
    project_id: str,
    start: datetime,
    end: datetime,
    top_n: int,
    *,
    stitched: bool,
    users: bool = True,
) -> list[tuple[Any, ...]] | None:
    """The rows of the overview's raw aggregate statement (``part, g, k1, k2, n, pv, rev``,
    top lists already cut to ``top_n``), or None when the rollups cannot answer exactly.
    ``users`` False: the ``'events'`` rows only (the caller counts users per country and
    device with its active users: :func:`active_users` ``places``)."""
    days = _agreeing_days(store, project_id, start, end)
    if days is None:
        return None
    d0, d1 = days
    edge_params = [project_id, start, d0, d1, end]
    day_params: list[date | str] = [project_id, d0.date(), d1.date()]
    edges = DAILY_FROM.format(src=_EDGES)
    events_rows = store.query(
        _EVENTS_PART.format(edges=edges),
        [*day_params, *edge_params * 3, top_n, top_n],
    )
    if not users:
        return list(events_rows)
    person = "coalesce(r.user_id, x.user_id)" if stitched else "x.user_id"
    join = ""
    if stitched:
        persons = persons_relation(store, events_source(store, project_id))
        join = _STITCH_JOIN.format(persons=persons)
    users_sql = _USERS_PART.format(person=person, edges=_EDGES, join=join)
    users_rows = store.query(
        users_sql, [*day_params, *edge_params, *([project_id] if stitched else [])]
    )
    return [*events_rows, *users_rows]


#: Users are told apart by their key (:data:`avila.storage.rollups.USER_KEY`): stored in the
#: user days, computed for the partial days' raw rows.
_DISTINCT_USERS = f"""
SELECT count(DISTINCT user_key) FROM (
  SELECT user_key FROM rollup_user_days WHERE project_id = ? AND day >= ? AND day < ?
  UNION ALL
  SELECT {USER_KEY} FROM {{edges}})
"""


def distinct_users(store: Store, project_id: str, start: datetime, end: datetime) -> int | None:
    """The distinct users with events in ``[start, end)``: the whole UTC days' from
    ``rollup_user_days`` (one row per user, day, country and device, far fewer than events
    or sessions), the partial days' from raw rows; None when the rollups cannot answer exactly
    (no whole day, or they disagree with the events table). Raw user ids: unstitched
    projects only."""
    days = _agreeing_days(store, project_id, start, end)
    if days is None:
        return None
    d0, d1 = days
    ((users,),) = store.query(
        _DISTINCT_USERS.format(edges=_EDGES),
        [project_id, d0.date(), d1.date(), project_id, start, d0, d1, end],
    )
    return int(users)


#: Per user, a bit per day of the range (63 to a BIGINT word): which days the user was active.
#: With identity links, ``{person}`` and ``{join}`` map each raw id to its person. With places,
#: the rows are first grouped by user, country and device type (``c``), which both the users
#: per country / device and the per-user day bits read: one hash pass over the user days
#: instead of two (the overview's users by place and its active users).
_ACTIVE = """
WITH x AS (
  SELECT {person} AS user_id{places}, off FROM (
    SELECT user_id{places}, day - ?::DATE AS off FROM rollup_user_days
    WHERE project_id = ? AND day >= ? AND day < ?
    UNION ALL
    SELECT user_id{places}, ts::DATE - ?::DATE FROM {edges}
  ) x {join}
){by_place}, u AS (SELECT {words} FROM {per_user} GROUP BY user_id)
SELECT count(*), {counts}{place_lists} FROM u
"""
_WORD = "bit_or(CASE WHEN off >= {lo} AND off < {hi} THEN 1::BIGINT << (off - {lo}) END) AS m{w}"
_PLACE_COLUMNS = ", country, device_type"
_BY_PLACE = (
    ", c AS MATERIALIZED (SELECT user_id, country, device_type, {words} FROM x GROUP BY ALL)"
)
_PLACE_LISTS = """,
  (SELECT list((country, n)) FROM (
    SELECT country, count(DISTINCT user_id) AS n FROM c GROUP BY country)),
  (SELECT list((device_type, n)) FROM (
    SELECT device_type, count(DISTINCT user_id) AS n FROM c GROUP BY device_type))"""
#: ``GROUPING(country, device_type)`` of the overview's users rows: by country, by device type.
BY_COUNTRY, BY_DEVICE = 1, 2
#: The longest range whose active users are counted from the rollups (days; longer: raw rows).
ACTIVE_DAYS = 400


class ActiveUsers(NamedTuple):
    """:func:`active_users`' answer."""

    users: int
    #: distinct users per bucket number, per ``"day"``, ``"week"``, ``"month"``
    per_bucket: dict[str, dict[int, int]]
    #: with ``places``: the overview's users rows (``'users', g, country, device_type, users,
    #: None, None``; ``g`` :data:`BY_COUNTRY` or :data:`BY_DEVICE`), else empty
    places: list[tuple[Any, ...]]


def active_users(
    store: Store,
    project_id: str,
    start: datetime,
    end: datetime,
    *,
    persons: str | None = None,
    places: bool = False,
) -> ActiveUsers | None:
    """The distinct users of ``[start, end)`` and those per UTC ``day``, ``week`` (Monday) and
    ``month`` (bucket numbers as :func:`avila.analytics.calendar.bucket_label` reads them):
    the whole days from ``rollup_user_days``, the partial ones from raw rows, in one pass
    grouping by user (a bit per day; a week or month is any of its days). With ``places``,
    also the distinct users per country and per device type, from the same pass. None when the
    rollups cannot answer exactly (no whole day, or they disagree with the events table) or
    the range is over :data:`ACTIVE_DAYS`. The rollups hold raw user ids: for a project with
    identity links, ``persons`` (:func:`avila.analytics.common.persons_relation`) maps each to
    its person before grouping, so a person active under two ids counts once."""
    first = start.date()
    n = ((end - timedelta(microseconds=1)).date() - first).days + 1
    days = _agreeing_days(store, project_id, start, end) if n <= ACTIVE_DAYS else None
    if days is None:
        return None
    d0, d1 = days
    buckets: dict[str, dict[int, list[int]]] = {"day": {}, "week": {}, "month": {}}
    for k in range(n):
        day = first + timedelta(days=k)
        epoch_day = (day - date(1970, 1, 1)).days
        for interval, b in (
            ("day", epoch_day),
            ("week", (epoch_day + 3) // 7),
            ("month", day.year * 12 + day.month - 1),
        ):
            masks = buckets[interval].setdefault(b, [0] * (-(-n // 63)))
            masks[k // 63] |= 1 << (k % 63)
    n_words = -(-n // 63)
    words = ", ".join(_WORD.format(lo=63 * w, hi=63 * w + 63, w=w) for w in range(n_words))
    order = [(interval, b) for interval, found in buckets.items() for b in found]
    counts = ", ".join(
        "count(*) FILTER (WHERE "
        + " OR ".join(
            f"(m{w} & {mask}) <> 0" for w, mask in enumerate(buckets[interval][b]) if mask
        )
        + ")"
        for interval, b in order
    )
    person, join, join_params = "x.user_id", "", []
    if persons is not None:
        join = _STITCH_JOIN.format(persons=checked_persons(persons))
        person = "coalesce(r.user_id, x.user_id)"
        join_params = [project_id]
    sql = _ACTIVE.format(
        edges=_EDGES,
        person=person,
        join=join,
        counts=counts,
        places=_PLACE_COLUMNS if places else "",
        by_place=_BY_PLACE.format(words=words) if places else "",
        words=", ".join(f"bit_or(m{w}) AS m{w}" for w in range(n_words)) if places else words,
        per_user="c" if places else "x",
        place_lists=_PLACE_LISTS if places else "",
    )
    ((users, *found),) = store.query(
        sql,
        [first, project_id, d0.date(), d1.date(), first, project_id, start, d0, d1, end]
        + join_params,
    )
    place_rows: list[tuple[Any, ...]] = []
    if places:
        *found, countries, devices = found
        for g, pairs in ((BY_COUNTRY, countries), (BY_DEVICE, devices)):
            for key, users_there in pairs or ():
                country, device = (key, None) if g == BY_COUNTRY else (None, key)
                place_rows.append(("users", g, country, device, users_there, None, None))
    active: dict[str, dict[int, int]] = {"day": {}, "week": {}, "month": {}}
    for (interval, b), count in zip(order, found, strict=True):
        if count:
            active[interval][b] = int(count)
    return ActiveUsers(int(users), active, place_rows)


#: Events and distinct users per bucket of whole UTC days: ``(b, NULL, events, users)`` rows,
#: the shape of the trends query's raw rows without a breakdown.
_TRENDS = """
SELECT b, NULL AS v, sum(n), sum(u) FROM (
  SELECT {bucket} AS b, events AS n, 0 AS u FROM (
    SELECT events, {local} AS loc FROM (
      SELECT CAST(day AS TIMESTAMP) AS ts, events FROM rollup_daily
      WHERE project_id = ? AND kind = 'type' AND day >= ? AND day < ?))
  UNION ALL
  SELECT b, 0, count(DISTINCT user_id) FROM (
    SELECT {bucket} AS b, user_id FROM (
      SELECT user_id, {local} AS loc FROM ({user_days})))
  GROUP BY b)
GROUP BY b
"""
# Without links the filter stays on ``day`` itself (the column the table's zone maps know);
# the mapped relation exposes only the cast ``ts``.
_TREND_USER_DAYS = """SELECT CAST(day AS TIMESTAMP) AS ts, user_key AS user_id
        FROM rollup_user_days WHERE project_id = ? AND day >= ? AND day < ?"""
#: With identity links: the user days mapped to persons (``{days}``), bounds at midnights.
_TREND_PERSON_DAYS = "SELECT ts, user_id FROM {days} WHERE project_id = ? AND ts >= ? AND ts < ?"


def trend_rows(
    store: Store, project_id: str, start: datetime, end: datetime, tz: ZoneInfo, interval: str
) -> list[tuple[Any, ...]] | None:
    """The trends query's rows for any event without filters or breakdown, from the rollups;
    None unless that gives the events' answer: ``interval`` a day or longer, ``start`` and
    ``end`` UTC midnights, and the user days standing in for the events
    (:func:`user_days_answer`; the daily counts are checked with them). Event counts do not
    depend on who a user is; with identity links the distinct users come from the user days
    mapped to persons."""
    if interval == "hour" or any(
        t != datetime.combine(t.date(), datetime.min.time()) for t in (start, end)
    ):
        return None
    user_days = user_days_answer(store, project_id, tz, start, end)
    if user_days is None:
        return None
    local = local_us_expr(store, "ts", tz, start, end)
    days = [project_id, start.date(), end.date()]
    if user_days == USER_DAYS:
        users_from, users_params = _TREND_USER_DAYS, days
    else:
        users_from = _TREND_PERSON_DAYS.format(days=user_days)
        users_params = [project_id, start, end]
    sql = _TRENDS.format(
        bucket=bucket_expr(store, "loc", interval), local=local.sql, user_days=users_from
    )
    return store.query(sql, [*local.params, *days, *local.params, *users_params])
