"""Sessions kept as events are written, so a sessions report reads sessions, not raw rows.

Two tables, written in the transaction that writes the events (like :mod:`avila.storage.rollups`)
and read by :mod:`avila.analytics.session_reads` for the default question (no filters, the
default 30 min timeout and 24 h cut, a project without identity links):

* ``kept_sessions (project_id, user_id, start_us, end_us, events, page_views, chain_start_us,
  chain_end_us)``: one row per inactivity session (events without a ``session_id``), cut exactly
  as :func:`avila.analytics.sessions.sessionize` cuts them. A *chain* is a maximal run of a
  user's events with no gap above the timeout; the 24 h pieces of a chain are measured from the
  chain's first event, so a chain is the unit that is recomputed: when new events land within
  the timeout of a stored chain (or inside it, late), every chain they touch is deleted and
  recomputed from the events table over the touched span. Chains of one user never overlap,
  and they are separated by more than the timeout, so recomputing a span that starts and ends
  at chain edges changes nothing outside it.
* ``kept_keyed_sessions (project_id, user_id, session_id, start_us, end_us, events,
  page_views)``: partial aggregates of the events *with* a client ``session_id``, one row per
  session per write. A keyed session is a group, not a run, so its partials merge exactly
  (min, max, sums) and no write has to read what is stored.

Times are epoch microseconds (BIGINT). Rows are appended roughly in time order, so the
readers' and the recompute's time bounds skip old row groups by their min/max (zone maps).
Erasure deletes a user's rows in the transaction that deletes their events
(:func:`forget_statements`). The reader checks that the events it accounts for equal the events
table's count over the range, and reads raw rows when they do not (a write that bypassed this
module).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from avila.storage.base import Statement

US = 1_000_000
#: The question the tables answer (:class:`avila.schemas.analytics.SessionsQuery`'s defaults).
TIMEOUT_US = 1800 * US
MAX_SESSION_US = 86_400 * US

DDL: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS kept_sessions (project_id VARCHAR NOT NULL,"
    " user_id VARCHAR NOT NULL, start_us BIGINT NOT NULL, end_us BIGINT NOT NULL,"
    " events BIGINT NOT NULL, page_views BIGINT NOT NULL, chain_start_us BIGINT NOT NULL,"
    " chain_end_us BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS kept_keyed_sessions (project_id VARCHAR NOT NULL,"
    " user_id VARCHAR NOT NULL, session_id VARCHAR NOT NULL, start_us BIGINT NOT NULL,"
    " end_us BIGINT NOT NULL, events BIGINT NOT NULL, page_views BIGINT NOT NULL)",
)
TABLES = ("kept_sessions", "kept_keyed_sessions")

SESSION_SCHEMA = pa.schema(
    [
        ("project_id", pa.string()),
        ("user_id", pa.string()),
        ("start_us", pa.int64()),
        ("end_us", pa.int64()),
        ("events", pa.int64()),
        ("page_views", pa.int64()),
        ("chain_start_us", pa.int64()),
        ("chain_end_us", pa.int64()),
    ]
)
_TOUCHED_SCHEMA = pa.schema(
    [("project_id", pa.string()), ("user_id", pa.string()), ("lo", pa.int64()), ("hi", pa.int64())]
)
#: Rows of anonymous events recomputed per pass of :func:`build`.
BUILD_SLICE_ROWS = 4_000_000


def cut(
    user: np.ndarray, t: np.ndarray, timeout_us: int, max_us: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inactivity sessions of rows sorted by ``user`` (any integer code) then time ``t``
    (epoch µs): the first row of each session, the first row of its chain, and each row's
    chain number (:data:`TIMEOUT_US`, :data:`MAX_SESSION_US` for the kept tables)."""
    n = len(t)
    brk = np.ones(n, dtype=bool)
    brk[1:] = (user[1:] != user[:-1]) | (np.diff(t) > timeout_us)
    chain = np.cumsum(brk) - 1
    chain_first = np.flatnonzero(brk)
    piece = (t - t[chain_first][chain]) // max_us
    new = brk.copy()
    new[1:] |= piece[1:] != piece[:-1]
    return np.flatnonzero(new), chain_first, chain


