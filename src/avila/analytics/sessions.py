"""Sessions: the client's ``session_id`` when sent, else inactivity sessions.

Semantics (shared/REFERENCES.md, "Sessions"): events of one user without a session_id form a
session until a gap of more than ``timeout_seconds`` (30 min; a gap of exactly 30 min does not
split). Such a session is further cut into ``max_session_seconds`` (24 h) pieces measured from
its first event (events at first + 24 h or later start a new piece). Events with a session_id
form the session ``(user_id, session_id)`` as sent. Only events in ``[start_time, end_time)``
(after ``filters``) are considered, so sessions are clipped to the range.

Duration = last event - first event (0 for one event). Bounce = exactly one event and it is a
page_view. ``by_day`` groups sessions by the local date (``timezone``) of their first event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from avila.analytics.common import (
    Expr,
    bucket_expr,
    bucket_label,
    fragments,
    iso,
    local_us_expr,
    parse_query,
    rate,
    time_range,
    where_clause,
    zone,
)
from avila.schemas.analytics import SessionsQuery
from avila.storage.base import Store


def sessions_cte(store: Store, where: Expr, timeout_s: int, max_s: int) -> Expr:
    """``WITH ... sessions AS (...)`` whose ``sessions`` rows are one per session: user_id,
    session_id (NULL for inactivity sessions), gap_no, piece, s (first ts), e (last ts),
    n (events), pv (page views)."""
    epoch = fragments(store)["epoch_us"]
    ts, lag = epoch.format("ts"), epoch.format("lag(ts) OVER (PARTITION BY user_id ORDER BY ts)")
    sql = f"""WITH ev AS (
  SELECT user_id, session_id, ts, event_type FROM events WHERE {where.sql}
), anon AS (
  SELECT user_id, ts, event_type,
    CASE WHEN {lag} IS NULL OR {ts} - {lag} > ? THEN 1 ELSE 0 END AS brk
  FROM ev WHERE session_id IS NULL
), anon2 AS (
  SELECT *, sum(brk) OVER (PARTITION BY user_id ORDER BY ts) AS gap_no FROM anon
), anon3 AS (
  SELECT *, min(ts) OVER (PARTITION BY user_id, gap_no) AS gstart FROM anon2
), keyed AS (
  SELECT user_id, CAST(NULL AS VARCHAR) AS session_id, gap_no,
    ({ts} - {epoch.format("gstart")}) // ? AS piece, ts, event_type FROM anon3
  UNION ALL
  SELECT user_id, session_id, 0, 0, ts, event_type FROM ev WHERE session_id IS NOT NULL
), sessions AS (
  SELECT user_id, session_id, gap_no, piece, min(ts) AS s, max(ts) AS e, count(*) AS n,
    sum(CASE WHEN event_type = 'page_view' THEN 1 ELSE 0 END) AS pv
  FROM keyed GROUP BY user_id, session_id, gap_no, piece
)
"""
    return Expr(sql, (*where.params, timeout_s * 1_000_000, max_s * 1_000_000))


_SUMMARY = """SELECT count(*), coalesce(avg({dur}), 0), coalesce(sum(CASE WHEN n = 1 AND pv = 1
  THEN 1 ELSE 0 END), 0), coalesce(sum(pv), 0), count(DISTINCT user_id) FROM sessions"""


def _duration_sql(store: Store) -> str:
    epoch = fragments(store)["epoch_us"]
    return f"(({epoch.format('e')} - {epoch.format('s')}) / 1e6)"


def session_summary(store: Store, cte: Expr) -> dict[str, Any]:
    """``sessions``, ``avg_duration_seconds``, ``bounce_rate``, ``pages_per_session``, ``users``."""
    rows = store.query(cte.sql + _SUMMARY.format(dur=_duration_sql(store)), cte.params)
    count, avg, bounces, pages, users = rows[0]
    return {
        "sessions": int(count),
        "avg_duration_seconds": float(avg),
        "bounce_rate": rate(bounces, count),
        "pages_per_session": rate(pages, count),
        "users": int(users),
    }


def sessions(
    store: Store,
    project_id: str,
    query: SessionsQuery | Mapping[str, Any] | None = None,
    *,
    user_id: str | None = None,
) -> dict[str, Any]:
    """``{"sessions", "avg_duration_seconds", "bounce_rate", "pages_per_session", "users",
    "by_day": [{"date", "sessions", "avg_duration_seconds", "bounce_rate"}]}``; with
    ``user_id``, only that user's sessions and also ``"items"``: the ``limit`` most recent
    sessions ``{"session_id", "start", "end", "duration_seconds", "events", "page_views",
    "bounce"}``."""
    q = parse_query(SessionsQuery, query)
    start, end = time_range(q.start_time, q.end_time)
    tz = zone(q.timezone)
    where = where_clause(store, project_id, start, end, q.filters)
    if user_id is not None:
        where = Expr(where.sql + " AND user_id = ?", (*where.params, user_id))
    cte = sessions_cte(store, where, q.timeout_seconds, q.max_session_seconds)
    result = session_summary(store, cte)
    local = local_us_expr(store, "s", tz, start, end)
    dur = _duration_sql(store)
    rows = store.query(
        cte.sql + f"SELECT {bucket_expr(store, 'loc', 'day')} AS d, count(*), avg(dur),"
        " sum(CASE WHEN n = 1 AND pv = 1 THEN 1 ELSE 0 END)"
        f" FROM (SELECT *, {local.sql} AS loc, {dur} AS dur FROM sessions) GROUP BY d ORDER BY d",
        (*cte.params, *local.params),
    )
    result["by_day"] = [
        {
            "date": bucket_label(int(d), "day"),
            "sessions": int(n),
            "avg_duration_seconds": float(avg),
            "bounce_rate": rate(b, n),
        }
        for d, n, avg, b in rows
    ]
    if user_id is not None:
        items = store.query(
            cte.sql + f"SELECT session_id, s, e, {dur}, n, pv FROM sessions"
            " ORDER BY s DESC LIMIT ?",
            (*cte.params, q.limit),
        )
        result["user_id"] = user_id
        result["items"] = [
            {
                "session_id": sid,
                "start": iso(s),
                "end": iso(e),
                "duration_seconds": float(d),
                "events": int(n),
                "page_views": int(pv),
                "bounce": n == 1 and pv == 1,
            }
            for sid, s, e, d, n, pv in items
        ]
    return result


def user_sessions(
    store: Store,
    project_id: str,
    user_id: str,
    query: SessionsQuery | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`sessions` for one user (GET /api/v1/users/{id}/sessions)."""
    return sessions(store, project_id, query, user_id=user_id)
