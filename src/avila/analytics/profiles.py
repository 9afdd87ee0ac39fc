"""User profiles (all of a user's stored events) and GDPR erasure.

Profiles read through the analytics event source (see
:mod:`avila.storage.duckdb.analytics_sql`), so with identity stitching a person's profile
includes the events of every id resolved to them. Erasure deletes from the ``events`` table.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from avila.analytics.common import Expr, events_source, fragments, iso
from avila.analytics.sessions import sessionize, sorted_events, summary
from avila.errors import NotFound
from avila.storage.base import Store


def user_profile(
    store: Store, project_id: str, user_id: str, *, recent: int = 20, top_n: int = 10
) -> dict[str, Any]:
    """``{"user_id", "first_seen", "last_seen", "total_events", "sessions", "total_revenue",
    "events_by_type", "top_pages": [{"url", "views"}], "devices": [{"device_type", "os",
    "browser", "events"}], "locations": [{"country", "city", "events"}], "recent_events": [...]}``
    over every stored event of the user; times RFC 3339 UTC. Unknown user: NotFound.

    Three store queries: the stitching probe, the user's rows with the columns the counts and
    the sessions need (sessions need every row anyway), and the most recent events. The counts
    are taken from those rows here; ties sort as the SQL ``ORDER BY count DESC, key`` did
    (NULL keys last). Before, each count was its own scan of the events table: nine queries,
    each a round trip to the store process (~100 ms a profile on an idle server with 450,000
    events, benchmarks/RESULTS.md)."""
    key = [project_id, user_id]
    where = "project_id = ? AND user_id = ?"
    source = events_source(store, project_id)
    rows = sorted_events(store, project_id, Expr(where, tuple(key)), extra=_COUNTED, source=source)
    if not rows.num_rows:
        raise NotFound(f"user {user_id!r} not found", code="user_not_found")
    recent_rows = store.query(
        "SELECT event_id, event_type, ts, session_id, url, product_id, event_name, revenue"
        f" FROM {source} WHERE {where} ORDER BY ts DESC, event_id LIMIT ?",
        [*key, recent],
    )
    first, last = pc.min_max(rows.column("t")).values()
    types = rows.column("event_type")
    purchases = rows.filter(pc.equal(types, "purchase")).column("revenue")
    page_views = rows.filter(pc.and_(pc.equal(types, "page_view"), pc.is_valid(rows["url"])))
    return {
        "user_id": user_id,
        "first_seen": iso(_from_epoch_us(first.as_py())),
        "last_seen": iso(_from_epoch_us(last.as_py())),
        "total_events": rows.num_rows,
        "sessions": summary(sessionize(rows))["sessions"],
        # exact whatever the order and magnitudes (the cents next to 1e15)
        "total_revenue": math.fsum(v for v in purchases.to_pylist() if v is not None),
        "events_by_type": {t: n for (t,), n in _top(rows, ["event_type"], None)},
        "top_pages": [{"url": u, "views": n} for (u,), n in _top(page_views, ["url"], top_n)],
        "devices": [
            {"device_type": d, "os": o, "browser": b, "events": n}
            for (d, o, b), n in _top(rows, ["device_type", "os", "browser"], top_n)
        ],
        "locations": [
            {"country": c, "city": ci, "events": n}
            for (c, ci), n in _top(rows, ["country", "city"], top_n)
        ],
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


#: The columns a profile counts, read beside :func:`sorted_events`' session columns.
_COUNTED = "event_type, revenue, url, device_type, os, browser, country, city"
_EPOCH = datetime(1970, 1, 1)


def _from_epoch_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _top(rows: pa.Table, keys: list[str], limit: int | None) -> list[tuple[tuple[Any, ...], int]]:
    """``(key values, rows)`` per distinct ``keys`` of ``rows``: most rows first, ties by the
    keys ascending with None last (SQL's ``ORDER BY count DESC, key...``); at most ``limit``."""
    counted = rows.select(keys).group_by(keys, use_threads=False).aggregate([([], "count_all")])
    groups = zip(*(counted.column(k).to_pylist() for k in keys), strict=True)
    found = list(zip(groups, counted.column("count_all").to_pylist(), strict=True))
    found.sort(key=lambda item: (-item[1], *((v is None, "" if v is None else v) for v in item[0])))
    return found if limit is None else found[:limit]


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
