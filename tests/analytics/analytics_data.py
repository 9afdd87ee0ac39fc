"""Seeded generators of stored event rows (dicts) for the analytics tests."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from avila.storage.schema import EVENT_COLUMN_NAMES, EVENT_SCHEMA

PROJECT = "proj"
OTHER_PROJECT = "other"
T0 = datetime(2024, 3, 1)

URLS = ["/", "/a", "/a/b", "/product", "/product/1", "/cart"]
PRODUCTS = ["p1", "p2", "p10"]
NAMES = ["signup_done", "video", "sign"]
BROWSERS = ["Chrome", "Firefox", "Safari", None]
COUNTRIES = ["BR", "DE", "US", "PT"]
TYPES = [
    "page_view",
    "page_view",
    "page_view",
    "click",
    "product_view",
    "add_to_cart",
    "purchase",
    "custom",
    "search",
    "login",
]

_counter = 0


def event(
    user_id: str,
    ts: datetime,
    event_type: str = "page_view",
    *,
    project_id: str = PROJECT,
    **fields: Any,
) -> dict[str, Any]:
    """One stored row; key fields default sensibly per type."""
    global _counter
    _counter += 1
    row: dict[str, Any] = {
        "project_id": project_id,
        "event_id": fields.pop("event_id", f"e{_counter}"),
        "user_id": user_id,
        "ts": ts,
        "received_at": fields.pop("received_at", ts),
        "event_type": event_type,
    }
    if event_type in ("page_view", "click"):
        row["url"] = fields.pop("url", "/")
    row.update(fields)
    return row


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    columns = {name: [r.get(name) for r in rows] for name in EVENT_COLUMN_NAMES}
    return pa.Table.from_pydict(columns, schema=EVENT_SCHEMA)


def random_events(
    seed: int,
    n_users: int = 60,
    *,
    span: timedelta = timedelta(days=2),
    grid: timedelta = timedelta(minutes=10),
    max_events: int = 14,
    with_sessions: bool = False,
) -> list[dict[str, Any]]:
    """Random users with events on a coarse time grid (so ties are common), some duplicates,
    some users without events and rows of another project that must never show up."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    steps = int(span / grid)
    for u in range(n_users):
        user = f"u{u:03d}"
        browser = rng.choice(BROWSERS)
        country = rng.choice(COUNTRIES)
        for _ in range(rng.randint(0, max_events)):
            ts = T0 + grid * rng.randint(0, steps) + timedelta(microseconds=rng.choice([0, 0, 1]))
            etype = rng.choice(TYPES)
            fields: dict[str, Any] = {"browser": browser, "country": country}
            if etype in ("page_view", "click"):
                fields["url"] = rng.choice(URLS)
            elif etype in ("product_view", "add_to_cart"):
                fields["product_id"] = rng.choice(PRODUCTS)
            elif etype == "purchase":
                fields["order_id"] = f"o{rng.randint(0, 40)}"
                fields["revenue"] = round(rng.uniform(1, 300), 2)
            elif etype == "custom":
                fields["event_name"] = rng.choice(NAMES)
            elif etype == "search":
                fields["search_query"] = rng.choice(["shoes", "shirt"])
            if with_sessions and rng.random() < 0.3:
                fields["session_id"] = f"s{rng.randint(0, 3)}"
            row = event(user, ts, etype, **fields)
            rows.append(row)
            if rng.random() < 0.05:  # exact duplicate delivery
                rows.append(dict(row))
        if rng.random() < 0.1:
            rows.append(event(user, T0, "page_view", project_id=OTHER_PROJECT, url="/"))
    return rows


def load_late_and_shuffled(
    store: Any,
    rows: list[dict[str, Any]],
    seed: int,
    *,
    late_before: datetime,
    batch_rows: int,
    first_position: int = 1000,
) -> None:
    """Write ``rows`` in batches of ``batch_rows`` in random order, alternating the two write
    paths (``append_events`` and the ingest-log loader's ``commit_log_batch``, which records a
    log position with the rows); the rows before ``late_before`` come last (late events)."""
    rng = random.Random(seed)
    late = [r for r in rows if r["ts"] < late_before]
    rest = [r for r in rows if r["ts"] >= late_before]
    rng.shuffle(rest)
    batches = [rest[i : i + batch_rows] for i in range(0, len(rest), batch_rows)] + [late]
    for i, batch in enumerate(batches):
        if i % 2:
            store.append_events(to_table(batch))
        else:
            store.commit_log_batch(first_position + i, events=to_table(batch))


def link_identity(store: Any, anonymous_id: str, user_id: str) -> None:
    """Store an identity link (``anonymous_id`` is ``user_id``) in :data:`PROJECT`, as an
    ``$identify`` would."""
    store.append_table(
        "identities",
        pa.table(
            {
                "project_id": [PROJECT],
                "anonymous_id": [anonymous_id],
                "user_id": [user_id],
                "ts": pa.array([T0], pa.timestamp("us")),
                "received_at": pa.array([T0], pa.timestamp("us")),
                "source": ["test"],
                "event_id": ["link-" + anonymous_id],
            }
        ),
    )


def store_before_migration(path: Path, version: int) -> duckdb.DuckDBPyConnection:
    """A DuckDB file as a store from before schema migration ``version`` was written: every
    migration below it applied and recorded (the caller adds old-style rows, then closes it)."""
    from avila.storage.duckdb.migrations import MIGRATIONS

    conn = duckdb.connect(str(path))
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description VARCHAR,"
        " applied_at TIMESTAMP)"
    )
    for number, description, statements in MIGRATIONS:
        if number >= version:
            continue
        for statement in statements:
            if callable(statement):  # a step that runs on the connection
                statement(conn)
            else:
                conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?, ?, now())", [number, description])
    return conn
