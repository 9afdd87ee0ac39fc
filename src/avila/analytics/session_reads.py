"""The sessions report read from the kept sessions (:mod:`avila.storage.session_table`).

A range ``[start, end)`` clips sessions: only its events count. A stored chain (a run of a
user's events without a gap above the timeout) that lies wholly inside the range gives exactly
the sessions the raw path cuts from the range's rows; one wholly outside gives none. Chains
that cross an edge of the range, and keyed sessions with stored events on both sides of an
edge, are cut again from the range's raw rows (only those users' rows near the edges). Whole
sessions are summed in SQL per 15-minute bucket of their start; a bucket maps to one local day
unless a local midnight or an offset change falls inside it, and such buckets are read
session by session. Distinct users come from the daily rollups' user days for the range's
whole UTC days and raw rows for its partial ones (:func:`avila.analytics.rollup_reads.
distinct_users`), or, when the rollups disagree, from the union of both parts.

Used only when it cannot change an answer: the DuckDB backend, no filters, the default timeout
and 24 h cut, the tables' raw user ids resolved as below in a project with identity links, and the events
the two parts account for equal the events table's count over the range (otherwise a write
bypassed the tables and the caller reads raw rows). Writes whose sessions are pending
(:class:`avila.storage.session_table.Upkeep`) are cut before the read.

With identity links (:func:`stitched_totals`; :func:`project_totals` picks the way), an id that no link
names is its own person, so its kept sessions are its person's: the kept tables are read for
those ids only, and the ids in the person map (either side of a link) are cut again, by
person, from their raw rows in the range. The cost follows the linked ids' rows, not the
range's.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from avila.analytics.calendar import local_us_array, utc_offsets
from avila.analytics.common import events_source, fragments, persons_relation
from avila.analytics.rollup_reads import checked_persons, distinct_users
from avila.analytics.sessions import Sessions, SessionTotals, sessionize
from avila.schemas.analytics import SessionsQuery
from avila.storage.base import Store
from avila.storage.session_table import MAX_SESSION_US, TIMEOUT_US, US

BUCKET_US = 900 * US

#: Users whose stored chains cross an edge of the range: ``a`` the end of the chain across the
#: start, ``b`` the start of the chain across the end (either may be NULL).
_CHAIN_EDGES = """
SELECT user_id, max(chain_end_us) FILTER (WHERE chain_start_us < $s) AS a,
  min(chain_start_us) FILTER (WHERE chain_end_us >= $e) AS b
FROM kept_sessions WHERE project_id = $p AND chain_end_us >= $s AND chain_start_us < $e
  AND (chain_start_us < $s OR chain_end_us >= $e){unlinked}
GROUP BY user_id
"""
#: Keyed sessions with stored events on both sides of an edge.
_KEYED_EDGES = """
SELECT DISTINCT user_id, session_id FROM kept_keyed_sessions
WHERE project_id = $p AND end_us >= $s AND start_us < $e AND (start_us < $s OR end_us >= $e){unlinked}
"""
#: The range's raw rows of the edge chains (``$users``, ``$a``, ``$b``: :data:`_CHAIN_EDGES`
#: as lists). The IN list and the constant time bounds narrow the scan; the join applies each
#: user's own bounds.
_CHAIN_EDGE_ROWS = """
SELECT e.user_id, e.session_id, epoch_us(e.ts) AS t, e.event_type = 'page_view' AS pv
FROM events e JOIN (SELECT unnest($users) AS user_id, unnest($a) AS a, unnest($b) AS b) x
  ON e.user_id = x.user_id
WHERE e.project_id = $p AND e.ts >= $start AND e.ts < $end AND e.session_id IS NULL
  AND e.user_id IN (SELECT unnest($users)) AND (e.ts < $start_side OR e.ts >= $end_side)
  AND (epoch_us(e.ts) <= x.a OR epoch_us(e.ts) >= x.b)