def touched(events: pa.Table) -> pa.Table | None:
    """``(project_id, user_id, lo, hi)``: the written events without a ``session_id``, their
    first and last time per user (what :func:`settle` recomputes around); None if none."""
    anon = events.filter(pc.is_null(events.column("session_id")))
    if anon.num_rows == 0:
        return None
    rows = pa.table(
        {
            "project_id": anon.column("project_id"),
            "user_id": anon.column("user_id"),
            "t": pc.cast(anon.column("ts"), pa.int64()),
        }
    )
    found = rows.group_by(["project_id", "user_id"], use_threads=False).aggregate(
        [("t", "min"), ("t", "max")]
    )
    return pa.Table.from_arrays(
        [found.column(0), found.column(1), found.column("t_min"), found.column("t_max")],
        schema=_TOUCHED_SCHEMA,
    )


def add_keyed(cursor: Any, events: pa.Table) -> None:
    """Append the partial rows of the written events that carry a ``session_id``."""
    sid = events.column("session_id")
    if sid.null_count == len(sid):
        return
    keyed = events.filter(pc.is_valid(sid))
    rows = pa.table(
        {
            "project_id": keyed.column("project_id"),
            "user_id": keyed.column("user_id"),
            "session_id": keyed.column("session_id"),
            "t": pc.cast(keyed.column("ts"), pa.int64()),
            "pv": pc.cast(pc.equal(keyed.column("event_type"), "page_view"), pa.int64()),
        }
    )
    found = rows.group_by(["project_id", "user_id", "session_id"], use_threads=False).aggregate(
        [("t", "min"), ("t", "max"), ("t", "count"), ("pv", "sum")]
    )
    cursor.from_arrow(found).insert_into("kept_keyed_sessions")


def add_events(cursor: Any, relation: str) -> None:
    """Keep the sessions of the rows in ``relation`` (already in the events table; a name or
    subquery chosen by the caller, never user input) with SQL; call inside the writing
    transaction. For writes that did not go through Arrow (bulk import)."""
    cursor.execute(
        "INSERT INTO kept_keyed_sessions SELECT project_id, user_id, session_id,"
        " min(epoch_us(ts)), max(epoch_us(ts)), count(*), count(*) FILTER (event_type ="
        f" 'page_view') FROM {relation} WHERE session_id IS NOT NULL GROUP BY ALL"
    )
    found = _arrow(
        cursor,
        "SELECT project_id, user_id, min(epoch_us(ts)) AS lo, max(epoch_us(ts)) AS hi"
        f" FROM {relation} WHERE session_id IS NULL GROUP BY ALL",
    )
    if found.num_rows:
        settle(cursor, [found.cast(_TOUCHED_SCHEMA)])


def settle(cursor: Any, touches: Sequence[pa.Table]) -> None:
    """Recompute the inactivity sessions of every chain the written events touch (``touches``:
    :func:`touched` of each piece written, the events already in the events table); call inside
    the writing transaction, after the events."""
    if not touches:
        return
    new = pa.concat_tables(touches)
    if len(touches) > 1:
        grouped = new.group_by(["project_id", "user_id"], use_threads=False).aggregate(
            [("lo", "min"), ("hi", "max")]
        )
        new = pa.Table.from_arrays(
            [grouped.column(0), grouped.column(1), grouped.column(2), grouped.column(3)],
            schema=_TOUCHED_SCHEMA,
        )
    low, high = pc.min(new.column("lo")).as_py(), pc.max(new.column("hi")).as_py()
    cursor.register("_kept_new", new)
    try:
        # Every stored chain within the timeout of a new event's user span, widened to whole
        # chains. The constant bounds let the scan skip row groups by their min/max.
        span = _arrow(
            cursor,
            "SELECT n.project_id, n.user_id, least(n.lo, min(k.chain_start_us)) AS lo,"
            " greatest(n.hi, max(k.chain_end_us)) AS hi FROM _kept_new n LEFT JOIN"
            " (SELECT project_id, user_id, chain_start_us, chain_end_us FROM kept_sessions"
            "  WHERE chain_end_us >= $low AND chain_start_us <= $high) k"
            " ON k.project_id = n.project_id AND k.user_id = n.user_id"
            " AND k.chain_end_us >= n.lo - $gap AND k.chain_start_us <= n.hi + $gap"
            " GROUP BY n.project_id, n.user_id, n.lo, n.hi",
            {"low": low - TIMEOUT_US, "high": high + TIMEOUT_US, "gap": TIMEOUT_US},
        )
    finally:
        cursor.unregister("_kept_new")
    _recompute(cursor, span)


