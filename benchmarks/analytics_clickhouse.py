"""The ClickHouse twin of the analytics benchmark: the same rows in embedded ClickHouse (chdb),
and hand-written native SQL that computes the same answers as our endpoints.

The bench DuckDB file's events are exported once to Parquet and loaded into a MergeTree
ordered by (project, day, user, time), cached in ``<dir>/chdb_<N>/``. Each ``ch_*`` function
returns the figures in the shape :func:`same` compares with ours, so the benchmark checks that
both engines agree before it prints a ratio. The constants are the bench's own (no untrusted
input reaches this SQL).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect

US_PER_DAY = 86_400_000_000

_DDL = """
CREATE TABLE IF NOT EXISTS events (
  project_id LowCardinality(String), event_id String, user_id String,
  session_id Nullable(String), ts DateTime64(6), received_at DateTime64(6),
  event_type LowCardinality(String), url Nullable(String), product_id Nullable(String),
  order_id Nullable(String), revenue Nullable(Float64), referrer Nullable(String),
  device_type LowCardinality(Nullable(String)), country LowCardinality(Nullable(String))
) ENGINE = MergeTree ORDER BY (project_id, toDate(ts), user_id, ts)
"""
_COLUMNS = (
    "project_id, event_id, user_id, session_id, ts, received_at, event_type, url, product_id,"
    " order_id, revenue, referrer, device_type, country"
)


def open_clickhouse(duck: Any, directory: Path, n_events: int) -> Any:
    """A chdb client over the bench rows (exported from the DuckDB connection ``duck`` and
    loaded the first time; cached afterwards)."""
    target = directory / f"chdb_{n_events}"
    parquet = directory / f"analytics_{n_events}.parquet"
    fresh = not target.exists()
    client = clickhouse_connect.get_client(interface="chdb", path=str(target))
    if fresh or not client.query("EXISTS TABLE events").result_rows[0][0]:
        t0 = time.perf_counter()
        if not parquet.exists():
            duck.execute(f"COPY (SELECT {_COLUMNS} FROM events) TO '{parquet}' (FORMAT parquet)")
        client.command(_DDL)
        client.command(f"INSERT INTO events SELECT {_COLUMNS} FROM file('{parquet}', Parquet)")
        client.command("OPTIMIZE TABLE events FINAL")
        print(f"loaded ClickHouse (chdb) in {time.perf_counter() - t0:.1f} s -> {target}")
    return client


def _t(value: datetime) -> str:
    return f"toDateTime64('{value:%Y-%m-%d %H:%M:%S}', 6)"


#: the bench funnel's steps as ClickHouse conditions
_STEPS = (
    "event_type = 'page_view' AND ifNull(url, '') = '/'",
    "event_type = 'product_view'",
    "event_type = 'add_to_cart'",
    "event_type = 'purchase'",
)


def ch_funnel(
    ch: Any, project: str, start: datetime, end: datetime, window_s: int, mode: str = ""
) -> list[int]:
    """Users reaching each of the bench's 4 steps (windowFunnel = our ``ordered`` mode; with
    ``mode`` ``'strict_order'``, ours of that name)."""
    option = f", {mode!r}" if mode else ""
    sql = f"""
SELECT countIf(level >= 1), countIf(level >= 2), countIf(level >= 3), countIf(level >= 4)
FROM (SELECT user_id, windowFunnel({window_s * 1_000_000}{option})(
        toUInt64(toUnixTimestamp64Micro(ts)), {", ".join(_STEPS)}) AS level
      FROM events WHERE project_id = '{project}' AND ts >= {_t(start)} AND ts < {_t(end)}
      GROUP BY user_id)
