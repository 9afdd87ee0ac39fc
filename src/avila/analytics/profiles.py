"""User profiles (all of a user's stored events) and GDPR erasure.

Profiles read through the analytics event source (see
:mod:`avila.storage.duckdb.analytics_sql`), so with identity stitching a person's profile
includes the events of every id resolved to them. Erasure deletes from the ``events`` table.
"""

from __future__ import annotations

from typing import Any

from avila.analytics.common import Expr, events_source, exact_sum_sql, fragments, iso
from avila.analytics.sessions import sessionize, sorted_events, summary
from avila.errors import NotFound
from avila.storage.base import Store


def user_profile(
    store: Store, project_id: str, user_id: str, *, recent: int = 20, top_n: int = 10
) -> dict[str, Any]:
    """``{"user_id", "first_seen", "last_seen", "total_events", "sessions", "total_revenue",
    "events_by_type", "top_pages": [{"url", "views"}], "devices": [{"device_type", "os",
    "browser", "events"}], "locations": [{"country", "city", "events"}], "recent_events": [...]}``
    over every stored event of the user; times RFC 3339 UTC. Unknown user: NotFound."""
    key = [project_id, user_id]
    where = "project_id = ? AND user_id = ?"
    source = events_source(store, project_id)
    revenue_sql = exact_sum_sql("revenue", "event_type = 'purchase'")
    head = store.query(
        f"SELECT min(ts), max(ts), count(*), coalesce({revenue_sql}, 0)"
        f" FROM {source} WHERE {where}",
        key,
    )
    first, last, total, revenue = head[0]
    if not total:
        raise NotFound(f"user {user_id!r} not found", code="user_not_found")
    by_type = store.query(
        f"SELECT event_type, count(*) FROM {source} WHERE {where} GROUP BY 1 ORDER BY 2 DESC, 1",
        key,
    )
    pages = store.query(
        f"SELECT url, count(*) FROM {source} WHERE {where} AND event_type = 'page_view'"
        " AND url IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?",
        [*key, top_n],
    )
    devices = store.query(
        f"SELECT device_type, os, browser, count(*) FROM {source} WHERE {where}"
        " GROUP BY ALL ORDER BY 4 DESC, 1, 2, 3 LIMIT ?",
        [*key, top_n],
    )
    locations = store.query(
        f"SELECT country, city, count(*) FROM {source} WHERE {where}"
        " GROUP BY ALL ORDER BY 3 DESC, 1, 2 LIMIT ?",
        [*key, top_n],
    )
    recent_rows = store.query(
        "SELECT event_id, event_type, ts, session_id, url, product_id, event_name, revenue"
        f" FROM {source} WHERE {where} ORDER BY ts DESC, event_id LIMIT ?",
        [*key, recent],
    )
    found = summary(sessionize(sorted_events(store, project_id, Expr(where, tuple(key)))))
    return {
        "user_id": user_id,
        "first_seen": iso(first),
        "last_seen": iso(last),
        "total_events": int(total),
        "sessions": found["sessions"],
        "total_revenue": float(revenue),
        "events_by_type": {t: int(n) for t, n in by_type},
        "top_pages": [{"url": u, "views": int(n)} for u, n in pages],
        "devices": [
            {"device_type": d, "os": o, "browser": b, "events": int(n)} for d, o, b, n in devices
        ],
        "locations": [{"country": c, "city": ci, "events": int(n)} for c, ci, n in locations],
        "recent_events": [
            {
                "event_id": eid,
                "event_type": et,
                "timestamp": iso(ts),
                "session_id": sid,
                "url": url,
                "product_id": pid,
                "event_name": name,
                "revenue": rev,
            }
            for eid, et, ts, sid, url, pid, name, rev in recent_rows
        ],
    }


def user_exists(store: Store, project_id: str, user_id: str) -> bool:
    """Whether the project has any stored event of the user."""
    return bool(
        store.query(
            f"SELECT 1 FROM {events_source(store, project_id)} WHERE project_id = ? AND user_id = ? LIMIT 1",
            [project_id, user_id],
        )
    )


def require_user(store: Store, project_id: str, user_id: str) -> None:
    """NotFound(code="user_not_found") unless the user has stored events."""
    if not user_exists(store, project_id, user_id):
        raise NotFound(f"user {user_id!r} not found", code="user_not_found")


def erase_user(store: Store, project_id: str, user_id: str) -> dict[str, int]:
    """Delete every stored event of the person in the project (GDPR): ``{"deleted_events": n}``.

    With identity stitching the person is ``user_id`` plus every id that resolves to it
    (``FRAGMENTS["person_aliases"]``), so their anonymous history goes too, and so do the
    identity links that name any of those ids (they are personal data as well). The daily
    rollups forget them, and the person map is recomputed, in the same transaction
    (:meth:`avila.storage.base.Store.erase_users`).
    """
    ids = [user_id]
    aliases_sql = fragments(store).get("person_aliases", "")
    if aliases_sql:
        ids += [row[0] for row in store.query(aliases_sql, [project_id, user_id])]
    deleted = store.erase_users(project_id, ids, links=bool(aliases_sql))
    return {"deleted_events": int(deleted)}
