"""Real time counts live traffic only: replayed history (demo, backfill, import) never counts.

The rule (docs/analytics.md, "Real time"): an event counts when it was *received* in the
window and its ``metadata.source`` is not ``demo``, ``backfill`` or ``import``. A late
offline event without such a marker still counts as now.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from analytics_data import PROJECT, event

from avila.analytics import realtime


def test_replayed_history_is_not_live_traffic(load) -> None:
    now = datetime(2024, 3, 1, 12)
    recent = now - timedelta(seconds=20)

    def marked(user: str, source: str | None, **fields: object) -> dict:
        meta = json.dumps({"source": source} if source else {})
        return event(user, recent, received_at=recent, metadata=meta, **fields)

    rows = [
        marked("demo-user", "demo", url="/demo"),
        marked("backfilled", "backfill", url="/old"),
        marked("imported", "import"),
        marked("live-1", None, url="/live"),
        marked("live-2", "segment", url="/live"),
        marked("live-3", "Demo"),  # sources are exact, lower-case markers
        event("live-4", now - timedelta(days=3), received_at=recent),  # late, unmarked
    ]
    got = realtime(load(rows), PROJECT, {"now": now.isoformat() + "Z"})
    # Oracle: the rows above without a replay marker.
    live = [
        r
        for r in rows
        if json.loads(r.get("metadata") or "{}").get("source") not in ("demo", "backfill", "import")
    ]
    assert got["events_last_minute"] == len(live) == 4
    assert got["active_users_last_minute"] == 4
    assert got["top_pages"] == [{"url": "/", "views": 2}, {"url": "/live", "views": 2}]
    assert got["events_by_type"] == {"page_view": 4}