"""
    return list(ch.query(sql).result_rows[0])


def ch_funnel_unordered(
    ch: Any, project: str, start: datetime, end: datetime, window_s: int
) -> list[int]:
    """Our ``unordered`` funnel (windowFunnel has no such mode): a user's level is the most
    distinct steps with an event in ``[s, s + window]`` over the times ``s`` of their step
    events: per step event and step, the step's first event at or after it (a running minimum
    over the user's step events from the last one back, equal times included)."""
    mask = " + ".join(f"{1 << k} * ({cond})" for k, cond in enumerate(_STEPS))
    w = window_s * 1_000_000
    present = " + ".join(f"ifNull(n{k} <= t + {w}, 0)" for k in range(len(_STEPS)))
    firsts = ", ".join(
        f"minOrNullIf(t, bitTest(m, {k})) OVER w AS n{k}" for k in range(len(_STEPS))
    )
    sql = f"""
SELECT countIf(level >= 1), countIf(level >= 2), countIf(level >= 3), countIf(level >= 4)
FROM (
  SELECT user_id, max({present}) AS level FROM (
    SELECT user_id, t, {firsts} FROM (
      SELECT user_id, toUnixTimestamp64Micro(ts) AS t, toUInt8({mask}) AS m FROM events
      WHERE project_id = '{project}' AND ts >= {_t(start)} AND ts < {_t(end)})
    WHERE m > 0
    WINDOW w AS (PARTITION BY user_id ORDER BY t DESC))
  GROUP BY user_id)
"""
    return list(ch.query(sql).result_rows[0])


def ch_realtime(ch: Any, project: str, now: datetime, top_n: int = 10) -> dict[str, Any]:
    """Our real-time counters at ``now`` (windows ``[now - d, now]`` by receive time; the
    bench's rows carry no replay marker, so none is left out)."""
    m1, m5, m15 = (_t(now - timedelta(minutes=m)) for m in (1, 5, 15))
    window = f"project_id = '{project}' AND received_at >= {m5} AND received_at <= {_t(now)}"
    counts = ch.query(
        f"SELECT countIf(received_at >= {m1}), countIf(received_at >= {m5}), count(),"
        f" uniqExactIf(user_id, received_at >= {m1}), uniqExactIf(user_id, received_at >= {m5}),"
        f" uniqExact(user_id) FROM events WHERE project_id = '{project}'"
        f" AND received_at >= {m15} AND received_at <= {_t(now)}"
    ).result_rows[0]
    pages = ch.query(
        f"SELECT url, count() AS n FROM events WHERE {window} AND event_type = 'page_view'"
        f" AND url IS NOT NULL GROUP BY url ORDER BY n DESC, url LIMIT {top_n}"
    ).result_rows
    by_type = ch.query(
        f"SELECT toString(event_type) AS t, count() FROM events WHERE {window} GROUP BY t"
    ).result_rows
    e1, e5, e15, u1, u5, u15 = (int(v) for v in counts)
    return {
        "events_last_minute": e1,
        "events_last_5_minutes": e5,
        "events_last_15_minutes": e15,
        "active_users_last_minute": u1,
        "active_users_last_5_minutes": u5,
        "active_users_last_15_minutes": u15,
        "events_per_second": e1 / 60.0,
        "top_pages": [{"url": u, "views": int(n)} for u, n in pages],
        "events_by_type": {t: int(n) for t, n in by_type},
    }


def ch_retention(
    ch: Any, project: str, start: datetime, end: datetime, periods: int
) -> list[tuple[str, list[int]]]:
    """Weekly first-event cohorts: ``[(cohort Monday, retained per week k)]`` (exact mode)."""
    conds = ", ".join(f"w = c + {7 * k}" for k in range(periods))
    horizon = end + timedelta(days=7 * (periods + 2))
    sql = f"""
WITH firsts AS (
  SELECT user_id, toMonday(min(ts)) AS c FROM events
  WHERE project_id = '{project}' AND ts < {_t(end)} GROUP BY user_id HAVING min(ts) >= {_t(start)})
SELECT cohort, sumForEach(r) FROM (
  SELECT user_id, any(c) AS cohort, retention({conds}) AS r FROM (
    SELECT e.user_id AS user_id, f.c AS c, toMonday(e.ts) AS w FROM events AS e
    INNER JOIN firsts AS f ON e.user_id = f.user_id
    WHERE e.project_id = '{project}' AND e.ts >= {_t(start)} AND e.ts < {_t(horizon)})
  GROUP BY user_id)
GROUP BY cohort ORDER BY cohort
"""
    return [(c.isoformat(), [int(x) for x in r]) for c, r in ch.query(sql).result_rows]


