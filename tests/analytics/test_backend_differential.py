"""Differential test: every analytics report gives the same answer on DuckDB and on ClickHouse
(chdb) for the same rows.

The rows are generated with the cases where dialects drift: timestamp ties (an hourly grid,
some 1 µs apart), exact duplicate deliveries, unicode ids, urls and JSON values, NULLs in every
optional column, huge and zero revenues, JSON properties of every JSON type (string, number,
boolean, null, object, absent), replayed (``metadata.source``) events for the real-time
counters, identity links (a two-hop chain), and queries in several time zones across the
European and South American DST changes. Protocol, fixed before the first run: the reports
must be equal, floats to 1e-9 relative (sums may add in another order); nothing else is
tolerated.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from analytics_data import to_table
from tests.analytics.backend_pair import both_stores, normal

from avila import analytics as A
from avila.storage import Store

PROJECT = "diff"
T0 = datetime(2024, 3, 20)  # spans the EU (Mar 31) and Brazil-free / Chile (Apr 7) DST changes
NOW = T0 + timedelta(days=28)
USERS = [f"u{i:02d}" for i in range(40)] + ["usuário-ü", "用户", "🙂", "O'Brien", "a\\b", "%?"]
URLS = ["/", "/a", "/a/b", "/produto/ç", "/cart?x=1", None]
PROPS: list[Any] = [
    "pro",
    "free",
    "Grátis",
    "",
    "null",
    3,
    1.5,
    2**70,
    True,
    None,
    {"k": 1},
    [1, 2],
]
ZONES = ["UTC", "Europe/Berlin", "America/Santiago", "Asia/Kathmandu"]


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def _rows(seed: int = 11) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    n = 0
    for user in USERS:
        country = rng.choice(["BR", "DE", "NP", None])
        browser = rng.choice(["Chrome", "Firefox", None])
        for _ in range(rng.randint(0, 40)):
            n += 1
            ts = T0 + timedelta(hours=rng.randint(0, 24 * 28))
            ts += timedelta(microseconds=rng.choice([0, 0, 0, 1]))
            etype = rng.choice(
                ["page_view"] * 4 + ["click", "product_view", "add_to_cart", "purchase", "custom"]
            )
            row: dict[str, Any] = {
                "project_id": PROJECT,
                "event_id": f"e{n}",
                "user_id": user,
                "session_id": rng.choice([None, None, f"s{rng.randint(0, 2)}"]),
                "ts": ts,
                "received_at": NOW - timedelta(seconds=rng.randint(0, 1800)),
                "event_type": etype,
                "country": country,
                "browser": browser,
                "device_type": rng.choice(["mobile", "desktop", None]),
                "referrer": rng.choice([None, "https://ex.com/ü", "https://b.io"]),
            }
            if etype in ("page_view", "click"):
                row["url"] = rng.choice(URLS)
            elif etype in ("product_view", "add_to_cart"):
                row["product_id"] = rng.choice(["p1", "p2", "p10", "ç"])
                row["price"] = rng.choice([9.99, 0.0, 1e12])
                row["quantity"] = rng.choice([1, 2, None])
            elif etype == "purchase":
                row["order_id"] = rng.choice([None, f"o{rng.randint(0, 30)}"])
                row["revenue"] = rng.choice([0.0, 19.9, 123.45, 1e12, None])
            else:
                row["event_name"] = rng.choice(["signup", "sign", "ação"])
            plan = rng.choice(PROPS)
            row["data"] = _json({"properties": {"plan": plan, "n": rng.randint(0, 5)}})
            if rng.random() < 0.2:
                row["data"] = _json({})
            row["metadata"] = rng.choice([None, _json({"source": "demo"}), _json({"x": 1})])
            rows.append(row)
            if rng.random() < 0.05:
                rows.append(dict(row))  # a duplicate delivery
    return rows


ROWS = _rows()
LINKS = [("u01", "u02"), ("u02", "u03"), ("🙂", "usuário-ü")]


def _links() -> pa.Table:
    return pa.table(
        {
            "project_id": [PROJECT] * len(LINKS),
            "anonymous_id": [a for a, _ in LINKS],
            "user_id": [u for _, u in LINKS],
            "ts": pa.array([T0] * len(LINKS), pa.timestamp("us")),
            "received_at": pa.array([T0] * len(LINKS), pa.timestamp("us")),
            "source": ["test"] * len(LINKS),
            "event_id": [f"link{i}" for i in range(len(LINKS))],
        }
    )


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Store]]:
    def fill(store: Store) -> None:
        store.append_events(to_table(ROWS))
        store.append_table("identities", _links())

    yield from both_stores(tmp_path_factory, fill)


SPAN = {"start_time": T0.isoformat(), "end_time": (T0 + timedelta(days=29)).isoformat()}
STEPS = [
    {"condition_type": "page_view", "condition_value": "/a", "match": "prefix"},
    {"condition_type": "product_view", "condition_value": ""},
    {"condition_type": "add_to_cart", "condition_value": "ç", "match": "contains"},
    {"condition_type": "purchase", "condition_value": ""},
]
PLAN = "event_type.data.properties.plan"

Report = Callable[[Store], Any]
CASES: list[tuple[str, Report]] = []
for mode in ("ordered", "strict_increase", "strict_order", "unordered"):
    for zone in ("UTC", "America/Santiago"):
        q = {**SPAN, "steps": STEPS, "mode": mode, "conversion_window_seconds": 86400}
        q |= {"breakdown": PLAN, "trend": "day", "timezone": zone}
        CASES.append((f"funnel-{mode}-{zone}", lambda s, q=q: A.funnel(s, PROJECT, q)))
    dq = {**SPAN, "steps": STEPS[:3], "mode": mode, "step": 1}
    CASES.append((f"funnel_dropped-{mode}", lambda s, q=dq: A.funnel_dropped(s, PROJECT, q)))
for zone in ZONES:
    for period in ("day", "week", "month"):
        for rmode in ("exact", "on_or_after"):
            q = {**SPAN, "period": period, "periods": 5, "mode": rmode, "timezone": zone}
            CASES.append(
                (f"retention-{period}-{rmode}-{zone}", lambda s, q=q: A.retention(s, PROJECT, q))
            )
    q = {**SPAN, "timezone": zone}
    CASES.append((f"overview-{zone}", lambda s, q=q: A.overview(s, PROJECT, q)))
    CASES.append((f"sessions-{zone}", lambda s, q=q: A.sessions(s, PROJECT, q)))
    for interval in ("hour", "day", "week", "month"):
        tq = {
            **SPAN,
            "interval": interval,
            "timezone": zone,
            "breakdown": PLAN,
            "breakdown_limit": 3,
        }
        CASES.append((f"trends-{interval}-{zone}", lambda s, q=tq: A.trends(s, PROJECT, q)))
    for period in ("day", "week", "month"):
        lq = {**SPAN, "period": period, "timezone": zone}
        CASES.append((f"lifecycle-{period}-{zone}", lambda s, q=lq: A.lifecycle(s, PROJECT, q)))
    for period in ("week", "month"):
        sq = {**SPAN, "period": period, "timezone": zone}
        CASES.append((f"stickiness-{period}-{zone}", lambda s, q=sq: A.stickiness(s, PROJECT, q)))
# Lifecycle beyond 64 periods takes the other query shape (lag/lead over active periods).
long = {"start_time": (T0 - timedelta(days=60)).isoformat(), "end_time": SPAN["end_time"]}
CASES.append(("lifecycle-long", lambda s: A.lifecycle(s, PROJECT, {**long, "period": "day"})))
FILTERS: list[dict[str, Any]] = [
    {"property": PLAN, "operator": "is_set"},
    {"property": PLAN, "operator": "eq", "value": "Grátis"},
    {"property": PLAN, "operator": "gt", "value": 2},
    {"property": PLAN, "operator": "not_in", "value": ["pro", "true"]},
    {"property": "context.location.country", "operator": "is_not_set"},
    {"property": "url", "operator": "regex", "value": "^/a(/b)?$"},
    {"property": "url", "operator": "not_contains", "value": "?"},
    {"property": "revenue", "operator": "gte", "value": 1e11},
]
for i, flt in enumerate(FILTERS):
    fq = {**SPAN, "filters": [flt]}
    CASES.append((f"overview-filter{i}", lambda s, q=fq: A.overview(s, PROJECT, q)))
CASES += [
    ("rfm", lambda s: A.rfm(s, PROJECT, {"reference_date": NOW.isoformat()})),
    ("rfm-user", lambda s: A.user_segment(s, PROJECT, "usuário-ü", {"reference_date": NOW.isoformat()})),
    ("realtime", lambda s: A.realtime(s, PROJECT, {"now": NOW.isoformat()})),
    ("paths", lambda s: A.paths(s, PROJECT, {**SPAN, "steps": 4})),
    ("paths-start", lambda s: A.paths(s, PROJECT, {**SPAN, "start": STEPS[0]})),
    ("paths-end", lambda s: A.paths(s, PROJECT, {**SPAN, "end": {"condition_type": "purchase"}})),
    ("paths-both", lambda s: A.paths(s, PROJECT, {**SPAN, "start": STEPS[0], "end": STEPS[3], "steps": 6})),
]  # fmt: skip
for user in ("u03", "用户", "O'Brien", "%?"):
    CASES.append((f"profile-{user}", lambda s, u=user: A.user_profile(s, PROJECT, u)))
    CASES.append((f"user_sessions-{user}", lambda s, u=user: A.user_sessions(s, PROJECT, u, SPAN)))


@pytest.mark.parametrize("report", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_duckdb_and_clickhouse_agree(stores: dict[str, Store], report: Report) -> None:
    assert normal(report(stores["chdb"])) == normal(report(stores["duckdb"]))


def test_the_data_has_the_edge_cases() -> None:
    """The generator really produced what the module docstring promises (guards the test)."""
    keys = [(r["user_id"], r["ts"], r["event_id"]) for r in ROWS]
    assert len(keys) > len(set(keys))  # duplicates
    same_time = {(r["user_id"], r["ts"], r["event_id"]) for r in ROWS}
    assert len({(u, t) for u, t, _ in same_time}) < len(same_time)  # a user's events tie
    assert any(r.get("revenue") == 1e12 for r in ROWS) and any(r.get("url") is None for r in ROWS)
    assert {"usuário-ü", "用户", "🙂"} <= {r["user_id"] for r in ROWS}
    assert any("demo" in (r.get("metadata") or "") for r in ROWS)


def test_rows_survive_the_round_trip(stores: dict[str, Store], tmp_path: Path) -> None:
    """Both stores hold exactly the generated rows (ids, unicode, timestamps to the µs)."""
    sql = "SELECT event_id, user_id, ts, url, revenue FROM events ORDER BY event_id, ts"
    assert stores["chdb"].query(sql) == stores["duckdb"].query(sql)
