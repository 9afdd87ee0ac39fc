"""Independent plain-Python/pandas reference implementations of the analytics definitions
(shared/REFERENCES.md), written from the definitions, not from the production code."""

from __future__ import annotations

import re
import statistics
from datetime import datetime, timedelta
from typing import Any

KEY = {
    "page_view": "url",
    "click": "url",
    "product_view": "product_id",
    "add_to_cart": "product_id",
    "remove_from_cart": "product_id",
    "custom": "event_name",
    "search": "search_query",
    "purchase": "order_id",
}


def matches(row: dict[str, Any], cond: dict[str, Any] | None) -> bool:
    if cond is None:
        return True
    if row["event_type"] != cond["condition_type"]:
        return False
    value = cond.get("condition_value", "")
    if value == "":
        return True
    x = row.get(KEY[cond["condition_type"]])
    if x is None:
        return False
    how = cond.get("match", "exact")
    if how == "exact":
        return x == value
    if how == "prefix":
        return x.startswith(value)
    if how == "contains":
        return value in x
    return re.search(value, x) is not None


def in_range(rows: list[dict[str, Any]], project: str, start: datetime, end: datetime) -> list:
    return [r for r in rows if r["project_id"] == project and start <= r["ts"] < end]


def by_user(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: r["ts"]):
        out.setdefault(r["user_id"], []).append(r)
    return out