_SESSIONS = """
SELECT count() AS users, sum(arraySum(new)) AS sessions, sum(dur) AS duration_us,
       sum(bounces) AS bounces, sum(arraySum(pv)) AS page_views
FROM (
  SELECT user_id,
    arraySort(groupArray((toUnixTimestamp64Micro(ts), toUInt8(event_type = 'page_view')))) AS a,
    arrayMap(x -> x.1, a) AS t, arrayMap(x -> x.2, a) AS pv, arrayDifference(t) AS gap,
    arrayMap((d, i) -> toUInt8(i = 1 OR d > {timeout}), gap, arrayEnumerate(t)) AS brk,
    arrayMap((x, g) -> intDiv(x - g, {cut}), t, arrayFill((x, b) -> b, t, brk)) AS piece,
    arrayMap((b, dp) -> toUInt8(b OR dp != 0), brk, arrayDifference(piece)) AS new,
    arraySum(arrayMap((d, n) -> if(n = 1, 0, d), gap, new)) AS dur,
    arraySum(arrayMap((n, l, p) -> toUInt8(n = 1 AND l = 1 AND p = 1), new,
                      arrayPushBack(arrayPopFront(new), 1), pv)) AS bounces
  FROM events WHERE project_id = '{project}' AND ts >= {start} AND ts < {end}
    AND session_id IS NULL
  GROUP BY user_id)
"""


def ch_sessions(ch: Any, project: str, start: datetime, end: datetime) -> dict[str, Any]:
    """Inactivity sessions (30 min, cut at 24 h) of events without a session_id (the bench
    sends none): the summary of :func:`avila.analytics.sessions.summary`."""
    sql = _SESSIONS.format(
        timeout=1800 * 1_000_000,
        cut=US_PER_DAY,
        project=project,
        start=_t(start),
        end=_t(end),
    )
    users, count, duration_us, bounces, page_views = ch.query(sql).result_rows[0]
    return {
        "sessions": int(count),
        "avg_duration_seconds": duration_us / 1e6 / count if count else 0.0,
        "bounce_rate": bounces / count if count else 0.0,
        "pages_per_session": page_views / count if count else 0.0,
        "users": int(users),
    }


def ch_overview(
    ch: Any, project: str, start: datetime, end: datetime, top_n: int = 10
) -> dict[str, Any]:
    """The overview's figures (UTC buckets): totals, unique users, revenue, events by type, top
    pages, users by country and device, DAU/WAU/MAU and the session summary."""
    where = f"project_id = '{project}' AND ts >= {_t(start)} AND ts < {_t(end)}"
    total, users, revenue = ch.query(
        f"SELECT count(), uniqExact(user_id), sumIf(revenue, event_type = 'purchase')"
        f" FROM events WHERE {where}"
    ).result_rows[0]
    by_type = dict(
        ch.query(
            f"SELECT event_type, count() FROM events WHERE {where} GROUP BY event_type"
        ).result_rows
    )
    pages = ch.query(
        f"SELECT url, count() AS n FROM events WHERE {where} AND event_type = 'page_view'"
        f" AND url IS NOT NULL GROUP BY url ORDER BY n DESC, url LIMIT {top_n}"
    ).result_rows
    countries = ch.query(
        f"SELECT country, uniqExact(user_id) AS n FROM events WHERE {where}"
        f" AND country IS NOT NULL GROUP BY country ORDER BY n DESC, country LIMIT {top_n}"
    ).result_rows
    devices = ch.query(
        f"SELECT device_type, uniqExact(user_id) AS n FROM events WHERE {where}"
        f" AND device_type IS NOT NULL GROUP BY device_type ORDER BY n DESC, device_type"
        f" LIMIT {top_n}"
    ).result_rows
    active = {}
    for name, bucket in (("dau", "toDate(ts)"), ("wau", "toMonday(ts)"),
                         ("mau", "toStartOfMonth(ts)")):  # fmt: skip
        active[name] = [
            (d.isoformat(), int(n))
            for d, n in ch.query(
                f"SELECT {bucket} AS b, uniqExact(user_id) FROM events WHERE {where}"
                " GROUP BY b ORDER BY b"
            ).result_rows
        ]
    sessions = ch_sessions(ch, project, start, end)
    return {
        "total_events": int(total),
        "unique_users": int(users),
        "revenue": float(revenue),
        "events_by_type": {k: int(v) for k, v in by_type.items()},
        "top_pages": [(u, int(n)) for u, n in pages],
        "countries": [(c, int(n)) for c, n in countries],
        "devices": [(d, int(n)) for d, n in devices],
        **active,
        "sessions": sessions["sessions"],
        "bounce_rate": sessions["bounce_rate"],
        "avg_session_duration_seconds": sessions["avg_duration_seconds"],
        "pages_per_session": sessions["pages_per_session"],
    }


