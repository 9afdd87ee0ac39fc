"""RFM segmentation (recency, frequency, monetary) of purchasing users.

Semantics (shared/REFERENCES.md, "RFM"): purchases in ``[reference_date - window_days,
reference_date)``. An *order* is a distinct ``order_id`` (a purchase without one is its own
order), so a purchase event sent twice counts once; its revenue is the largest revenue seen for
it. Frequency = orders; monetary = sum of order revenues (cents kept next to +-1e15, see
:func:`avila.analytics.common.exact_sum_sql`); recency = reference date - last
purchase (scored in microseconds, reported in days).

Scores 1..5 by quintile, like ``pandas.qcut(x, 5)``: the interior edges are the 20/40/60/80 %
linear quantiles and bins are right-closed, so score = 1 + number of edges strictly below x.
Recency is reversed (most recent = 5). Frequency is ranked "first" (ties by user_id) before
binning, so equal counts never collapse bins. Segment = the map on the R and F digits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from avila.analytics.common import (
    events_source,
    exact_sum_sql,
    fragments,
    parse_query,
    persons_relation,
    query_time,
    rate,
    shifted,
    utcnow,
    where_clause,
)
from avila.analytics.profiles import require_user
from avila.analytics.rollup_reads import checked_persons, covering_days, rollups_agree
from avila.schemas.analytics import RFMQuery
from avila.storage import purchase_table
from avila.storage.base import Store

#: (regex on the R and F digits, segment), first match wins; covers all 25 pairs.
SEGMENT_MAP: tuple[tuple[str, str], ...] = (
    (r"[1-2][1-2]", "Hibernating"),
    (r"[1-2][3-4]", "At Risk"),
    (r"[1-2]5", "Can't Lose Them"),
    (r"3[1-2]", "About to Sleep"),
    (r"33", "Need Attention"),
    (r"[3-4][4-5]", "Loyal Customers"),
    (r"41", "Promising"),
    (r"51", "New Customers"),
    (r"[4-5][2-3]", "Potential Loyalists"),
    (r"5[4-5]", "Champions"),
)
SEGMENTS: tuple[str, ...] = tuple(name for _, name in SEGMENT_MAP)
_COMPILED = tuple((re.compile(p), name) for p, name in SEGMENT_MAP)
_EPOCH = datetime(1970, 1, 1)


def segment_of(r_score: int, f_score: int) -> str:
    """Segment name for an R and an F score (1..5 each)."""
    digits = f"{r_score}{f_score}"
    for pattern, name in _COMPILED:
        if pattern.fullmatch(digits):
            return name
    raise ValueError(f"scores out of range: {digits}")


def quintile_scores(values: np.ndarray) -> np.ndarray:
    """1..5 per value: 1 + number of 20/40/60/80 % quantiles strictly below it."""
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    edges = np.quantile(values.astype(np.float64), [0.2, 0.4, 0.6, 0.8])
    return 1 + np.searchsorted(edges, values, side="left").astype(np.int64)


#: Segment name per (R - 1, F - 1): :func:`segment_of` for all 25 pairs, looked up per user.
_SEGMENT_GRID = np.array(
    [[segment_of(r, f) for f in range(1, 6)] for r in range(1, 6)], dtype=object
)
#: Index into :data:`SEGMENTS` per (R - 1, F - 1).
_SEGMENT_INDEX = np.array(
    [[SEGMENTS.index(name) for name in row] for row in _SEGMENT_GRID.tolist()], dtype=np.int64
)


def _epoch_us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _int64(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)


def score_table(
    store: Store,
    project_id: str,
    query: RFMQuery | Mapping[str, Any] | None = None,
    *,
    raw: bool = False,
) -> dict[str, Any]:
    """Per-user arrays: ``user_id``, ``recency_us``, ``frequency``, ``monetary``, ``r``, ``f``,
    ``m``, ``segment`` (users with at least one purchase in the window, sorted by user_id).
    The kept purchases stand in for the events when they hold the same rows
    (:func:`_purchases_source`); ``raw`` reads the events in any case."""
    q = parse_query(RFMQuery, query)

    ref = query_time(q.reference_date, "reference_date") if q.reference_date else utcnow()
    since = shifted(ref, -timedelta(days=q.window_days))
    where = where_clause(store, project_id, since, ref, q.filters)
    last_us = fragments(store)["epoch_us"].format("max(last_ts)")
    source = events_source(store, project_id)
    if not raw and not q.filters:
        source = _purchases_source(store, project_id, source, since, ref)
    table = store.query_arrow(
        f"SELECT user_id, {last_us} AS last_us, count(*) AS orders, {exact_sum_sql('rev')} AS m"
        " FROM ( SELECT user_id, coalesce(order_id, event_id) AS oid, max(ts) AS last_ts,"
        f" coalesce(max(revenue), 0.0) AS rev FROM {source}"
        f" WHERE {where.sql} AND event_type = 'purchase' GROUP BY user_id, oid"
        ") GROUP BY user_id ORDER BY user_id",
        where.params,
    )
    users = table.column("user_id").to_pylist()
    recency = _epoch_us(ref) - _int64(table.column("last_us"))
    frequency = _int64(table.column("orders"))
    monetary = np.asarray(table.column("m").to_numpy(zero_copy_only=False), dtype=np.float64)
    r_score = 6 - quintile_scores(recency)
    f_rank = np.empty(len(users), dtype=np.int64)
    f_rank[np.argsort(frequency, kind="stable")] = np.arange(1, len(users) + 1)
    f_score = quintile_scores(f_rank)
    m_score = quintile_scores(monetary)
    segments = _SEGMENT_GRID[r_score - 1, f_score - 1].tolist()
    return {
        "reference_date": ref,
        "user_id": users,
        "recency_us": recency,
        "frequency": frequency,
        "monetary": monetary,
        "r": r_score,
        "f": f_score,
        "m": m_score,
        "segment": segments,
    }


def rfm(
    store: Store, project_id: str, query: RFMQuery | Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``{"segments": [{"segment", "users", "share", "revenue"}], "users_scored",
    "reference_date"}``; every segment is listed (most users first), shares sum to 1 when anyone
    was scored. ``revenue`` is the sum of its users' monetary values. With ``members`` > 0 each
    segment also lists up to that many of its users (``members``, each as
    :func:`user_segment` answers), highest monetary first, ties by user id: a dashboard's
    drill-down in one request instead of one per user."""
    q = parse_query(RFMQuery, query)
    table = score_table(store, project_id, q)
    scored = len(table["user_id"])
    codes = _SEGMENT_INDEX[table["r"] - 1, table["f"] - 1]
    monetary = table["monetary"]
    # members of each segment, in user order; a stable sort keeps that order within each
    by_code = np.argsort(codes, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(codes, minlength=len(SEGMENTS)))))
    by_segment = {name: by_code[bounds[k] : bounds[k + 1]] for k, name in enumerate(SEGMENTS)}
    order = sorted(SEGMENTS, key=lambda s: (-len(by_segment[s]), SEGMENTS.index(s)))
    segments = []
    for name in order:
        users = by_segment[name]
        entry: dict[str, Any] = {
            "segment": name,
            "users": len(users),
            "share": rate(len(users), scored),
            "revenue": math.fsum(monetary[users].tolist()),
        }
        if q.members:
            top = sorted(users.tolist(), key=lambda i: (-monetary[i], table["user_id"][i]))
            entry["members"] = [_scored_user(table, i) for i in top[: q.members]]
        segments.append(entry)
    return {
        "segments": segments,
        "users_scored": scored,
        "reference_date": table["reference_date"].isoformat() + "Z",
    }


