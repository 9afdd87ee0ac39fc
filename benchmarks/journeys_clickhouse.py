"""ClickHouse (chdb) twins of the journey reports: paths, lifecycle and stickiness.

Each twin is native ClickHouse SQL over the bench's ``events`` MergeTree
(:mod:`analytics_clickhouse`) computing the same answer as our report, so ``bench_analytics``
can put the engine's time beside ours and check the answers agree. Semantics are the reports'
own (their module docstrings): paths order a user's events by time, equal times by name, and
collapse repeated consecutive names, and the same ``Sankey`` step draws both engines' counted
rows (only the counting is compared); lifecycle and stickiness take periods as wall time in a
zone, every period that overlaps the range, each whole.

Paths name events ``<type>:<key>``; the bench's rows carry no custom event name (the chdb
table has no ``event_name`` column), so every custom event is ``custom:`` here as in ours.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from analytics_clickhouse import _t

from avila.analytics.paths import _sankey

#: our paths' event name (avila.analytics.paths.name_expr) for the bench's columns
_NAME = (
    "multiIf(event_type IN ('page_view', 'click'), concat(event_type, ':', ifNull(url, '')),"
    " event_type IN ('product_view', 'add_to_cart', 'remove_from_cart'),"
    " concat(event_type, ':', ifNull(product_id, '')),"
    " event_type = 'custom', 'custom:', toString(event_type))"
)
#: the condition types the bench asks paths about, as ClickHouse conditions
CONDITIONS = {
    ("page_view", "/"): "(event_type = 'page_view' AND url = '/')",
    ("purchase", ""): "(event_type = 'purchase')",
}


def ch_paths(
    ch: Any,
    project: str,
    start: datetime,
    end: datetime,
    steps: int,
    *,
    begin: str | None = None,
    finish: str | None = None,
) -> list[tuple[int, str, str | None, int]]:
    """``[(step, name, neighbour name or None, users)]``, the counted rows the paths report
    draws its Sankey from: each user's path (from their first event matching ``begin``, or up
    to their first event matching ``finish``; one of them at most), repeats collapsed, its
    first ``steps`` steps, the neighbour the step after; with ``finish`` its last steps,
    numbered so that the path ends at step ``steps``, the neighbour the step before."""
    flag = begin or finish or "0"
    # Tuples sort by (time, name, flag); equal (time, name) have equal flags.
    sorted_events = f"arraySort(groupArray((toUnixTimestamp64Micro(ts), {_NAME}, {flag})))"
    if begin:
        kept = "arraySlice(e, arrayFirstIndex(x -> x.3, e))"
        having = "arrayExists(x -> x.3, e)"
    elif finish:
        kept = "arraySlice(e, 1, arrayFirstIndex(x -> x.3, e))"
        having = "arrayExists(x -> x.3, e)"
    else:
        kept, having = "e", "1"
    collapsed = "arrayFilter((n, p) -> n != p, names, arrayPushFront(arrayPopBack(names), ''))"
    if finish:
        path = f"arraySlice(c, greatest(length(c) - {steps - 1}, 1))"
        step, neighbour = f"k + {steps} - length(a)", "if(k > 1, a[k - 1], '')"
    else:
        path, step = f"arraySlice(c, 1, {steps})", "k"
        neighbour = "if(k < length(a), a[k + 1], '')"
    sql = f"""
SELECT {step} AS step, a[k] AS name, {neighbour} AS nxt, count() AS users
FROM (
  SELECT {path} AS a FROM (
    SELECT {collapsed} AS c FROM (
      SELECT arrayMap(x -> x.2, {kept}) AS names FROM (
        SELECT {sorted_events} AS e FROM events
        WHERE project_id = '{project}' AND ts >= {_t(start)} AND ts < {_t(end)}
        GROUP BY user_id)
      WHERE {having})))