def overview_figures(ours: dict[str, Any]) -> dict[str, Any]:
    """Our overview in :func:`ch_overview`'s shape."""
    return {
        "total_events": ours["total_events"],
        "unique_users": ours["unique_users"],
        "revenue": ours["revenue"],
        "events_by_type": ours["events_by_type"],
        "top_pages": [(p["url"], p["views"]) for p in ours["top_pages"]],
        "countries": [(c["country"], c["users"]) for c in ours["countries"]],
        "devices": [(d["device_type"], d["users"]) for d in ours["devices"]],
        "dau": [(d["date"], d["users"]) for d in ours["dau"]],
        "wau": [(w["week_start"], w["users"]) for w in ours["wau"]],
        "mau": [(m["month"], m["users"]) for m in ours["mau"]],
        "sessions": ours["sessions"],
        "bounce_rate": ours["bounce_rate"],
        "avg_session_duration_seconds": ours["avg_session_duration_seconds"],
        "pages_per_session": ours["pages_per_session"],
    }


def ch_rfm(ch: Any, project: str, reference: datetime, window_days: int) -> dict[str, int]:
    """Users per (R score, F score) digit pair, scored as :mod:`avila.analytics.rfm` does
    (orders = distinct order ids; quintile edges by linear interpolation; F ranked first)."""
    start = reference - timedelta(days=window_days)
    ref_us = int((reference - datetime(1970, 1, 1)) / timedelta(microseconds=1))
    sql = f"""
WITH u AS (
  SELECT user_id, {ref_us} - max(last_us) AS rec, count() AS f FROM (
    SELECT user_id, coalesce(order_id, event_id) AS oid, max(toUnixTimestamp64Micro(ts)) AS last_us
    FROM events WHERE project_id = '{project}' AND event_type = 'purchase'
      AND ts >= {_t(start)} AND ts < {_t(reference)} GROUP BY user_id, oid)
  GROUP BY user_id),
ranked AS (SELECT rec, row_number() OVER (ORDER BY f, user_id) AS fr FROM u),
edges AS (SELECT quantilesExactInclusive(0.2, 0.4, 0.6, 0.8)(toFloat64(rec)) AS er,
                 quantilesExactInclusive(0.2, 0.4, 0.6, 0.8)(toFloat64(fr)) AS ef FROM ranked)
SELECT 6 - (1 + arrayCount(x -> x < rec, er)) AS r, 1 + arrayCount(x -> x < fr, ef) AS f,
       count() FROM ranked CROSS JOIN edges GROUP BY r, f
"""
    return {f"{r}{f}": int(n) for r, f, n in ch.query(sql).result_rows}


def rfm_digit_counts(table: dict[str, Any]) -> dict[str, int]:
    """Our :func:`avila.analytics.rfm.score_table` as users per R/F digit pair."""
    out: dict[str, int] = {}
    for r, f in zip(table["r"].tolist(), table["f"].tolist(), strict=True):
        out[f"{r}{f}"] = out.get(f"{r}{f}", 0) + 1
    return out


def same(a: Any, b: Any, rel: float = 1e-9) -> bool:
    """Equal, floats within ``rel`` (sums in another order differ in the last bits)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], rel) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= rel * max(1.0, abs(float(a)), abs(float(b)))
    return bool(a == b)