#: Over ``[day0, day1)``: the purchases of the daily rollup and of the kept purchases.
_PURCHASES_AGREE = """
SELECT (SELECT coalesce(sum(events), 0) FROM rollup_daily WHERE project_id = ? AND kind = 'type'
    AND event_type = 'purchase' AND day >= ? AND day < ?),
  (SELECT count(*) FROM kept_purchases WHERE project_id = ? AND ts >= ? AND ts < ?)
"""


def _purchases_source(
    store: Store, project_id: str, source: str, since: datetime, ref: datetime
) -> str:
    """The kept purchases as the events relation ``source`` gives them (raw ids, or mapped to
    persons through the same relation as ``source``: :mod:`avila.storage.purchase_table`)
    when they hold exactly the purchases of the events over ``[since, ref)``, else ``source``:
    when, over the UTC days that cover the window, the rollups agree with the events table
    (:func:`avila.analytics.rollup_reads.rollups_agree`) and the daily rollup counts as many
    purchases as the kept purchases (all are written in one transaction: a write that went
    around them shows here)."""
    days = covering_days(since, ref)
    if days is None or not store.has_rollups or not rollups_agree(store, project_id, *days):
        return source
    d0, d1 = days
    ((daily, copies),) = store.query(
        _PURCHASES_AGREE, [project_id, d0.date(), d1.date(), project_id, d0, d1]
    )
    if int(daily) != int(copies):
        return source
    if source == fragments(store)["events_unstitched"]:
        return purchase_table.RELATION
    persons = checked_persons(persons_relation(store, source))
    return purchase_table.PERSONS_RELATION.format(persons=persons)


def _scored_user(table: dict[str, Any], i: int) -> dict[str, Any]:
    r, f, m = int(table["r"][i]), int(table["f"][i]), int(table["m"][i])
    return {
        "user_id": table["user_id"][i],
        "recency_days": float(table["recency_us"][i]) / 86_400e6,
        "frequency": int(table["frequency"][i]),
        "monetary": float(table["monetary"][i]),
        "r_score": r,
        "f_score": f,
        "m_score": m,
        "rfm_score": f"{r}{f}{m}",
        "segment": table["segment"][i],
    }


def user_segment(
    store: Store, project_id: str, user_id: str, query: RFMQuery | Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``{"user_id", "recency_days", "frequency", "monetary", "r_score", "f_score", "m_score",
    "rfm_score", "segment"}``. A known user without purchases in the window gets frequency 0
    and null scores/segment; an unknown user raises NotFound."""
    table = score_table(store, project_id, query)
    try:
        i = table["user_id"].index(user_id)
    except ValueError:
        require_user(store, project_id, user_id)
        return {
            "user_id": user_id,
            "recency_days": None,
            "frequency": 0,
            "monetary": 0.0,
            "r_score": None,
            "f_score": None,
            "m_score": None,
            "rfm_score": None,
            "segment": None,
        }
    return _scored_user(table, i)