ARRAY JOIN arrayEnumerate(a) AS k
GROUP BY step, name, nxt
"""
    return [(int(s), n, x or None, int(u)) for s, n, x, u in ch.query(sql).result_rows]


def paths_figures(report: dict[str, Any]) -> dict[str, Any]:
    """Our paths report as comparable figures: users, nodes and links by (step, name)."""

    def split(node_id: str) -> tuple[int, str]:
        step, name = node_id.split(":", 1)
        return int(step), name

    links = {}
    for link in report["links"]:
        (step, src), (_, dst) = split(link["source"]), split(link["target"])
        links[(step, src, dst)] = link["users"]
    return {
        "users": report["users"],
        "nodes": {(n["step"], n["name"]): n["users"] for n in report["nodes"]},
        "links": links,
    }


def ch_paths_figures(
    rows: list[tuple[int, str, str | None, int]], steps: int, limit: int, *, backwards: bool
) -> dict[str, Any]:
    """:func:`ch_paths` rows drawn as our report draws its own counted rows (the top
    ``limit`` names per step, the rest ``Other``), as :func:`paths_figures`."""
    return paths_figures(_sankey(rows, steps, limit, backwards))


def _local_days(start: datetime, end: datetime, tz: str) -> tuple[date, date]:
    """The local dates of ``start`` and of the last microsecond before ``end`` (naive UTC)."""
    zone, utc = ZoneInfo(tz), ZoneInfo("UTC")
    first = start.replace(tzinfo=utc).astimezone(zone).date()
    last = (end - timedelta(microseconds=1)).replace(tzinfo=utc).astimezone(zone).date()
    return first, last


def _period_span(first: date, last: date, period: str) -> tuple[date, date]:
    """The first day of ``first``'s period and the last day of ``last``'s."""
    if period == "day":
        return first, last
    if period == "week":
        return first - timedelta(first.weekday()), last + timedelta(6 - last.weekday())
    after = date(last.year + last.month // 12, last.month % 12 + 1, 1)
    return first.replace(day=1), after - timedelta(1)


def _period(day_sql: str, period: str) -> str:
    """The first day of the period of the date ``day_sql``."""
    return {"day": day_sql, "week": f"toMonday({day_sql})", "month": f"toStartOfMonth({day_sql})"}[
        period
    ]


def ch_stickiness(
    ch: Any, project: str, start: datetime, end: datetime, period: str, tz: str
) -> dict[str, list[int]]:
    """``{period start: users active on exactly n local days of it, n = 1 ..}``."""
    lo, hi = _period_span(*_local_days(start, end, tz), period)
    scan_lo = datetime.combine(lo, datetime.min.time()) - timedelta(days=1)
    scan_hi = datetime.combine(hi, datetime.min.time()) + timedelta(days=2)
    sql = f"""
SELECT p, n, count() FROM (
  SELECT user_id, {_period("d", period)} AS p, uniqExact(d) AS n FROM (
    SELECT user_id, toDate(ts, '{tz}') AS d FROM events
    WHERE project_id = '{project}' AND ts >= {_t(scan_lo)} AND ts < {_t(scan_hi)})
  WHERE d >= '{lo}' AND d <= '{hi}' GROUP BY user_id, p)
GROUP BY p, n
"""
    most = 7 if period == "week" else 31
    out: dict[str, list[int]] = {}
    for p, n, users in ch.query(sql).result_rows:
        out.setdefault(str(p), [0] * most)[int(n) - 1] = int(users)
    return dict(sorted(out.items()))


def stickiness_figures(report: dict[str, Any]) -> dict[str, list[int]]:
    """Our stickiness report as :func:`ch_stickiness` figures (periods nobody was active in
    left out, as ClickHouse has no row for them)."""
    return {
        p["period_start"][:10]: [d["users"] for d in p["distribution"]]
        for p in report["periods"]
        if p["active_users"]
    }


def ch_lifecycle(
    ch: Any, project: str, start: datetime, end: datetime, period: str, tz: str
) -> dict[str, list[int]]:
    """``{period start: [new, returning, resurrecting, dormant]}`` (dormant negative, as ours
    reports it); a user's first seen time is their first event ever."""
    lo, hi = _period_span(*_local_days(start, end, tz), period)
    step = {"day": "1", "week": "7", "month": "toIntervalMonth(1)"}[period]
    before = {"day": lo - timedelta(1), "week": lo - timedelta(7)}.get(period)
    if before is None:
        before = (lo - timedelta(1)).replace(day=1)
    span = f"toDate('{lo}') AND toDate('{hi}')"
    sql = f"""
SELECT b, s, count() FROM (
  SELECT arrayJoin(arrayConcat(
      arrayMap(b -> (b, multiIf(b = f, 'new', has(act, b - {step}), 'returning', 'resurrecting')),
               arrayFilter(b -> b BETWEEN {span}, act)),
      arrayMap(b -> (b + {step}, 'dormant'),
               arrayFilter(b -> (b + {step} BETWEEN {span}) AND NOT has(act, b + {step}), act))
    )) AS x, x.1 AS b, x.2 AS s
  FROM (
    SELECT {_period(f"toDate(min(ts), '{tz}')", period)} AS f,
      groupUniqArrayIf({_period("d", period)}, d >= '{before}' AND d <= '{hi}') AS act
    FROM (SELECT user_id, ts, toDate(ts, '{tz}') AS d FROM events WHERE project_id = '{project}')
    GROUP BY user_id))
GROUP BY b, s
"""
    kinds = ("new", "returning", "resurrecting", "dormant")
    out: dict[str, list[int]] = {}
    for b, s, users in ch.query(sql).result_rows:
        out.setdefault(str(b), [0, 0, 0, 0])[kinds.index(s)] = int(users) * (
            -1 if s == "dormant" else 1
        )
    return dict(sorted(out.items()))


def lifecycle_figures(report: dict[str, Any]) -> dict[str, list[int]]:
    """Our lifecycle report as :func:`ch_lifecycle` figures (all-zero periods left out)."""
    out = {}
    for p in report["periods"]:
        counts = [p[k] for k in ("new", "returning", "resurrecting", "dormant")]
        if any(counts):
            out[p["period_start"][:10]] = counts
    return out