def _recompute(cursor: Any, span: pa.Table) -> None:
    """Replace the stored sessions of each ``(project_id, user_id, lo, hi)`` span (whole
    chains) with those cut from the events table."""
    low, high = pc.min(span.column("lo")).as_py(), pc.max(span.column("hi")).as_py()
    cursor.register("_kept_span", span)
    try:
        cursor.execute(
            "DELETE FROM kept_sessions k USING _kept_span s WHERE k.project_id = s.project_id"
            " AND k.user_id = s.user_id AND k.chain_start_us >= s.lo AND k.chain_end_us <= s.hi"
            " AND k.chain_end_us >= $low",
            {"low": low},
        )
        rows = _arrow(
            cursor,
            "SELECT e.project_id, e.user_id, epoch_us(e.ts) AS t,"
            " e.event_type = 'page_view' AS pv FROM events e JOIN _kept_span s"
            " ON e.project_id = s.project_id AND e.user_id = s.user_id"
            " WHERE e.session_id IS NULL AND e.ts >= make_timestamp($low)"
            " AND e.ts <= make_timestamp($high) AND epoch_us(e.ts) BETWEEN s.lo AND s.hi"
            " ORDER BY e.project_id, e.user_id, e.ts",
            {"low": low, "high": high},
        )
    finally:
        cursor.unregister("_kept_span")
    if rows.num_rows:
        cursor.from_arrow(sessions_of(rows)).insert_into("kept_sessions")


def sessions_of(rows: pa.Table) -> pa.Table:
    """:data:`SESSION_SCHEMA` rows of ``(project_id, user_id, t, pv)`` rows sorted by project,
    user and time."""
    key = pc.binary_join_element_wise(
        rows.column("project_id"), rows.column("user_id"), "\x00"
    ).combine_chunks()
    user = np.asarray(pc.dictionary_encode(key).indices.to_numpy(), dtype=np.int64)
    t = np.asarray(rows.column("t").to_numpy(), dtype=np.int64)
    pv = np.asarray(rows.column("pv").to_numpy(zero_copy_only=False), dtype=np.int64)
    first, chain_first, chain = cut(user, t, TIMEOUT_US, MAX_SESSION_US)
    last = np.append(first[1:] - 1, len(t) - 1)
    chain_last = np.append(chain_first[1:] - 1, len(t) - 1)
    take = pa.array(first)
    return pa.Table.from_arrays(
        [
            rows.column("project_id").take(take),
            rows.column("user_id").take(take),
            pa.array(t[first]),
            pa.array(t[last]),
            pa.array(last - first + 1),
            pa.array(np.add.reduceat(pv, first)),
            pa.array(t[chain_first][chain[first]]),
            pa.array(t[chain_last][chain[first]]),
        ],
        schema=SESSION_SCHEMA,
    )


def _arrow(cursor: Any, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
    return cursor.sql(sql, params=params).to_arrow_table()


def build(cursor: Any, report: Callable[[str], None] | None = None) -> None:
    """Fill the (empty) tables from the events already stored: the keyed partials in one
    statement, the inactivity sessions in passes over slices of users."""
    cursor.execute(
        "INSERT INTO kept_keyed_sessions SELECT project_id, user_id, session_id,"
        " min(epoch_us(ts)), max(epoch_us(ts)), count(*), count(*) FILTER (event_type ="
        " 'page_view') FROM events WHERE session_id IS NOT NULL GROUP BY ALL"
    )
    ((anonymous,),) = cursor.execute(
        "SELECT count(*) FROM events WHERE session_id IS NULL"
    ).fetchall()
    passes = max(1, -(-int(anonymous) // BUILD_SLICE_ROWS))
    for part in range(passes):
        span = _arrow(
            cursor,
            "SELECT project_id, user_id, min(epoch_us(ts)) AS lo, max(epoch_us(ts)) AS hi"
            " FROM events WHERE session_id IS NULL AND hash(user_id) % $n = $part GROUP BY ALL",
            {"n": passes, "part": part},
        )
        if span.num_rows:
            _recompute(cursor, span)
        if report is not None:
            report(f"sessions: pass {part + 1} of {passes}")


def forget_statements(project_id: str, user_ids: Sequence[str]) -> list[Statement]:
    """The statements that delete ``user_ids``' kept sessions (with their events)."""
    marks = ", ".join("?" for _ in user_ids)
    return [
        (f"DELETE FROM {table} WHERE project_id = ? AND user_id IN ({marks})",
         [project_id, *user_ids])
        for table in TABLES
    ]  # fmt: skip
