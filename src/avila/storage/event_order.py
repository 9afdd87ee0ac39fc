"""Events of a finished day stored in (project, user, time) order.

Events arrive in time order, so a day's rows lie in the table as they came: every user's rows
are spread over all of the day's row groups, and a read of one user's rows (a profile, an
erasure, the sessions read's chains that cross a range's edge, a bot among them) scans the
whole range. ClickHouse keeps a MergeTree in its sort key's order for this reason. Here the
ingest loader (between rounds or when idle) rewrites each finished UTC day (before yesterday:
its on-time events are in) in ``ORDER``, one day per transaction as rollup compaction does:
the day's row groups then hold a few users each, and their min/max statistics (zone maps) skip
the rest. On the 100 M-event bench store one user's rows over 30 days took 0.085 s instead of
0.35 s (benchmarks/RESULTS.md, "Events of finished days in user order").

Nothing reads the physical order for an answer: the rows are the same before and after (tests
compare every report on both). Late rows of an ordered day are appended as they come; the day
is ordered again once they are a tenth of its rows.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from avila.storage import rollups

#: the order of a finished day's rows
ORDER = "project_id, user_id, ts"

#: Migration 17: each ordered day and its rows then.
DDL: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS event_day_order (day DATE PRIMARY KEY, row_count BIGINT NOT NULL)",
)

#: A day ordered before is ordered again when its rows grew by this share ...
REORDER_SHARE = 0.1
#: ... and by at least this many rows.
REORDER_MIN_ROWS = 1000

#: Events per finished day (the daily rollups' counts: a look that costs no events scan) and
#: the rows each ordered day had then, newest day first.
_DAYS = """
WITH n AS (
  SELECT day, sum(events) AS events FROM rollup_daily
  WHERE kind = 'type' AND day < ? GROUP BY day
)
SELECT n.day, n.events, o.row_count FROM n LEFT JOIN event_day_order o ON o.day = n.day
WHERE n.events > 0 ORDER BY n.day DESC
"""


def due_days(cursor: Any) -> list[date]:
    """The finished days to order, newest first: never ordered, or grown by
    :data:`REORDER_SHARE` (and :data:`REORDER_MIN_ROWS`) since. Only reads."""
    due = []
    for day, events, ordered in cursor.execute(_DAYS, [rollups.finished_before()]).fetchall():
        if ordered is None or events - ordered >= max(REORDER_MIN_ROWS, REORDER_SHARE * ordered):
            due.append(day)
    return due


def order_day(cursor: Any, day: date) -> int:
    """Rewrite the events of the UTC ``day`` in :data:`ORDER` and record it; the rows. Call
    inside a write transaction."""
    bounds = [datetime.combine(day, datetime.min.time())]
    bounds.append(bounds[0] + timedelta(days=1))
    in_day = "ts >= ? AND ts < ?"
    cursor.execute(
        f"CREATE OR REPLACE TEMP TABLE _ordered_day AS SELECT * FROM events WHERE {in_day}"
        f" ORDER BY {ORDER}",
        bounds,
    )
    cursor.execute(f"DELETE FROM events WHERE {in_day}", bounds)
    cursor.execute("INSERT INTO events SELECT * FROM _ordered_day")
    ((rows,),) = cursor.execute("SELECT count(*) FROM _ordered_day").fetchall()
    cursor.execute("DROP TABLE _ordered_day")
    cursor.execute("INSERT OR REPLACE INTO event_day_order VALUES (?, ?)", [day, rows])
    return int(rows)
