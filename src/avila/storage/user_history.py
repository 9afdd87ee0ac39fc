"""Each user's active days in one row, for questions about a user's whole history.

Retention asks, of every user, on which day they were first active and whether they came back
in later periods. From the user days (:mod:`avila.storage.rollups`, a row per user and day)
that is one aggregation by user of the whole history: at 100 M events 43 M rows into 3.1 M
groups, a hash table that no longer fits the caches, so the cost grew 13x from 10 M to 100 M.
This table keeps that aggregation's result, so a reader only filters rows:

* ``rollup_user_history (project_id, user_key, first_day, days)``: one row per project and
  user key (:data:`avila.storage.rollups.USER_KEY`): the UTC days the user was active on (in
  no particular order, a day possibly twice) and the first of them.
* ``rollup_user_history_through (through)``: one row, the watermark.
* ``rollup_user_history_late (project_id, user_key, day)``: user days before the watermark
  written after it had passed them (a late event, an import of history), not folded yet.

What holds after every transaction: every (project, user, day) of the history and of the late
rows is a user day, and every user day before ``through`` is in the history or the late rows.
A reader takes the three (:data:`PER_USER`): the history, the late rows and the user days from
``through`` on; a day found twice counts once (a first day is a minimum, activity a bitwise or
or a maximum). Writers keep it so:

* a write of user days before ``through`` appends their (user, day) pairs to the late rows, in
  the write's transaction (:func:`add_late`, :func:`add_late_sql`): a few rows for late events,
  no merge on the ingest path, and the watermark never moves back;
* an erasure deletes the users' history and late rows (:func:`forget_statements`), beside their
  user days;
* compaction sums a day's user-day rows per key and keeps every key (a user day's events never
  sum to zero), so it leaves the history true;
* the ingest loader's upkeep folds (:func:`due_fold`, :func:`fold`): the late rows first, then
  the finished days from ``through`` on, raising the watermark; at most :data:`FOLD_ROWS` rows
  per transaction, so a store upgraded with its history (or one that imported old events)
  catches up over several idle ticks, and reads the user days meanwhile (the same answer,
  only slower).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

#: Migration 18: the tables, empty, with the watermark at the first date (nothing folded yet:
#: readers take every user day until the upkeep has folded them).
DDL: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS rollup_user_history (project_id VARCHAR NOT NULL,"
    " user_key UHUGEINT NOT NULL, first_day DATE NOT NULL, days DATE[] NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rollup_user_history_through (through DATE NOT NULL)",
    "INSERT INTO rollup_user_history_through SELECT DATE '0001-01-01'"
    " WHERE NOT EXISTS (SELECT 1 FROM rollup_user_history_through)",
)

#: Migration 19: the user days written before the watermark after it had passed them.
LATE_DDL: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS rollup_user_history_late (project_id VARCHAR NOT NULL,"
    " user_key UHUGEINT NOT NULL, day DATE NOT NULL)",
)

#: Rows one fold reads at most (at least one day's): ~5 s of a loader round's wait on the
#: 100 M-event bench store, where a day has ~360,000 user days.
FOLD_ROWS = 5_000_000

_WATERMARK = "(SELECT through FROM rollup_user_history_through)"

#: The project's users, one row each: ``user_key``, ``first_day`` (the first UTC day the user
#: was active on) and ``days`` (every day they were active on, a day possibly twice), from the
#: history, the late rows and the user days from the watermark on. Parameters: the project
#: three times.
PER_USER = f"""(
  SELECT user_key, least(h.first_day, r.first_day) AS first_day,
    list_concat(h.days, r.days) AS days
  FROM (SELECT user_key, first_day, days FROM rollup_user_history WHERE project_id = ?) h
  FULL JOIN (
    SELECT user_key, min(day) AS first_day, list(day) AS days FROM (
      SELECT user_key, day FROM rollup_user_days WHERE project_id = ? AND day >= {_WATERMARK}
      UNION ALL
      SELECT user_key, day FROM rollup_user_history_late WHERE project_id = ?)
    GROUP BY user_key
  ) r USING (user_key)
)"""

#: The keys of the project's users active on some day before a date: the history's users
#: whose first day is earlier, the late rows' and the user days' from the watermark up to it (a
#: user may be listed more than once). Parameters: project and date, three times.
SEEN_BEFORE = f"""
  SELECT user_key FROM rollup_user_history WHERE project_id = ? AND first_day < ?
  UNION ALL
  SELECT user_key FROM rollup_user_history_late WHERE project_id = ? AND day < ?
  UNION ALL
  SELECT user_key FROM rollup_user_days WHERE project_id = ? AND day >= {_WATERMARK}
    AND day < ?"""


def through(cursor: Any) -> date:
    """The watermark: every user day before it is in the history or the late rows."""
    ((day,),) = cursor.execute(f"SELECT {_WATERMARK}").fetchall()
    return day  # type: ignore[no-any-return]


def add_late(cursor: Any, user_days: pa.Table, user_key: str) -> None:
    """Append the (user, day) pairs of ``user_days`` (the user-day rows being written:
    ``project_id``, ``day``, ``user_id``) from before the watermark to the late rows; call
    inside the writing transaction. ``user_key``: the key's expression over ``user_id``
    (:data:`avila.storage.rollups.USER_KEY`). Live events are of today and yesterday, after
    the watermark: one look at it, nothing written."""
    first = pc.min(user_days.column("day")).as_py()
    if first is None or first >= through(cursor):
        return
    cursor.register("_late_user_days", user_days)
    try:
        add_late_sql(
            cursor, f"(SELECT project_id, {user_key} AS user_key, day FROM _late_user_days)"
        )
    finally:
        cursor.unregister("_late_user_days")


def add_late_sql(cursor: Any, relation: str) -> None:
    """:func:`add_late` for the user-day rows in ``relation`` (a registered view or table name
    chosen by the caller, never user input, with ``project_id``, ``user_key`` and ``day``)."""
    cursor.execute(
        "INSERT INTO rollup_user_history_late SELECT DISTINCT project_id, user_key, day"
        f" FROM {relation} WHERE day < {_WATERMARK}"
    )


def forget_statements(
    project_id: str, user_ids: Sequence[str], user_key: str
) -> list[tuple[str, list[Any]]]:
    """The statements that delete ``user_ids``' history and late rows; ``user_key``: the
    key's expression over a column ``user_id`` (:data:`avila.storage.rollups.USER_KEY`)."""
    key = user_key.replace("user_id", "?")  # the key of a parameter
    marks = ", ".join(key for _ in user_ids)
    return [
        (
            f"DELETE FROM {table} WHERE project_id = ? AND user_key IN ({marks})",
            [project_id, *user_ids],
        )
        for table in ("rollup_user_history", "rollup_user_history_late")
    ]


