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

* ``kept_pending (project_id, user_id, t, pv)``: written events without a ``session_id`` whose
  sessions are not cut yet. Cutting costs a few statements, so a small write only appends here
  (one insert) and :class:`Upkeep` cuts the pending rows in bulk: when they pass
  :data:`SETTLE_ROWS`, when the oldest has waited :data:`SETTLE_SECONDS`, and before a
  sessions read (the store's ``settle_kept_sessions``). Every cut takes all pending rows with
  it (:func:`settle`): ``kept_sessions`` always holds the sessions of the stored events less
  the pending ones, which is what the live path's extension from the stored latest session
  relies on.

Times are epoch microseconds (BIGINT). Rows are appended roughly in time order, so the
readers' and the recompute's time bounds skip old row groups by their min/max (zone maps).
Erasure deletes a user's rows in the transaction that deletes their events
(:func:`forget_statements`). The reader checks that the events it accounts for equal the events
table's count over the range, and reads raw rows when they do not (a write that bypassed this
module).
"""

from __future__ import annotations

import time
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
#: Migration 13: events written whose sessions are not cut yet (:class:`Upkeep`).
PENDING_DDL = (
    "CREATE TABLE IF NOT EXISTS kept_pending (project_id VARCHAR NOT NULL,"
    " user_id VARCHAR NOT NULL, t BIGINT NOT NULL, pv BIGINT NOT NULL)",
)
TABLES = ("kept_sessions", "kept_keyed_sessions", "kept_pending")
#: Pending rows that make a write cut them all (a loader round at volume cuts its own rows).
SETTLE_ROWS = 20_000
#: A write cuts the pending rows once the oldest has waited this long. (Reads cut them anyway;
#: a cut with late events scans weeks of stored sessions, ~2.5 s at 100 M events.)
SETTLE_SECONDS = 60.0

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
#: The written events without a ``session_id`` (:func:`touched`).
NEW_SCHEMA = pa.schema(
    [
        ("project_id", pa.string()),
        ("user_id", pa.string()),
        ("t", pa.int64()),
        ("pv", pa.int64()),
    ]
)
#: Rows of anonymous events recomputed per pass of :func:`build`.
BUILD_SLICE_ROWS = 4_000_000


def cut(
    user: np.ndarray, t: np.ndarray, timeout_us: int, max_us: int, origin: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inactivity sessions of rows sorted by ``user`` (any integer code) then time ``t``
    (epoch µs): the first row of each session, the first row of each chain, each row's chain
    number, and each chain's start (:data:`TIMEOUT_US`, :data:`MAX_SESSION_US` for the kept
    tables). ``origin`` (per row, -1 for none) gives a chain that continues a stored one its
    stored start: the 24 h pieces are measured from it."""
    n = len(t)
    brk = np.ones(n, dtype=bool)
    brk[1:] = (user[1:] != user[:-1]) | (np.diff(t) > timeout_us)
    chain = np.cumsum(brk) - 1
    chain_first = np.flatnonzero(brk)
    chain_start = t[chain_first]
    if origin is not None:
        stored = origin[chain_first]
        chain_start = np.where(stored >= 0, stored, chain_start)
    piece = (t - chain_start[chain]) // max_us
    new = brk.copy()
    new[1:] |= piece[1:] != piece[:-1]
    return np.flatnonzero(new), chain_first, chain, chain_start


def touched(events: pa.Table) -> pa.Table | None:
    """:data:`NEW_SCHEMA` rows of the written events without a ``session_id`` (what
    :func:`settle` keeps the sessions of); None if none."""
    sid = events.column("session_id")
    if sid.null_count == 0:
        return None
    found = pa.Table.from_arrays(
        [
            events.column("project_id"),
            events.column("user_id"),
            pc.cast(events.column("ts"), pa.int64()),
            pc.cast(pc.equal(events.column("event_type"), "page_view"), pa.int64()),
        ],
        schema=NEW_SCHEMA,
    )
    return found if sid.null_count == len(sid) else found.filter(pc.is_null(sid))


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
    new = _arrow(
        cursor,
        "SELECT project_id, user_id, epoch_us(ts) AS t, (event_type = 'page_view')::BIGINT AS pv"
        f" FROM {relation} WHERE session_id IS NULL",
    )
    if new.num_rows:
        settle(cursor, [new.cast(NEW_SCHEMA)])


