"""Independent pandas / plain-Python references for paths, lifecycle and stickiness, written from
the definitions in docs/analytics.md (PostHog's lifecycle), not from the SQL. Also the data
generator for their tests: unicode ids and URLs, ties, duplicate deliveries, events around
local midnight and across DST changes, rows of another project."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from analytics_data import OTHER_PROJECT, PROJECT, event
from analytics_oracles import matches

NAME_KEY = {
    "page_view": "url",
    "click": "url",
    "product_view": "product_id",
    "add_to_cart": "product_id",
    "remove_from_cart": "product_id",
    "custom": "event_name",
}
URLS = ["/", "/café", "/a", "/a/b", "/ß/日本", "/cart"]
USERS = ["ana", "Zoë", "用户", "😀", "o'brien", "x y"]
TYPES = ["page_view"] * 4 + ["click", "product_view", "add_to_cart", "purchase", "custom", "login"]


def journey_rows(seed: int, n_users: int = 60, *, t0: datetime, days: int) -> list[dict[str, Any]]:
    """Users active on random days; on each, a burst of events on a coarse grid near local
    midnight for Europe and the Americas (ties common), 5 % delivered twice, some repeats."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for u in range(n_users):
        user = f"{rng.choice(USERS)}-{u}"
        p_active = rng.choice([0.05, 0.15, 0.4, 0.8])
        for day in range(days):
            if rng.random() > p_active:
                continue
            hour = rng.choice([0, 1, 2, 3, 4, 12, 21, 22, 23])
            at = t0 + timedelta(days=day, hours=hour, minutes=rng.choice([0, 30]))
            for _ in range(rng.randint(1, 5)):
                at += timedelta(minutes=rng.choice([0, 0, 10, 45]))
                ts = at + timedelta(microseconds=rng.choice([0, 0, 1]))
                etype = rng.choice(TYPES)
                fields: dict[str, Any] = {}
                if etype in ("page_view", "click"):
                    fields["url"] = rng.choice(URLS)
                elif etype in ("product_view", "add_to_cart"):
                    fields["product_id"] = rng.choice(["p1", "p2", "ñ3"])
                elif etype == "purchase":
                    fields["order_id"] = f"o{rng.randint(0, 99)}"
                    fields["revenue"] = 10.0
                elif etype == "custom":
                    fields["event_name"] = rng.choice(["signup", "vídeo"])
                row = event(user, ts, etype, **fields)
                rows.append(row)
                if rng.random() < 0.05:
                    rows.append(dict(row))  # the same event delivered twice
                if rng.random() < 0.1:  # a reload: the same name again a minute later
                    rows.append(event(user, ts + timedelta(minutes=1), etype, **fields))
        if rng.random() < 0.2:
            rows.append(event(user, t0, "page_view", project_id=OTHER_PROJECT, url="/"))
    return rows


def frame(rows: list[dict[str, Any]], project: str = PROJECT) -> pd.DataFrame:
    df = pd.DataFrame([r for r in rows if r["project_id"] == project])
    for column in ("url", "product_id", "event_name"):
        if column not in df:
            df[column] = None
    return df


# --- paths -------------------------------------------------------------------------------------


def event_name(row: dict[str, Any]) -> str:
    key = NAME_KEY.get(row["event_type"])
    if key is None:
        return row["event_type"]
    value = row.get(key)
    return f"{row['event_type']}:{'' if value is None or value != value else value}"