class Fold(NamedTuple):
    """The days ``[start, end)`` one fold takes into the history: of the late rows
    (``late``), or of the user days from the watermark on."""

    start: date
    end: date
    late: bool = False


def due_fold(cursor: Any, finished: date) -> Fold | None:
    """The next fold, or None when there are no late rows and the watermark is at
    ``finished``, the first unfinished day (:func:`avila.storage.rollups.finished_before`):
    the late rows' first days, else the days from the watermark on, as many whole days as
    hold :data:`FOLD_ROWS` rows (at least one). Only reads."""
    late = cursor.execute(
        "SELECT day, count(*) FROM rollup_user_history_late GROUP BY day ORDER BY day"
    ).fetchall()
    if late:
        return Fold(late[0][0], _cut(late) or late[-1][0] + timedelta(days=1), late=True)
    start = through(cursor)
    if start >= finished:
        return None
    days = cursor.execute(
        "SELECT day, count(*) FROM rollup_user_days WHERE day >= ? AND day < ?"
        " GROUP BY day ORDER BY day",
        [start, finished],
    ).fetchall()
    return Fold(start, _cut(days) or finished)


def _cut(rows: list[tuple[date, int]]) -> date | None:
    """The first day of ``rows`` ((day, rows), by day) past the first :data:`FOLD_ROWS` rows
    (at least one day before it), or None when they all fit."""
    taken = 0
    for day, count in rows:
        if taken and taken + count > FOLD_ROWS:
            return day
        taken += count
    return None


def fold(cursor: Any, days: Fold) -> bool:
    """Take ``days`` (:func:`due_fold`) into the history; call inside a write transaction.
    Late rows are deleted once folded; user days move the watermark to the fold's end. False
    (nothing done) when the watermark moved since :func:`due_fold` looked."""
    if days.late:
        rows = "SELECT project_id, user_key, day FROM rollup_user_history_late"
    else:
        rows = "SELECT project_id, user_key, day FROM rollup_user_days"
        if through(cursor) != days.start:
            return False
    cursor.execute(
        "CREATE OR REPLACE TEMP TABLE _history_fold AS SELECT project_id, user_key,"
        f" min(day) AS first_day, list(DISTINCT day) AS days FROM ({rows})"
        " WHERE day >= ? AND day < ? GROUP BY ALL",
        [days.start, days.end],
    )
    cursor.execute(
        "UPDATE rollup_user_history h SET first_day = least(h.first_day, f.first_day),"
        " days = list_distinct(list_concat(h.days, f.days)) FROM _history_fold f"
        " WHERE h.project_id = f.project_id AND h.user_key = f.user_key"
    )
    cursor.execute(
        "INSERT INTO rollup_user_history SELECT f.* FROM _history_fold f WHERE NOT EXISTS"
        " (SELECT 1 FROM rollup_user_history h WHERE h.project_id = f.project_id"
        " AND h.user_key = f.user_key)"
    )
    cursor.execute("DROP TABLE _history_fold")
    if days.late:
        cursor.execute(
            "DELETE FROM rollup_user_history_late WHERE day >= ? AND day < ?",
            [days.start, days.end],
        )
    else:
        cursor.execute("UPDATE rollup_user_history_through SET through = ?", [days.end])
    return True
