"""The purchases kept beside the events: a copy of every ``purchase`` event's columns that RFM
reads (``kept_purchases``), written in the transaction that writes the events.

RFM over a year reads every purchase of the window, and purchases are a small share of the
events (1.5 % in the benchmark's data), spread over all of its days: the events table is
ordered by time, so finding them means scanning every row of the window (3.6 s of CPU at
100 M events). This table holds exactly those rows, so RFM reads them alone.

Kept exact like the rollups (:mod:`avila.storage.rollups`): every events write adds its
purchases here in the same transaction (:func:`add_rows` from Arrow, :func:`add_events` with
SQL for the bulk import), a GDPR erase deletes the user's rows (:func:`forget_statements`),
and migration 15 fills the table from the events already stored. Rows are copied as they are
(duplicates of an event id included), so a query over them answers what the same query over
the events' purchases answers. Readers check first that the copy holds as many purchases as
the daily rollup counts over the days they read, and that the rollup agrees with the events
table (:func:`avila.analytics.rfm.score_table`); a write that bypassed this module makes them
read the events instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from avila.storage.base import Statement

#: The events' columns a purchase is kept with (RFM's: who, when, which order, how much).
COLUMNS = ("project_id", "user_id", "ts", "event_id", "order_id", "revenue")

DDL: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS kept_purchases (project_id VARCHAR NOT NULL,"
    " user_id VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, event_id VARCHAR NOT NULL,"
    " order_id VARCHAR, revenue DOUBLE)",
)
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM {{src}} WHERE event_type = 'purchase'"

#: Migration 15: the table, filled from the events already stored.
MIGRATION: tuple[str, ...] = (*DDL, "INSERT INTO kept_purchases " + _SELECT.format(src="events"))

#: The kept purchases as the events relation RFM reads (its WHERE names ``event_type``).
RELATION = "(SELECT *, 'purchase' AS event_type FROM kept_purchases)"
#: ... with each raw id mapped to its person, as the events relations of a project with
#: identity links map them (``{persons}``: ``person_map`` or ``identity_resolved``, checked by
#: the caller).
PERSONS_RELATION = (
    "(SELECT k.* REPLACE (coalesce(m.user_id, k.user_id) AS user_id), 'purchase' AS event_type"
    " FROM kept_purchases k LEFT JOIN {persons} m"
    " ON m.project_id = k.project_id AND m.anonymous_id = k.user_id)"
)


def add_rows(cursor: Any, events: pa.Table) -> None:
    """Keep the purchases among ``events`` (columns of the events table, being appended in the
    caller's transaction)."""
    bought = pc.equal(events.column("event_type"), "purchase")
    if not pc.any(bought).as_py():
        return
    cursor.from_arrow(events.filter(bought).select(list(COLUMNS))).insert_into("kept_purchases")


def add_events(cursor: Any, relation: str) -> None:
    """Keep the purchases among the rows of ``relation`` (already in the events table; a name
    or subquery chosen by the caller, never user input); call inside the writing transaction.
    For writes that did not go through Arrow (bulk import)."""
    cursor.execute("INSERT INTO kept_purchases " + _SELECT.format(src=relation))


def forget_statements(project_id: str, user_ids: Sequence[str]) -> list[Statement]:
    """The statement that forgets ``user_ids``' purchases: run it in the transaction that
    deletes their events."""
    marks = ", ".join("?" for _ in user_ids)
    return [
        (
            f"DELETE FROM kept_purchases WHERE project_id = ? AND user_id IN ({marks})",
            [project_id, *user_ids],
        )
    ]