def paths_oracle(
    rows: list[dict[str, Any]],
    start: datetime,
    end: datetime,
    steps: int,
    start_cond: dict[str, Any] | None = None,
    end_cond: dict[str, Any] | None = None,
    include: list[str] | None = None,
    limit: int = 50,
) -> dict[str, Any]:
    df = frame(rows)
    df = df[(df["ts"] >= start) & (df["ts"] < end)]
    if include:
        df = df[df["event_type"].isin(include)]
    recs = df.to_dict("records")
    for r in recs:
        r["name"] = event_name(r)
    per_user: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(recs, key=lambda r: (r["ts"], r["name"])):
        per_user.setdefault(r["user_id"], []).append(r)
    backwards = end_cond is not None and start_cond is None
    paths: list[tuple[int, list[str]]] = []  # (first step number, names)
    for events in per_user.values():
        i = 0
        if start_cond is not None:
            hits = [k for k, r in enumerate(events) if matches(r, start_cond)]
            if not hits:
                continue
            i = hits[0]
        j = len(events) - 1
        if end_cond is not None:
            hits = [k for k in range(i, len(events)) if matches(events[k], end_cond)]
            if not hits:
                continue
            j = hits[0]
        names: list[str] = []
        for r in events[i : j + 1]:
            if not names or names[-1] != r["name"]:
                names.append(r["name"])
        if start_cond is not None and end_cond is not None:
            if len(names) > steps:
                continue
            paths.append((1, names))
        elif backwards:
            kept = names[-steps:]
            paths.append((steps - len(kept) + 1, kept))
        else:
            paths.append((1, names[:steps]))
    nodes: Counter[tuple[int, str]] = Counter()
    links: Counter[tuple[int, str, str]] = Counter()
    for first, names in paths:
        for k, name in enumerate(names):
            nodes[(first + k, name)] += 1
            if k + 1 < len(names):
                links[(first + k, name, names[k + 1])] += 1
    keep: dict[int, set[str]] = {}
    for step in {s for s, _ in nodes}:
        ranked = sorted(
            ((n, u) for (s, n), u in nodes.items() if s == step), key=lambda x: (-x[1], x[0])
        )
        keep[step] = {n for n, _ in ranked[:limit]}

    def lab(step: int, name: str) -> str:
        return name if name in keep[step] else "Other"

    merged_nodes: Counter[tuple[int, str]] = Counter()
    for (s, n), u in nodes.items():
        merged_nodes[(s, lab(s, n))] += u
    merged_links: Counter[tuple[str, str]] = Counter()
    for (s, a, b), u in links.items():
        merged_links[(f"{s}:{lab(s, a)}", f"{s + 1}:{lab(s + 1, b)}")] += u
    return {
        "users": len(paths),
        "nodes": {(s, n): u for (s, n), u in merged_nodes.items()},
        "links": dict(merged_links),
    }


# --- lifecycle and stickiness ---------------------------------------------------------------

FREQ = {"day": "D", "week": "W-SUN", "month": "M"}


def local_period(ts: pd.Series, tz: str, freq: str) -> pd.Series:
    local = pd.to_datetime(ts).dt.tz_localize("UTC").dt.tz_convert(tz).dt.tz_localize(None)
    return local.dt.to_period(freq)


def report_periods(start: datetime, end: datetime, tz: str, freq: str) -> list[pd.Period]:
    lo, hi = local_period(pd.Series([start, end - timedelta(microseconds=1)]), tz, freq)
    return list(pd.period_range(lo, hi, freq=freq))


def label(p: pd.Period) -> str:
    return p.start_time.date().isoformat()


def lifecycle_oracle(
    rows: list[dict[str, Any]],
    start: datetime,
    end: datetime,
    period: str,
    tz: str,
    event_cond: dict[str, Any] | None = None,
) -> dict[str, dict[str, int]]:
    freq = FREQ[period]
    df = frame(rows)
    first_seen = local_period(df.groupby("user_id")["ts"].min(), tz, freq)
    act = df[[matches(r, event_cond) for r in df.to_dict("records")]]
    act = act.assign(p=local_period(act["ts"], tz, freq).to_numpy())
    active = act.groupby("p")["user_id"].agg(set).to_dict()
    out = {}
    for p in report_periods(start, end, tz, freq):
        now, before = active.get(p, set()), active.get(p - 1, set())
        new = {u for u in now if first_seen[u] == p}
        returning = (now - new) & before
        resurrecting = now - new - before
        out[label(p)] = {
            "new": len(new),
            "returning": len(returning),
            "resurrecting": len(resurrecting),
            "dormant": -len(before - now),
        }
    return out


def stickiness_oracle(
    rows: list[dict[str, Any]],
    start: datetime,
    end: datetime,
    period: str,
    tz: str,
    event_cond: dict[str, Any] | None = None,
) -> dict[str, list[int]]:
    freq = FREQ[period]
    most = 7 if period == "week" else 31
    df = frame(rows)
    df = df[[matches(r, event_cond) for r in df.to_dict("records")]]
    df = df.assign(p=local_period(df["ts"], tz, freq).to_numpy())
    df = df.assign(d=local_period(df["ts"], tz, "D").to_numpy())
    days = df.groupby(["p", "user_id"])["d"].nunique()
    out = {}
    for p in report_periods(start, end, tz, freq):
        counts = Counter(days.loc[p].tolist()) if p in days.index.get_level_values(0) else {}
        out[label(p)] = [counts.get(n, 0) for n in range(1, most + 1)]
    return out
