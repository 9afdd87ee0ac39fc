"""Sessions: the client's ``session_id`` when sent, else inactivity sessions.

Semantics (shared/REFERENCES.md, "Sessions"): events of one user without a session_id form a
session until a gap of more than ``timeout_seconds`` (30 min; a gap of exactly 30 min does not
split). Such a session is further cut into ``max_session_seconds`` (24 h) pieces measured from
its first event (events at first + 24 h or later start a new piece). Events with a session_id
form the session ``(user_id, session_id)`` as sent. Only events in ``[start_time, end_time)``
(after ``filters``) are considered, so sessions are clipped to the range.

Duration = last event - first event (0 for one event). Bounce = exactly one event and it is a
page_view. ``by_day`` groups sessions by the local date (``timezone``) of their first event.

How: one query returns the range's events sorted by (user, time) with four narrow columns (by
a hash of the user id rather than the id, see :mod:`avila.analytics.user_order`); the
sessions are cut with numpy (:func:`sessionize`). Cutting at 24 h needs each event's gap start,
which in SQL is a second window pass over the data (a window over a window); here it is one
``cumsum`` over the sorted arrays. The same sorted rows give distinct users per calendar
bucket (:func:`distinct_users_by_bucket`), so the overview sorts its events once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from avila.analytics.calendar import (
    bucket_label,
    local_us_array,
)
from avila.analytics.common import (
    Expr,
    events_source,
    fragments,
    iso,
    parse_query,
    rate,
    rows_at_most,
    time_range,
    user_codes,
    where_clause,
    zone,
)
from avila.analytics.user_order import parallel_parts, rows_by_user_chunks
from avila.schemas.analytics import SessionsQuery
from avila.storage.base import Store
from avila.storage.session_table import cut as cut_chains

US = 1_000_000
DEFAULT_TIMEOUT_S = 1800
DEFAULT_MAX_S = 86400


def sorted_events(
    store: Store, project_id: str, where: Expr, *, extra: str = "", source: str | None = None
) -> pa.Table:
    """Columns ``user_id``, ``session_id``, ``t`` (epoch µs), ``pv`` (is a page view), then the
    ``extra`` columns (SQL from the caller's constants, never input), of the events matching
    ``where``, sorted by user then time (ties in any order). ``source``: the events relation if
    the caller has it already (:func:`events_source`)."""
    epoch = fragments(store)["epoch_us"].format("ts")
    columns = f"user_id, session_id, {epoch} AS t, event_type = 'page_view' AS pv"
    return store.query_arrow(
        f"SELECT {columns}{', ' + extra if extra else ''}"
        f" FROM {source or events_source(store, project_id)} WHERE {where.sql}"
        " ORDER BY user_id, ts",
        where.params,
    )


def events_by_user(
    store: Store, project_id: str, where: Expr, *, rows: int
) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """:func:`sorted_events` without the ``user_id`` column, users in hash order, and each
    row's user number (see :func:`avila.analytics.user_order.rows_by_user`): in slices of
    whole users when the range holds many rows (``rows``: their number, or a bound such as
    :func:`avila.analytics.common.rows_at_most`)."""
    epoch = fragments(store)["epoch_us"].format("ts")
    source = events_source(store, project_id)
    return rows_by_user_chunks(
        store,
        f"SELECT user_id, session_id, {epoch} AS t, event_type = 'page_view' AS pv"
        f" FROM {source} WHERE {where.sql}",
        where.params,
        "session_id, t, pv",
        "t",
        rows=rows,
    )


@dataclass(frozen=True)
class Sessions:
    """One entry per session (arrays of equal length); ``user`` is the user's 0-based number
    among the ``n_users`` users of the rows; ``session_id`` is None for inactivity sessions."""

    n_users: int
    user: np.ndarray
    session_id: np.ndarray
    start_us: np.ndarray
    end_us: np.ndarray
    events: np.ndarray
    page_views: np.ndarray

    def __len__(self) -> int:
        return len(self.user)

    @property
    def duration_s(self) -> np.ndarray:
        return np.asarray((self.end_us - self.start_us) / US, dtype=float)

    @property
    def bounce(self) -> np.ndarray:
        return np.asarray((self.events == 1) & (self.page_views == 1), dtype=bool)


def sessionize(
    table: pa.Table,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    max_s: int = DEFAULT_MAX_S,
    codes: np.ndarray | None = None,
) -> Sessions:
    """Cut the rows of :func:`sorted_events` into sessions (see the module docstring); with
    ``codes`` (the rows' user numbers) the table needs no ``user_id`` column."""
    ucode = user_codes(table.column("user_id")) if codes is None else codes
    t = np.asarray(table.column("t").to_numpy(), dtype=np.int64)
    pv = np.asarray(table.column("pv").to_numpy(zero_copy_only=False), dtype=np.int64)
    sid = table.column("session_id").combine_chunks()

    def cut(lo: int, hi: int) -> list[_Part]:
        u, s = ucode[lo:hi], sid.slice(lo, hi - lo)
        anon = s.is_null().to_numpy(zero_copy_only=False)
        found = [_anonymous(u[anon], t[lo:hi][anon], pv[lo:hi][anon], timeout_s * US, max_s * US)]
        if not anon.all():
            keep = ~anon
            found.append(_keyed(u[keep], t[lo:hi][keep], pv[lo:hi][keep], s.filter(pa.array(keep))))
        return found

    parts = [p for found in parallel_parts(ucode, cut) for p in found]
    return Sessions(
        n_users=int(ucode[-1]) + 1 if len(ucode) else 0,
        user=np.concatenate([p[0] for p in parts]),
        session_id=np.concatenate([p[1] for p in parts]),
        start_us=np.concatenate([p[2] for p in parts]),
        end_us=np.concatenate([p[3] for p in parts]),
        events=np.concatenate([p[4] for p in parts]),
        page_views=np.concatenate([p[5] for p in parts]),
    )


_Part = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _anonymous(u: np.ndarray, t: np.ndarray, pv: np.ndarray, timeout: int, cut: int) -> _Part:
    n = len(t)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, np.empty(0, dtype=object), empty, empty, empty, empty
    starts = cut_chains(u, t, timeout, cut)[0]
    ends = np.append(starts[1:] - 1, n - 1)
    return (
        u[starts],
        np.full(len(starts), None, dtype=object),
        t[starts],
        t[ends],
        ends - starts + 1,
        np.add.reduceat(pv, starts),
    )


def _keyed(u: np.ndarray, t: np.ndarray, pv: np.ndarray, sid: pa.Array) -> _Part:
    encoded = pc.dictionary_encode(sid)
    labels = np.array(encoded.dictionary.to_pylist(), dtype=object)
    index = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    key = u * len(labels) + index
    # rows are in time order within a user, so first/last occurrence are the session's ends
    uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    last = len(key) - 1 - np.unique(key[::-1], return_index=True)[1]
    return (
        u[first],
        labels[index[first]],
        t[first],
        t[last],
        np.bincount(inverse, minlength=len(uniq)),
        np.bincount(inverse, weights=pv, minlength=len(uniq)).astype(np.int64),
    )


@dataclass
class SessionTotals:
    """What a sessions report says (:meth:`summary`, :meth:`by_day`), added up over slices
    of whole users (:meth:`add` each slice's :class:`Sessions`, then drop it): a long range's
    sessions never need to be in memory at once. Sessions per local day are counted when
    ``tz`` is given (with the range ``lo``, ``hi`` its offsets are looked up for)."""

    tz: ZoneInfo | None = None
    lo: datetime = datetime(1970, 1, 1)
    hi: datetime = datetime(1970, 1, 1)
    users: int = 0
    sessions: int = 0
    # Durations are summed in whole microseconds (exact in int64, and in the days' float64
    # sums below 2**53 us): the totals do not depend on the order sessions are added in, so
    # the kept and the raw paths give the same figures to the last bit.
    duration_us: int = 0
    bounces: int = 0
    page_views: int = 0
    days: dict[int, np.ndarray] = field(default_factory=dict)  # day: [n, duration_us, bounces]

    def add(self, found: Sessions) -> SessionTotals:
        self.users += found.n_users
        if not len(found):
            return self
        duration, bounce = found.end_us - found.start_us, found.bounce
        self.sessions += len(found)
        self.duration_us += int(duration.sum())
        self.bounces += int(bounce.sum())
        self.page_views += int(found.page_views.sum())
        if self.tz is not None:
            ones = np.ones(len(found), dtype=np.float64)
            self._by_day(
                found.start_us, ones, duration.astype(np.float64), bounce.astype(np.float64)
            )
        return self

    def add_groups(
        self,
        start_us: np.ndarray,
        n: np.ndarray,
        duration_us: np.ndarray,
        bounces: np.ndarray,
        page_views: np.ndarray,
    ) -> SessionTotals:
        """Add groups of sessions already summed: ``n`` sessions whose first events fall on the
        local day of ``start_us``, with their total duration (microseconds), bounces and page
        views (users are counted by the caller)."""
        if not len(n):
            return self
        self.sessions += int(n.sum())
        self.duration_us += int(duration_us.sum())
        self.bounces += int(bounces.sum())
        self.page_views += int(page_views.sum())
        if self.tz is not None:
            self._by_day(
                start_us,
                n.astype(np.float64),
                duration_us.astype(np.float64),
                bounces.astype(np.float64),
            )
        return self

    def _by_day(
        self, start_us: np.ndarray, n: np.ndarray, duration: np.ndarray, bounce: np.ndarray
    ) -> None:
        assert self.tz is not None
        days = local_us_array(start_us, self.tz, self.lo, self.hi) // (86_400 * US)
        first = int(days.min())
        offset = days - first
        sums = np.stack(
            [
                np.bincount(offset, weights=n),
                np.bincount(offset, weights=duration),
                np.bincount(offset, weights=bounce),
            ],
            axis=1,
        )
        for i in np.flatnonzero(sums[:, 0]).tolist():
            day = first + i
            self.days[day] = self.days[day] + sums[i] if day in self.days else sums[i]

    def summary(self) -> dict[str, Any]:
        """``sessions``, ``avg_duration_seconds``, ``bounce_rate``, ``pages_per_session``,
        ``users``."""
        n = self.sessions
        return {
            "sessions": n,
            "avg_duration_seconds": self.duration_us / US / n if n else 0.0,
            "bounce_rate": rate(self.bounces, n),
            "pages_per_session": rate(self.page_views, n),
            "users": self.users,
        }

    def by_day(self) -> list[dict[str, Any]]:
        """Sessions per local date of their first event (needs ``tz``)."""
        return [
            {
                "date": bucket_label(day, "day"),
                "sessions": int(self.days[day][0]),
                "avg_duration_seconds": float(self.days[day][1] / US / self.days[day][0]),
                "bounce_rate": rate(self.days[day][2], self.days[day][0]),
            }
            for day in sorted(self.days)
        ]


def summary(found: Sessions) -> dict[str, Any]:
    """``sessions``, ``avg_duration_seconds``, ``bounce_rate``, ``pages_per_session``, ``users``."""
    return SessionTotals().add(found).summary()


def sessions(
    store: Store,
    project_id: str,
    query: SessionsQuery | Mapping[str, Any] | None = None,
    *,
    user_id: str | None = None,
    raw: bool = False,
) -> dict[str, Any]:
    """``{"sessions", "avg_duration_seconds", "bounce_rate", "pages_per_session", "users",
    "by_day": [{"date", "sessions", "avg_duration_seconds", "bounce_rate"}]}``; with
    ``user_id``, only that user's sessions and also ``"items"``: the ``limit`` most recent
    sessions ``{"session_id", "start", "end", "duration_seconds", "events", "page_views",
    "bounce"}``. The default question over a project is read from the kept sessions
    (:mod:`avila.analytics.session_reads`) unless ``raw``; both give the same answer."""
    from avila.analytics import session_reads

    q = parse_query(SessionsQuery, query)
    start, end = time_range(q.start_time, q.end_time)
    tz = zone(q.timezone)
    where = where_clause(store, project_id, start, end, q.filters)
    if user_id is not None:
        where = Expr(where.sql + " AND user_id = ?", (*where.params, user_id))
    if user_id is None and not raw and session_reads.default_question(store, q):
        kept = session_reads.project_totals(store, project_id, start, end, tz)
        if kept is not None:
            return _report(kept, start, end)
    totals = SessionTotals(tz, start, end)
    found = None
    if user_id is not None:
        found = sessionize(
            sorted_events(store, project_id, where), q.timeout_seconds, q.max_session_seconds
        )
        totals.add(found)
    else:
        bound = rows_at_most(store, project_id, start, end, q.filters)
        for table, codes in events_by_user(store, project_id, where, rows=bound):
            if len(codes):
                totals.add(
                    sessionize(table, q.timeout_seconds, q.max_session_seconds, codes - codes[0])
                )
    result = _report(totals, start, end)
    if found is not None:
        result["user_id"] = user_id
        result["items"] = recent_items(found, q.limit)
    return result


def _report(totals: SessionTotals, start: datetime, end: datetime) -> dict[str, Any]:
    result = totals.summary()
    result["start_time"], result["end_time"] = iso(start), iso(end)
    result["by_day"] = totals.by_day()
    return result


def recent_items(found: Sessions, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` sessions that started last, newest first."""
    order = np.lexsort((-found.end_us, -found.start_us))[:limit]
    return [
        {
            "session_id": found.session_id[i],
            "start": _iso_us(int(found.start_us[i])),
            "end": _iso_us(int(found.end_us[i])),
            "duration_seconds": float(found.duration_s[i]),
            "events": int(found.events[i]),
            "page_views": int(found.page_views[i]),
            "bounce": bool(found.bounce[i]),
        }
        for i in order.tolist()
    ]


def _iso_us(us: int) -> str | None:
    return iso(datetime(1970, 1, 1) + timedelta(microseconds=us))


def user_sessions(
    store: Store,
    project_id: str,
    user_id: str,
    query: SessionsQuery | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`sessions` for one user (GET /api/v1/users/{id}/sessions)."""
    return sessions(store, project_id, query, user_id=user_id)
