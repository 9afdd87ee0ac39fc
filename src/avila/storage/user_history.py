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

What holds after every transaction: every (project, user, day) of the history is a user day,
and every user day before ``through`` is in the history. A reader takes the history and the
user days from ``through`` on (:data:`PER_USER`), a day found in both counts once (a first day
is a minimum, activity a bitwise or or a maximum). Writers keep it so:

* a write of user days before ``through`` (a late event, an import of history) lowers it to the
  first day written (:func:`note_written`, in the write's transaction): no merge on the ingest
  path;
* an erasure deletes the users' rows (:func:`forget_statement`), beside their user days;
* compaction sums a day's user-day rows per key and keeps every key (a user day's events never
  sum to zero), so it leaves the history true;
* the ingest loader's upkeep folds the finished days from ``through`` on into the history and
  raises the watermark (:func:`due_fold`, :func:`fold`), at most :data:`FOLD_ROWS` user-day
  rows per transaction: a store upgraded with its history catches up over several idle ticks,
  and reads the user days meanwhile (the same answer, only slower).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any, NamedTuple

#: Migration 18: the tables, empty, with the watermark at the first date (nothing folded yet:
#: readers take every user day until the upkeep has folded them).
DDL: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS rollup_user_history (project_id VARCHAR NOT NULL,"
    " user_key UHUGEINT NOT NULL, first_day DATE NOT NULL, days DATE[] NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rollup_user_history_through (through DATE NOT NULL)",
    "INSERT INTO rollup_user_history_through SELECT DATE '0001-01-01'"
    " WHERE NOT EXISTS (SELECT 1 FROM rollup_user_history_through)",
)

#: User-day rows one fold reads at most (at least one day's): ~5 s of a loader round's wait on
#: the 100 M-event bench store, where a day has ~360,000.
FOLD_ROWS = 5_000_000

#: The project's users, one row each: ``user_key``, ``first_day`` (the first UTC day the user
#: was active on) and ``days`` (every day they were active on, a day possibly twice), from the
#: history and the user days from the watermark on. Parameters: the project twice.
PER_USER = """(
  SELECT user_key, least(h.first_day, r.first_day) AS first_day,
    list_concat(h.days, r.days) AS days
  FROM (SELECT user_key, first_day, days FROM rollup_user_history WHERE project_id = ?) h
  FULL JOIN (
    SELECT user_key, min(day) AS first_day, list(day) AS days FROM rollup_user_days
    WHERE project_id = ? AND day >= (SELECT through FROM rollup_user_history_through)
    GROUP BY user_key
  ) r USING (user_key)
)"""


#: The keys of the project's users active on some day before a date: the history's users
#: whose first day is earlier, and the users of the user days from the watermark up to it (a
#: user may be listed twice). Parameters: project, date, project, date.
SEEN_BEFORE = """
  SELECT user_key FROM rollup_user_history WHERE project_id = ? AND first_day < ?
  UNION ALL
  SELECT user_key FROM rollup_user_days WHERE project_id = ?
    AND day >= (SELECT through FROM rollup_user_history_through) AND day < ?"""


def through(cursor: Any) -> date:
    """The watermark: every user day before it is in the history."""
    ((day,),) = cursor.execute("SELECT through FROM rollup_user_history_through").fetchall()
    return day  # type: ignore[no-any-return]


def note_written(cursor: Any, first_day: date | None) -> None:
    """Keep the watermark true after writing user days from ``first_day`` on (None: none
    written); call inside the writing transaction. Live events are of today and yesterday,
    after the watermark: nothing to do for them."""
    if first_day is not None:
        cursor.execute(
            "UPDATE rollup_user_history_through SET through = ? WHERE through > ?",
            [first_day, first_day],
        )


def note_written_sql(cursor: Any, relation: str) -> None:
    """:func:`note_written` for the events in ``relation`` (a registered view or table name
    chosen by the caller, never user input)."""
    cursor.execute(
        "UPDATE rollup_user_history_through SET through = w.first_day"
        f" FROM (SELECT min(ts)::DATE AS first_day FROM {relation}) w WHERE w.first_day < through"
    )


def forget_statement(
    project_id: str, user_ids: Sequence[str], user_key: str
) -> tuple[str, list[Any]]:
    """The statement that deletes ``user_ids``' history; ``user_key``: the key's expression
    over a column ``user_id`` (:data:`avila.storage.rollups.USER_KEY`)."""
    key = user_key.replace("user_id", "?")  # the key of a parameter
    marks = ", ".join(key for _ in user_ids)
    return (
        f"DELETE FROM rollup_user_history WHERE project_id = ? AND user_key IN ({marks})",
        [project_id, *user_ids],
    )


class Fold(NamedTuple):
    """The days ``[start, end)`` one fold takes into the history."""

    start: date
    end: date


def due_fold(cursor: Any, finished: date) -> Fold | None:
    """The next fold, or None when the watermark is at ``finished``, the first unfinished day
    (:func:`avila.storage.rollups.finished_before`): the days from the watermark on, as many
    whole days as hold :data:`FOLD_ROWS` user-day rows (at least one). Only reads."""
    start, max_rows = through(cursor), FOLD_ROWS
    if start >= finished:
        return None
    taken = 0
    for day, rows in cursor.execute(
        "SELECT day, count(*) FROM rollup_user_days WHERE day >= ? AND day < ?"
        " GROUP BY day ORDER BY day",
        [start, finished],
    ).fetchall():
        if taken and taken + rows > max_rows:
            return Fold(start, day)
        taken += rows
    return Fold(start, finished)


def fold(cursor: Any, days: Fold) -> bool:
    """Take the user days of ``days`` into the history and move the watermark to its end; call
    inside a write transaction. False (nothing done) when a write lowered the watermark since
    :func:`due_fold` looked: the next look starts from there."""
    if through(cursor) != days.start:
        return False
    cursor.execute(
        "CREATE OR REPLACE TEMP TABLE _history_fold AS SELECT project_id, user_key,"
        " min(day) AS first_day, list(DISTINCT day) AS days FROM rollup_user_days"
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
    cursor.execute("UPDATE rollup_user_history_through SET through = ?", [days.end])
    return True