"""
#: The range's raw rows of the edge keyed sessions (``$key_users``, ``$key_ids``).
_KEYED_EDGE_ROWS = """
SELECT e.user_id, e.session_id, epoch_us(e.ts) AS t, e.event_type = 'page_view' AS pv
FROM events e JOIN (SELECT unnest($key_users) AS user_id, unnest($key_ids) AS session_id) k
  ON e.user_id = k.user_id AND e.session_id = k.session_id
WHERE e.project_id = $p AND e.ts >= $start AND e.ts < $end
  AND e.session_id IN (SELECT unnest($key_ids))
"""
#: Sessions wholly inside the range.
_INSIDE = """
SELECT user_id, start_us, end_us, events, page_views FROM kept_sessions
WHERE project_id = $p AND chain_start_us >= $s AND chain_end_us < $e{unlinked}
"""
#: ... with the keyed partials merged per session, less the edge ones.
_INSIDE_WITH_KEYED = f"""{_INSIDE}
UNION ALL
SELECT user_id, min(start_us), max(end_us), sum(events), sum(page_views)
FROM kept_keyed_sessions k
WHERE project_id = $p AND start_us >= $s AND end_us < $e AND NOT EXISTS (
  SELECT 1 FROM (SELECT unnest($key_users) AS user_id, unnest($key_ids) AS session_id) x
  WHERE x.user_id = k.user_id AND x.session_id = k.session_id){{unlinked}}
GROUP BY user_id, session_id
"""
_KEYED_IN_RANGE = """
SELECT count(*) FROM kept_keyed_sessions WHERE project_id = $p AND end_us >= $s AND start_us < $e
  {unlinked}
"""
#: The range's events.
_IN_RANGE = """
SELECT count(*) FROM events WHERE project_id = $p AND ts >= $start AND ts < $end
"""
_BY_BUCKET = """
SELECT start_us // $bucket AS b, count(*), sum(end_us - start_us),
  count(*) FILTER (WHERE events = 1 AND page_views = 1), sum(page_views), sum(events)
FROM ({inside}) GROUP BY b
"""
_IN_BUCKETS = """
SELECT start_us, end_us, events, page_views FROM ({inside})
WHERE start_us // $bucket IN (SELECT unnest($buckets))
"""
#: Users with a session inside, and the edge rows' users (``$edge_users``).
_USERS = """
SELECT count(DISTINCT user_id) FROM (
  SELECT user_id FROM ({inside}) UNION ALL SELECT unnest($edge_users))
"""


#: The ids a link names, either side (``{persons}``: :func:`avila.analytics.common.persons_relation`).
_LINKED_IDS = """
SELECT anonymous_id FROM {persons} WHERE project_id = $p
UNION ALL SELECT user_id FROM {persons} WHERE project_id = $p"""
#: What restricts the kept tables' reads to the ids no link names (``{unlinked}``).
_UNLINKED = f" AND user_id NOT IN ({_LINKED_IDS})"
#: The range's raw rows of the ids a link names, with the person each counts as.
_LINKED_ROWS = """
SELECT coalesce(m.user_id, e.user_id) AS user_id, e.session_id,
  epoch_us(e.ts) AS t, e.event_type = 'page_view' AS pv