def _us(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def strict_order_replay(
    seq: list[tuple[Any, int]], n: int, window: Any
) -> tuple[int, dict[int, Any]]:
    """ClickHouse's strict_order over one user's entries ``(time, step index)`` (index 0: an
    event matching no step; an event matching several steps is an entry per step): (level,
    {step k >= 1: time from the step-(k-1) completion its chain extended to step k}). Times
    are anything ordered that ``+ window`` and ``-`` work on (datetimes, integers)."""
    reached: dict[int, tuple[Any, Any]] = {}  # step -> (chain start, time reached)
    gaps: dict[int, Any] = {}
    seen_first = False
    for t, idx in sorted(seq):
        if idx == 0:
            if seen_first:
                break
            continue
        k = idx - 1
        if k == 0:
            reached[0] = (t, t)
            seen_first = True
            continue
        if seen_first and (k - 1) not in reached:
            break
        if (k - 1) in reached and t <= reached[k - 1][0] + window:
            if k not in reached:
                gaps[k] = t - reached[k - 1][1]
            reached[k] = (reached[k - 1][0], t)
            if k == n - 1:
                break
    return len(reached), gaps


def funnel_user(
    events: list[dict[str, Any]], steps: list[dict[str, Any]], window: timedelta, mode: str
) -> tuple[int, dict[int, float]]:
    """(level, {step index k >= 1: seconds from step k-1 to step k}) for one user."""
    n = len(steps)
    entries = [(e["ts"], k) for e in events for k in range(n) if matches(e, steps[k])]
    if mode in ("ordered", "strict_increase"):
        strict = mode == "strict_increase"
        # chains[k]: list of (completion time, set of chain start times) per step-k entry
        chains: list[list[tuple[datetime, set[datetime]]]] = [[] for _ in range(n)]
        chains[0] = [(t, {t}) for t, k in entries if k == 0]
        for k in range(1, n):
            for t, kk in entries:
                if kk != k:
                    continue
                starts = {
                    s
                    for tp, ss in chains[k - 1]
                    if (tp < t if strict else tp <= t)
                    for s in ss
                    if t <= s + window
                }
                if starts:
                    chains[k].append((t, starts))
        level = max((k + 1 for k in range(n) if chains[k]), default=0)
        times = {}
        for k in range(1, level):
            first = min(t for t, _ in chains[k])
            prev = max(tp for tp, _ in chains[k - 1] if (tp < first if strict else tp <= first))
            times[k] = (first - prev).total_seconds()
        return level, times
    if mode == "strict_order":
        seq = []
        for e in events:
            ks = [k + 1 for k in range(n) if matches(e, steps[k])]
            seq.extend((e["ts"], k) for k in ks) if ks else seq.append((e["ts"], 0))
        level, gaps = strict_order_replay(seq, n, window)
        return level, {k: gap.total_seconds() for k, gap in gaps.items()}
    # unordered
    best, best_firsts = 0, []
    for s in sorted({t for t, _ in entries}):
        firsts: dict[int, datetime] = {}
        for t, k in sorted(entries):
            if s <= t <= s + window and k not in firsts:
                firsts[k] = t
        if len(firsts) > best:
            best, best_firsts = len(firsts), sorted(firsts.values())
    return best, {k: (best_firsts[k] - best_firsts[k - 1]).total_seconds() for k in range(1, best)}


def funnel_counts(
    rows: list[dict[str, Any]],
    project: str,
    start: datetime,
    end: datetime,
    steps: list[dict[str, Any]],
    window: timedelta,
    mode: str,
) -> tuple[list[int], list[float | None], list[float | None], dict[str, int]]:
    """Per step: counts, median and mean seconds to convert; and the level per user."""
    levels: dict[str, int] = {}
    conv: dict[int, list[float]] = {}
    for user, events in by_user(in_range(rows, project, start, end)).items():
        level, times = funnel_user(events, steps, window, mode)
        levels[user] = level
        for k, sec in times.items():
            conv.setdefault(k, []).append(sec)
    counts = [sum(1 for v in levels.values() if v >= k + 1) for k in range(len(steps))]
    med = [statistics.median(conv[k]) if conv.get(k) else None for k in range(len(steps))]
    avg = [statistics.fmean(conv[k]) if conv.get(k) else None for k in range(len(steps))]
    return counts, med, avg, levels


def local_periods(ts, tz: str, period: str):
    """pandas calendar period of naive-UTC timestamps as wall time in ``tz``."""
    import pandas as pd

    local = pd.Series(pd.to_datetime(ts)).dt.tz_localize("UTC").dt.tz_convert(tz)
    local = local.dt.tz_localize(None)
    freq = {"day": "D", "week": "W-SUN", "month": "M"}[period]
    return local.dt.to_period(freq)


def retention_oracle(rows, project, start, end, period, periods, tz, mode, start_ev, ret_ev):
    import pandas as pd

    df = pd.DataFrame([r for r in rows if r["project_id"] == project])
    s = df[[matches(r, start_ev) for r in df.to_dict("records")]]
    s = s[s["ts"] < end]
    firsts = s.groupby("user_id")["ts"].min()
    firsts = firsts[firsts >= start]
    cohort = pd.Series(local_periods(firsts.to_numpy(), tz, period).array, index=firsts.index)
    r = df[[matches(x, ret_ev) for x in df.to_dict("records")]]
    r = r[r["ts"] >= start]
    r = r.assign(p=local_periods(r["ts"].to_numpy(), tz, period).array)
    out = {}
    for c, users in cohort.groupby(cohort):
        retained = [len(users)] + [0] * (periods - 1)
        for user in users.index:
            ks = {(p - c).n for p in r.loc[r["user_id"] == user, "p"]}
            for k in range(1, periods):
                hit = (k in ks) if mode == "exact" else any(x >= k for x in ks)
                retained[k] += int(hit)
        out[str(c.start_time.date())] = retained
    return out


SEGMENT_TABLE = {
    **{f"{r}{f}": "Hibernating" for r in (1, 2) for f in (1, 2)},
    **{f"{r}{f}": "At Risk" for r in (1, 2) for f in (3, 4)},
    "15": "Can't Lose Them",
    "25": "Can't Lose Them",
    "31": "About to Sleep",
    "32": "About to Sleep",
    "33": "Need Attention",
    **{f"{r}{f}": "Loyal Customers" for r in (3, 4) for f in (4, 5)},
    "41": "Promising",
    "51": "New Customers",
    **{f"{r}{f}": "Potential Loyalists" for r in (4, 5) for f in (2, 3)},
    "54": "Champions",
    "55": "Champions",
}


def sessions_oracle(rows, project, start, end, timeout_s=1800, max_s=86400):
    """List of (user, first ts, last ts, events, page views) per session."""
    out = []
    evs = in_range(rows, project, start, end)
    keyed: dict[tuple, list] = {}
    for r in evs:
        if r.get("session_id") is not None:
            keyed.setdefault((r["user_id"], r["session_id"]), []).append(r)
    for user, events in by_user([r for r in evs if r.get("session_id") is None]).items():
        current: list = []
        for r in events:
            if current and (r["ts"] - current[-1]["ts"]).total_seconds() > timeout_s:
                keyed[(user, "gap", id(current))] = current
                current = []
            current.append(r)
        if current:
            keyed[(user, "gap", id(current))] = current
    for key, events in list(keyed.items()):
        if key[1] != "gap":
            continue
        del keyed[key]
        first = events[0]["ts"]
        for r in events:
            piece = int((r["ts"] - first).total_seconds() // max_s)
            keyed.setdefault((key[0], key[2], piece), []).append(r)
    for key, events in keyed.items():
        ts = [r["ts"] for r in events]
        pv = sum(1 for r in events if r["event_type"] == "page_view")
        out.append((key[0], min(ts), max(ts), len(events), pv))
    return out


def rfm_users(
    rows: list[dict[str, Any]], ref: datetime, window_days: int, project: str | None = None
):
    """Per purchasing user (a pandas frame indexed by sorted user id): ``last`` purchase time,
    ``f`` orders, ``m`` money, over ``[ref - window_days, ref)``. An order is a distinct
    ``order_id`` (a purchase without one is its own order, by event id); its revenue is the
    largest sent for it."""
    import pandas as pd

    df = pd.DataFrame(rows)
    keep = (df.event_type == "purchase") & (df.ts >= ref - timedelta(days=window_days))
    keep &= df.ts < ref
    if project is not None:
        keep &= df.project_id == project
    df = df[keep]
    orders = (
        df.assign(oid=df.order_id.fillna(df.event_id))
        .groupby(["user_id", "oid"])
        .agg(last=("ts", "max"), rev=("revenue", "max"))
        .fillna({"rev": 0.0})  # an order sent without revenue counts 0
    )
    users = orders.groupby("user_id").agg(last=("last", "max"), f=("rev", "size"), m=("rev", "sum"))
    return users.sort_index()