class Upkeep:
    """When the sessions of written events are cut: one per writing store, used under its
    write lock. ``pending``: the rows in ``kept_pending`` when the store opened. The count
    may run high (a write that rolled back, an erasure, a bulk import that cut them), never
    low, so a read never skips pending rows."""

    def __init__(self, pending: int) -> None:
        self.pending = pending
        self._since = time.monotonic() if pending else None

    def write(self, cursor: Any, touches: Sequence[pa.Table]) -> bool:
        """Defer or cut the sessions of the written events (:func:`touched` of each piece),
        in the writing transaction, after the events. True when it cut them: call
        :meth:`settled` once the transaction has committed."""
        rows = sum(touch.num_rows for touch in touches)
        if not rows:
            return False
        waited = self._since is not None and time.monotonic() - self._since >= SETTLE_SECONDS
        if waited or self.pending + rows >= SETTLE_ROWS:
            settle(cursor, touches, waiting=self.pending > 0)
            return True
        cursor.from_arrow(pa.concat_tables(touches)).insert_into("kept_pending")
        self.pending += rows
        if self._since is None:
            self._since = time.monotonic()
        return False

    def settled(self) -> None:
        """The transaction that cut every pending row has committed."""
        self.pending = 0
        self._since = None


#: Per user of the new rows (``_kept_new``: project, user, lo, hi), the stored chains within
#: the timeout of the user's new span: how many, their extent, and the latest session.
_TOUCHED_CHAINS = """
SELECT n.project_id, n.user_id, n.lo, n.hi,
  count(DISTINCT k.chain_start_us) AS chains, min(k.chain_start_us) AS cs,
  max(k.chain_end_us) AS ce, max(k.start_us) AS last_start,
  arg_max(k.end_us, k.start_us) AS last_end, arg_max(k.events, k.start_us) AS last_events,
  arg_max(k.page_views, k.start_us) AS last_pv, arg_max(k.rowid, k.start_us) AS last_row,
  count(k.start_us) AS sessions
FROM _kept_new n LEFT JOIN
  (SELECT rowid, * FROM kept_sessions WHERE chain_end_us >= $low AND chain_start_us <= $high
   AND user_id IN (SELECT unnest($users))) k
  ON k.project_id = n.project_id AND k.user_id = n.user_id
  AND k.chain_end_us >= n.lo - $gap AND k.chain_start_us <= n.hi + $gap
GROUP BY n.project_id, n.user_id, n.lo, n.hi
"""


def settle(cursor: Any, touches: Sequence[pa.Table], *, waiting: bool = True) -> None:
    """Cut the inactivity sessions of the written events (``touches``: :func:`touched` of
    each piece written, the events already in the events table) and of every pending row;
    call inside the writing transaction, after the events. ``waiting=False``: the caller
    knows no row is pending (:class:`Upkeep`: a loader round at volume skips a statement).

    Events after every stored event of their user (live traffic) extend the user's latest
    chain from its stored latest session alone. Late events (before a stored chain's end)
    make every chain they touch be recomputed from the events table."""
    if waiting:
        pending = _arrow(cursor, "SELECT project_id, user_id, t, pv FROM kept_pending")
        if pending.num_rows:
            cursor.execute("DELETE FROM kept_pending")
            touches = [pending.cast(NEW_SCHEMA), *touches]
    if not touches:
        return
    new = pa.concat_tables(touches)
    spans = new.group_by(["project_id", "user_id"], use_threads=False).aggregate(
        [("t", "min"), ("t", "max")]
    )
    spans = spans.rename_columns(["project_id", "user_id", "lo", "hi"])
    found = _touched_chains(cursor, spans)
    chains = found.column("chains")
    at_tail = pc.fill_null(
        pc.or_kleene(
            pc.equal(chains, 0),
            pc.and_kleene(
                pc.equal(chains, 1), pc.greater_equal(found.column("lo"), found.column("ce"))
            ),
        ),
        False,
    )
    late = found.filter(pc.invert(at_tail))
    if late.num_rows:
        # whole chains: from the first touched chain's start to the last one's end
        _recompute(
            cursor,
            pa.table(
                {
                    "project_id": late.column("project_id"),
                    "user_id": late.column("user_id"),
                    "lo": pc.min_element_wise(late.column("lo"), late.column("cs")),
                    "hi": pc.max_element_wise(late.column("hi"), late.column("ce")),
                }
            ),
        )
    tail = found.filter(at_tail)
    if tail.num_rows:
        if late.num_rows:
            new = new.filter(pc.is_in(_user_keys(new), value_set=_user_keys(tail)))
        _extend(cursor, tail, new)


