"""Real-time counters over the last 1/5/15 minutes.

Cheap enough to poll every second: every query is bounded to rows with ``received_at`` (server
receive time, UTC) in the last 15 minutes, and never touches the rest of the table. Rows are
appended in receive order, so DuckDB's per-row-group min/max of ``received_at`` (zone maps) let
the scan skip every older row group without reading it (a finished day the loader rewrites in
user order, :mod:`avila.storage.event_order`, keeps its rows' old receive times, so its new row
groups are skipped alike): the cost follows the last 15 minutes'
traffic, not the table size (tests/analytics/test_analytics_users_realtime.py checks the rows
the scan reads). Using the server's time also keeps late-arriving offline events (old client
``ts``) visible as "now".

**Live traffic only.** Events that replay history are never live traffic: rows whose
``metadata.source`` is ``demo`` (``avila demo``), ``backfill`` or ``import`` are left out of
every counter (``FRAGMENTS["replayed_event"]``), so an idle server right after ``make run``
reports zeros. Clients backfilling history through the API mark it with
``"metadata": {"source": "backfill"}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from avila.analytics.common import events_source, fragments, iso, parse_query, query_time, utcnow
from avila.schemas.analytics import RealtimeQuery
from avila.storage.base import Store

_COUNTS = """SELECT
  coalesce(sum(CASE WHEN received_at >= ? THEN 1 ELSE 0 END), 0),
  coalesce(sum(CASE WHEN received_at >= ? THEN 1 ELSE 0 END), 0),
  count(*),
  count(DISTINCT CASE WHEN received_at >= ? THEN user_id END),
  count(DISTINCT CASE WHEN received_at >= ? THEN user_id END),
  count(DISTINCT user_id)
FROM {source} WHERE project_id = ? AND received_at >= ? AND received_at <= ?
  AND NOT {replayed}"""


def realtime(
    store: Store, project_id: str, query: RealtimeQuery | Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``{"events_last_minute", "events_last_5_minutes", "events_last_15_minutes",
    "active_users_last_minute", "active_users_last_5_minutes", "active_users_last_15_minutes",
    "events_per_second" (last minute / 60), "top_pages": [{"url", "views"}] (last 5 minutes),
    "events_by_type" (last 5 minutes), "now"}``; windows are ``[now - d, now]`` by receive time."""
    q = parse_query(RealtimeQuery, query)
    now = query_time(q.now, "now") if q.now else utcnow()
    m1, m5, m15 = (now - timedelta(minutes=m) for m in (1, 5, 15))
    source = events_source(store, project_id)
    replayed = fragments(store)["replayed_event"]
    counts = _COUNTS.format(source=source, replayed=replayed)
    e1, e5, e15, u1, u5, u15 = store.query(counts, [m1, m5, m1, m5, project_id, m15, now])[0]
    window = f"project_id = ? AND received_at >= ? AND received_at <= ? AND NOT {replayed}"
    pages = store.query(
        f"SELECT url, count(*) FROM {source} WHERE {window} AND event_type = 'page_view'"
        " AND url IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?",
        [project_id, m5, now, q.top_n],
    )
    by_type = store.query(
        f"SELECT event_type, count(*) FROM {source} WHERE {window} GROUP BY 1 ORDER BY 2 DESC, 1",
        [project_id, m5, now],
    )
    return {
        "now": iso(now),
        "events_last_minute": int(e1),
        "events_last_5_minutes": int(e5),
        "events_last_15_minutes": int(e15),
        "active_users_last_minute": int(u1),
        "active_users_last_5_minutes": int(u5),
        "active_users_last_15_minutes": int(u15),
        "events_per_second": int(e1) / 60.0,
        "top_pages": [{"url": u, "views": int(n)} for u, n in pages],
        "events_by_type": {t: int(n) for t, n in by_type},
    }


def counts_sql(store: Store, project_id: str) -> str:
    """The counters' SQL (parameters: 1-min, 5-min, 1-min, 5-min bound, project, 15-min
    bound, now), for tests that inspect its plan."""
    return _COUNTS.format(
        source=events_source(store, project_id), replayed=fragments(store)["replayed_event"]
    )
