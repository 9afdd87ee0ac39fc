"""Daily rollups of the events table, kept exact as events are written and erased.

Two tables of *partial* aggregates (append-only, like a ClickHouse SummingMergeTree before its
merge): every write appends one row per key of the rows it wrote, so a key may have several
rows and readers always ``sum`` them. Late and out-of-order events simply add a row to their
own (UTC) day; nothing is rewritten, so the rollups are updated inside the very transaction
that appends the events (the loader's round, :meth:`DuckDBStore.append_events`) and are
exactly as crash-safe as the events.

* ``rollup_daily (project_id, day, event_type, kind, value, events, revenue)``: per UTC day
  and event type, ``kind`` ``'type'`` (value NULL: events and revenue of the type), ``'url'``
  (events per url) or ``'referrer'`` (events per referrer). Counts by type, page and referrer
  do not depend on who the user is, so identity stitching does not touch this table.
* ``rollup_user_days (project_id, day, user_id, country, device_type, events)``: one row per
  user, UTC day, country and device type seen. Distinct users over any set of whole days
  (unique users, DAU/WAU/MAU, users by country or device) are ``count(DISTINCT ...)`` over it;
  with identity stitching readers map ``user_id`` through the resolved identities first, so
  links added later are honoured without rewriting anything.

Revenue is summed as DECIMAL(38, 6), so sums and the negated sums of an erase cancel exactly
(a double would lose a small order next to a huge one); ingest bounds revenue to +-1e15, far
inside the 32 integer digits.

GDPR erase (:func:`forget_users`) appends the negated contribution of the user's events to
``rollup_daily`` and deletes their ``rollup_user_days`` rows before the events themselves are
deleted. Readers check that the rollup's event count over the days they use equals the events
table's (:mod:`avila.analytics.rollup_reads`), so a write that bypassed this module, or a crash
between the two steps of an erase, makes them read raw rows instead of a wrong rollup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from avila.storage.base import Store

ROLLUP_DDL: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS rollup_daily (project_id VARCHAR NOT NULL, day DATE NOT NULL,"
    " event_type VARCHAR NOT NULL, kind VARCHAR NOT NULL, value VARCHAR, events BIGINT NOT NULL,"
    " revenue DECIMAL(38, 6))",
    "CREATE TABLE IF NOT EXISTS rollup_user_days (project_id VARCHAR NOT NULL,"
    " day DATE NOT NULL, user_id VARCHAR NOT NULL, country VARCHAR, device_type VARCHAR,"
    " events BIGINT NOT NULL)",
)

#: ``{src}``: a relation with the events table's columns (the rows being written).
DAILY_FROM = """
SELECT project_id, ts::DATE AS day, event_type, 'type' AS kind, NULL::VARCHAR AS value,
  count(*) AS events, sum(revenue::DECIMAL(38, 6)) AS revenue FROM {src} GROUP BY ALL
UNION ALL
SELECT project_id, ts::DATE, event_type, 'url', url, count(*), NULL FROM {src}
WHERE url IS NOT NULL GROUP BY ALL
UNION ALL
SELECT project_id, ts::DATE, event_type, 'referrer', referrer, count(*), NULL FROM {src}
WHERE referrer IS NOT NULL GROUP BY ALL
"""
_USER_DAYS_FROM = """
SELECT project_id, ts::DATE AS day, user_id, country, device_type, count(*) AS events
FROM {src} GROUP BY ALL
"""


def _representable(src: str) -> str:
    """The rows of ``src`` whose revenue DECIMAL(38, 6) holds. The API bounds revenue to 1e15,
    but a direct store write (a migration, a test) may carry 1e308: such rows stay out of the
    rollups, so their days' counts disagree with the events table and readers take raw rows
    there (exact, only slower) instead of the write failing."""
    return f"(SELECT * FROM {src} WHERE revenue IS NULL OR abs(revenue) < 1e32)"


#: Migration 7: the tables, filled from the events already stored.
MIGRATION: tuple[str, ...] = (
    *ROLLUP_DDL,
    "INSERT INTO rollup_daily " + DAILY_FROM.format(src=_representable("events")),
    "INSERT INTO rollup_user_days " + _USER_DAYS_FROM.format(src=_representable("events")),
)


def add_events(cursor: Any, relation: str) -> None:
    """Append the partial aggregates of the rows in ``relation`` (a registered view or table
    name chosen by the caller, never user input); call inside the writing transaction."""
    rows = _representable(relation)
    cursor.execute("INSERT INTO rollup_daily " + DAILY_FROM.format(src=rows))
    cursor.execute("INSERT INTO rollup_user_days " + _USER_DAYS_FROM.format(src=rows))


def forget_users(store: Store, project_id: str, user_ids: Sequence[str]) -> None:
    """Make the rollups forget ``user_ids`` (call before deleting their events)."""
    marks = ", ".join("?" for _ in user_ids)
    mine = _representable(f"(SELECT * FROM events WHERE project_id = ? AND user_id IN ({marks}))")
    store.execute(
        "INSERT INTO rollup_daily SELECT project_id, day, event_type, kind, value, -events,"
        f" -revenue FROM ({DAILY_FROM.format(src=mine)})",
        [project_id, *user_ids] * 3,
    )
    store.execute(
        f"DELETE FROM rollup_user_days WHERE project_id = ? AND user_id IN ({marks})",
        [project_id, *user_ids],
    )