def _touched_chains(cursor: Any, spans: pa.Table) -> pa.Table:
    """:data:`_TOUCHED_CHAINS` for ``spans`` (project, user, lo, hi)."""
    low, high = pc.min(spans.column("lo")).as_py(), pc.max(spans.column("hi")).as_py()
    cursor.register("_kept_new", spans)
    try:
        # The constant bounds let the scan skip row groups by their min/max; the list of
        # users filters the rest of the scan before the join. (One late event stretches the
        # bounds over weeks: at 100 M events this scans ~23 M stored sessions, ~1.2-2 s.)
        return _arrow(
            cursor,
            _TOUCHED_CHAINS,
            {
                "low": low - TIMEOUT_US,
                "high": high + TIMEOUT_US,
                "gap": TIMEOUT_US,
                "users": pc.unique(spans.column("user_id")).to_pylist(),
            },
        )
    finally:
        cursor.unregister("_kept_new")


def _extend(cursor: Any, tail: pa.Table, new: pa.Table) -> None:
    """Cut the new rows of users whose new events all come at or after their stored events'
    end: a user's latest stored session (if within the timeout) is replaced by a row that
    stands for it, the new rows are cut after it, and the chain's other sessions learn its new
    end."""
    rows = new
    stored = tail.filter(pc.equal(tail.column("chains"), 1))
    n = stored.num_rows
    # the stored session as one row: at its end, counting its events, starting at its start
    standing = pa.table(
        {
            "project_id": stored.column("project_id"),
            "user_id": stored.column("user_id"),
            "t": stored.column("last_end"),
            "pv": stored.column("last_pv"),
            "events": stored.column("last_events"),
            "start": stored.column("last_start"),
            "origin": stored.column("cs"),
        }
    )
    m = rows.num_rows
    fresh = rows.append_column("events", pa.array(np.ones(m, dtype=np.int64)))
    fresh = fresh.append_column("start", rows.column("t"))
    fresh = fresh.append_column("origin", pa.array(np.full(m, -1, dtype=np.int64)))
    both = pa.concat_tables([standing, fresh], promote_options="permissive")
    codes = _user_codes(both)
    order = np.lexsort((np.asarray(both.column("t").to_numpy(), dtype=np.int64), codes))
    both, codes = both.take(pa.array(order)), codes[order]
    if n:
        # (by row id: a join with the stored sessions costs a plan per write, ~10 ms)
        cursor.execute(
            "DELETE FROM kept_sessions WHERE rowid IN (SELECT unnest($rows))",
            {"rows": stored.column("last_row").to_pylist()},
        )
    sessions = sessions_of(both, codes)
    cursor.from_arrow(sessions).insert_into("kept_sessions")
    # the chains that went on: their earlier sessions (a chain over 24 h) learn its new end
    longer = stored.filter(pc.greater(stored.column("sessions"), 1))
    if longer.num_rows:
        went_on = sessions.filter(pc.is_in(sessions.column("chain_start_us"), longer.column("cs")))
        cursor.register("_kept_went_on", went_on)
        try:
            cursor.execute(
                "UPDATE kept_sessions k SET chain_end_us = w.chain_end_us FROM (SELECT DISTINCT"
                " project_id, user_id, chain_start_us, chain_end_us FROM _kept_went_on) w"
                " WHERE k.project_id = w.project_id AND k.user_id = w.user_id"
                " AND k.chain_start_us = w.chain_start_us AND k.chain_end_us < w.chain_end_us"
                " AND k.chain_end_us >= $low",
                {"low": pc.min(longer.column("ce")).as_py()},
            )
        finally:
            cursor.unregister("_kept_went_on")