FROM events e LEFT JOIN {persons} m ON m.project_id = e.project_id AND m.anonymous_id = e.user_id
WHERE e.project_id = $p AND e.ts >= $start AND e.ts < $end AND e.user_id IN ({linked})
"""


#: The events of the linked ids and of all ids on the days a range touches, from the user days
#: (far fewer rows than events; an estimate is enough to choose a path).
_LINKED_SHARE = """
SELECT coalesce(sum(CASE WHEN user_id IN ({linked}) THEN events END), 0), coalesce(sum(events), 0)
FROM rollup_user_days WHERE project_id = $p AND day >= $day0 AND day <= $day1
"""
#: The share of a range's events above which the linked ids' rows are not cut apart from the
#: kept sessions (the raw path reads the range instead). Measured at 10 M events, 30 days
#: (benchmarks/RESULTS.md, "The stitched overview from kept state"): ~0.3 s with no row
#: linked, ~0.7 s with 20 %, ~1.6 s with all, against ~0.95 s for the raw path whatever the
#: share; a straight line through those breaks even near one half.
LINKED_SHARE = 0.5


def answers(store: Store, project_id: str, q: SessionsQuery) -> bool:
    """Whether the kept sessions can answer ``q`` for the project (see the module docstring)."""
    return default_question(store, q) and (
        events_source(store, project_id) == fragments(store)["events_unstitched"]
    )


def default_question(store: Store, q: SessionsQuery) -> bool:
    """Whether the store keeps sessions and ``q`` asks for them as they are kept: no filters,
    the default timeout and cut (raw user ids: the caller checks for identity links)."""
    return (
        store.has_kept_sessions
        and not q.filters
        and q.timeout_seconds * US == TIMEOUT_US
        and q.max_session_seconds * US == MAX_SESSION_US
    )


def project_totals(
    store: Store,
    project_id: str,
    start: datetime,
    end: datetime,
    tz: ZoneInfo | None,
    *,
    users: bool = True,
) -> SessionTotals | None:
    """The range's :class:`SessionTotals` from the kept sessions, the project's identity links
    applied (:func:`kept_totals` without links, :func:`stitched_totals` with them); None when
    they cannot answer."""
    source = events_source(store, project_id)
    if source == fragments(store)["events_unstitched"]:
        return kept_totals(store, project_id, start, end, tz, users=users)
    persons = persons_relation(store, source)
    return stitched_totals(store, project_id, start, end, persons, tz, users=users)


def stitched_totals(
    store: Store,
    project_id: str,
    start: datetime,
    end: datetime,
    persons: str,
    tz: ZoneInfo | None = None,
    *,
    users: bool = False,
) -> SessionTotals | None:
    """The range's :class:`SessionTotals` by person (with ``users``, the distinct persons;
    otherwise only the linked ones) for a project with identity links resolved through
    ``persons`` (one of :data:`avila.analytics.rollup_reads.PERSONS_RELATIONS`): the kept totals of the ids no link names
    and the linked ids' sessions cut by person (see the module docstring; they are different
    persons, so sessions, days and users add up). None when the kept sessions do not account
    for those ids' events, or when the linked ids have more than :data:`LINKED_SHARE` of the
    events on the range's days (from the user days): then one sorted pass over all raw rows
    costs less."""
    params: dict[str, Any] = {"p": project_id, "start": start, "end": end}
    linked = _LINKED_IDS.format(persons=checked_persons(persons))
    share_params = {"p": project_id, "day0": start.date(), "day1": end.date()}
    ((linked_events, day_events),) = store.query(
        *_numbered(_LINKED_SHARE.format(linked=linked), share_params)
    )
    if linked_events > LINKED_SHARE * day_events:
        return None
    rows = store.query_arrow(
        *_numbered(_LINKED_ROWS.format(persons=persons, linked=linked), params)
    )
    totals = kept_totals(
        store, project_id, start, end, tz, users=users, persons=persons, linked_rows=rows.num_rows
    )
    if totals is None:
        return None
    if rows.num_rows:
        totals.add(_sessions_by_person(rows))
    return totals


def _sessions_by_person(rows: pa.Table) -> Sessions:
    """The sessions of ``rows`` (in any order): sorted by the dictionary code of ``user_id``,
    then time, with numpy (a string sort in Arrow costs several times more)."""
    ids = pc.dictionary_encode(rows.column("user_id")).combine_chunks().indices.to_numpy()
    order = np.lexsort((rows.column("t").to_numpy(), ids))
    ids = ids[order]
    codes = np.zeros(len(ids), dtype=np.int64)
    codes[1:] = np.cumsum(ids[1:] != ids[:-1])
    return sessionize(rows.select(["session_id", "t", "pv"]).take(order), codes=codes)


def kept_totals(
    store: Store,
    project_id: str,
    start: datetime,
    end: datetime,
    tz: ZoneInfo | None,
    *,
    users: bool = True,
    persons: str | None = None,
    linked_rows: int = 0,
) -> SessionTotals | None:
    """The range's :class:`SessionTotals` from the kept sessions, or None when they do not
    account for the range's events. Without ``users`` its ``users`` stays 0 (the overview
    counts them with its active users). With ``persons`` (one of :data:`avila.analytics.rollup_reads.PERSONS_RELATIONS`),
    only the sessions and events of the ids no link names (the caller adds the others'), and
    ``linked_rows`` is how many events of the range the linked ids have (the caller read them:
    the range's events less these are the ones the kept tables must account for, which spares
    a pass over the range's user ids).
    Pending writes are cut first; a write that lands between the reads (they are not one
    snapshot) makes them cut and read once more."""
    unlinked = _UNLINKED.format(persons=checked_persons(persons)) if persons else ""
    for _ in range(2):
        store.settle_kept_sessions()
        found = _read_totals(store, project_id, start, end, tz, users, unlinked, linked_rows)
        if found is not None:
            return found
    return None


def _read_totals(
    store: Store,
    project_id: str,
    start: datetime,
    end: datetime,
    tz: ZoneInfo | None,
    users: bool,
    unlinked: str,
    linked_rows: int,
) -> SessionTotals | None:
    s, e = _us(start), _us(end)
    params: dict[str, Any] = {"p": project_id, "s": s, "e": e, "start": start, "end": end}
    chains = store.query(*_numbered(_CHAIN_EDGES.format(unlinked=unlinked), params))
    ((keyed,),) = store.query(*_numbered(_KEYED_IN_RANGE.format(unlinked=unlinked), params))
    keys = store.query(*_numbered(_KEYED_EDGES.format(unlinked=unlinked), params)) if keyed else []
    inside = (_INSIDE_WITH_KEYED if keyed else _INSIDE).format(unlinked=unlinked)
    params["key_users"] = [k[0] for k in keys]
    params["key_ids"] = [k[1] for k in keys]
    parts = [
        store.query_arrow(*_numbered(_CHAIN_EDGE_ROWS, _edge_params(params, start, end, group)))
        for group in _near_and_far(chains, s, e)
        if group
    ]
    if keys:
        parts.append(store.query_arrow(*_numbered(_KEYED_EDGE_ROWS, params)))
    grouped = store.query(
        *_numbered(_BY_BUCKET.format(inside=inside), {**params, "bucket": BUCKET_US})
    )
    ((in_range,),) = store.query(*_numbered(_IN_RANGE, params))
    in_range -= linked_rows
    edge = _sorted(parts)
    if sum(int(row[5]) for row in grouped) + edge.num_rows != in_range:
        return None
    totals = SessionTotals(tz, start, end)
    if edge.num_rows:
        totals.add(sessionize(edge))
    _add_buckets(store, totals, grouped, inside, params)
    if users:
        # the user days hold every id: restricted to unlinked ids, count the kept ones
        from_days = None if unlinked else distinct_users(store, project_id, start, end)
        if from_days is not None:
            totals.users = from_days
        else:
            params["edge_users"] = (
                pc.unique(edge.column("user_id")).to_pylist() if edge.num_rows else []
            )
            ((totals.users,),) = store.query(*_numbered(_USERS.format(inside=inside), params))
    return totals


def _near_and_far(
    chains: list[tuple[Any, ...]], s: int, e: int
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """:data:`_CHAIN_EDGES` rows split into those whose rows in the range lie within a day
    (``MAX_SESSION_US``) of its edges and the others. The rows of a group are read with one
    time window that spans its chains, so one chain running on for weeks (a bot, a monitor)
    would otherwise make every user's rows be looked for over the whole range."""
    near: list[tuple[Any, ...]] = []
    far: list[tuple[Any, ...]] = []
    for chain in chains:
        _, a, b = chain
        long = (a is not None and a - s > MAX_SESSION_US) or (
            b is not None and e - b > MAX_SESSION_US
        )
        (far if long else near).append(chain)
    return near, far


def _edge_params(
    params: dict[str, Any], start: datetime, end: datetime, chains: list[tuple[Any, ...]]
) -> dict[str, Any]:
    """:data:`_CHAIN_EDGE_ROWS`' parameters for ``chains`` (:data:`_CHAIN_EDGES` rows)."""
    ends = [c[1] for c in chains if c[1] is not None]
    starts = [c[2] for c in chains if c[2] is not None]
    return {
        **params,
        "users": [c[0] for c in chains],
        "a": [c[1] for c in chains],
        "b": [c[2] for c in chains],
        # the rows lie within the chains across the edges: skip the rest of the range
        "start_side": _at(max(ends) + 1) if ends else start,
        "end_side": _at(min(starts)) if starts else end,
    }


def _add_buckets(
    store: Store,
    totals: SessionTotals,
    grouped: list[tuple[Any, ...]],
    inside: str,
    params: dict[str, Any],
) -> None:
    if not grouped:
        return
    rows = np.array([row[:5] for row in grouped], dtype=np.int64)
    first = rows[:, 0] * BUCKET_US
    split = np.zeros(len(rows), dtype=bool)
    if totals.tz is not None:
        last = first + BUCKET_US - 1
        split = local_us_array(first, totals.tz, totals.lo, totals.hi) // 86_400_000_000 != (
            local_us_array(last, totals.tz, totals.lo, totals.hi) // 86_400_000_000
        )
        for at, _ in utc_offsets(totals.tz, totals.lo, totals.hi)[1:]:
            split |= (first < at) & (at <= last)
    whole = rows[~split]
    totals.add_groups(whole[:, 0] * BUCKET_US, whole[:, 1], whole[:, 2], whole[:, 3], whole[:, 4])
    if split.any():
        one = np.array(
            store.query(
                *_numbered(
                    _IN_BUCKETS.format(inside=inside),
                    {**params, "bucket": BUCKET_US, "buckets": rows[split, 0].tolist()},
                )
            ),
            dtype=np.int64,
        ).reshape(-1, 4)
        totals.add_groups(
            one[:, 0],
            np.ones(len(one), dtype=np.int64),
            one[:, 1] - one[:, 0],
            (one[:, 2] == 1) & (one[:, 3] == 1),
            one[:, 3],
        )


def _sorted(parts: list[pa.Table]) -> pa.Table:
    """The edge rows by user, then time (what :func:`sessionize` takes)."""
    if not parts:
        return pa.table({"user_id": pa.array([], pa.string())})
    rows = pa.concat_tables(parts, promote_options="permissive")
    return rows.sort_by([("user_id", "ascending"), ("t", "ascending")])


def _numbered(sql: str, params: dict[str, Any]) -> tuple[str, list[Any]]:
    """``sql`` with its ``$name`` parameters as DuckDB's ``$1``.. and their values in order (a
    store takes a list)."""
    order = [name for name in params if re.search(rf"\${name}\b", sql)]
    for i, name in enumerate(order, 1):
        sql = re.sub(rf"\${name}\b", f"${i}", sql)
    return sql, [params[name] for name in order]


def _us(at: datetime) -> int:
    return (at - datetime(1970, 1, 1)) // _ONE_US


def _at(us: int) -> datetime:
    return datetime(1970, 1, 1) + us * _ONE_US


_ONE_US = datetime(1970, 1, 1, microsecond=1) - datetime(1970, 1, 1)