def _user_codes(table: pa.Table) -> np.ndarray:
    """A number per (project_id, user_id) of the table's rows."""
    project = pc.dictionary_encode(table.column("project_id").combine_chunks())
    user = pc.dictionary_encode(table.column("user_id").combine_chunks())
    return np.asarray(project.indices.to_numpy(), dtype=np.int64) * len(user.dictionary) + (
        np.asarray(user.indices.to_numpy(), dtype=np.int64)
    )


def _user_keys(table: pa.Table) -> pa.Array:
    return pc.binary_join_element_wise(
        table.column("project_id"), table.column("user_id"), "\x00"
    ).combine_chunks()


def _recompute(cursor: Any, span: pa.Table) -> None:
    """Replace the stored sessions of each ``(project_id, user_id, lo, hi)`` span (whole
    chains) with those cut from the events table."""
    low, high = pc.min(span.column("lo")).as_py(), pc.max(span.column("hi")).as_py()
    users = pc.unique(span.column("user_id")).to_pylist()
    cursor.register("_kept_span", span)
    try:
        cursor.execute(
            "DELETE FROM kept_sessions k USING _kept_span s WHERE k.project_id = s.project_id"
            " AND k.user_id = s.user_id AND k.chain_start_us >= s.lo AND k.chain_end_us <= s.hi"
            " AND k.chain_end_us >= $low AND k.user_id IN (SELECT unnest($users))",
            {"low": low, "users": users},
        )
        rows = _arrow(
            cursor,
            "SELECT e.project_id, e.user_id, epoch_us(e.ts) AS t,"
            " (e.event_type = 'page_view')::BIGINT AS pv FROM events e JOIN _kept_span s"
            " ON e.project_id = s.project_id AND e.user_id = s.user_id"
            " WHERE e.session_id IS NULL AND e.ts >= make_timestamp($low)"
            " AND e.ts <= make_timestamp($high) AND epoch_us(e.ts) BETWEEN s.lo AND s.hi"
            " AND e.user_id IN (SELECT unnest($users)) ORDER BY e.project_id, e.user_id, e.ts",
            {"low": low, "high": high, "users": users},
        )
    finally:
        cursor.unregister("_kept_span")
    if rows.num_rows:
        cursor.from_arrow(sessions_of(rows)).insert_into("kept_sessions")


def sessions_of(rows: pa.Table, user: np.ndarray | None = None) -> pa.Table:
    """:data:`SESSION_SCHEMA` rows of ``(project_id, user_id, t, pv)`` rows sorted by project,
    user and time; optional columns make a row stand for a stored session: ``events`` (its
    events), ``start`` (its first event's time; ``t`` is its last) and ``origin`` (its chain's
    start, -1 for none). ``user``: the rows' :func:`_user_codes`, if known."""
    if user is None:
        user = _user_codes(rows)
    t = np.asarray(rows.column("t").to_numpy(), dtype=np.int64)
    pv = np.asarray(rows.column("pv").to_numpy(), dtype=np.int64)
    names = rows.column_names
    origin = _int64(rows, "origin") if "origin" in names else None
    first, chain_first, chain, chain_start = cut(user, t, TIMEOUT_US, MAX_SESSION_US, origin)
    last = np.append(first[1:] - 1, len(t) - 1)
    chain_last = np.append(chain_first[1:] - 1, len(t) - 1)
    events = _int64(rows, "events") if "events" in names else np.ones(len(t), dtype=np.int64)
    start = _int64(rows, "start") if "start" in names else t
    take = pa.array(first)
    return pa.Table.from_arrays(
        [
            rows.column("project_id").take(take),
            rows.column("user_id").take(take),
            pa.array(start[first]),
            pa.array(t[last]),
            pa.array(np.add.reduceat(events, first)),
            pa.array(np.add.reduceat(pv, first)),
            pa.array(chain_start[chain[first]]),
            pa.array(t[chain_last][chain[first]]),
        ],
        schema=SESSION_SCHEMA,
    )


def _int64(rows: pa.Table, name: str) -> np.ndarray:
    return np.asarray(rows.column(name).to_numpy(), dtype=np.int64)


def _arrow(cursor: Any, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
    return cursor.sql(sql, params=params).to_arrow_table()


def build(cursor: Any, report: Callable[[str], None] | None = None) -> None:
    """Fill the (empty) tables from the events already stored: the keyed partials in one
    statement, the inactivity sessions in passes over slices of users. Nothing may be
    pending (it would be cut twice)."""
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
