"""Generated events for the experiment tests, and the pandas oracle of their results.

The oracle re-implements the documented rules (docs/experiments.md) on a DataFrame, including
its own bucketing from the documented hash, so it shares no code with avila.experiments.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from avila.security.keys import KeyStore
from avila.testing import ServerProcess

ADMIN_KEY = "experiments-admin-key"
PROJECT = "default"  # the project of the API_KEYS keys

START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 3, 15, tzinfo=UTC)
UNICODE_NAMES = ["zoë", "Ωmega", "用户", "🙂-smile", "naïve café", "ユーザー"]


# --- the server -----------------------------------------------------------------------------


@dataclass
class Keys:
    admin: str
    read: str
    ingest: str
    other_project: str


@contextmanager
def experiment_server(data_dir: Path) -> Iterator[tuple[ServerProcess, Keys]]:
    data_dir.mkdir(parents=True, exist_ok=True)
    store = KeyStore(data_dir / "keys.sqlite")
    read, _ = store.create(PROJECT, ["read"])
    ingest, _ = store.create(PROJECT, ["ingest"])
    other, _ = store.create("other-project", ["ingest", "read", "admin"])
    server = ServerProcess(
        data_dir,
        env={"API_KEYS": ADMIN_KEY, "RATE_LIMIT_PER_MINUTE": "0", "ENABLE_CORS": "true"},
    )
    server.start(timeout=120)  # generous: the machine running the suite may be busy
    try:
        yield server, Keys(ADMIN_KEY, read, ingest, other)
    finally:
        server.stop()


def client(server: ServerProcess, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"x-api-key": key}, timeout=60)


def ingest(c: httpx.Client, events: Sequence[dict[str, Any]], chunk: int = 2000) -> None:
    for i in range(0, len(events), chunk):
        response = c.post("/api/v1/events/batch", json={"events": list(events[i : i + chunk])})
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["accepted"] == len(events[i : i + chunk]), body


# --- events ---------------------------------------------------------------------------------


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def exposure(user: str, at: datetime, experiment: str, variant: str = "?") -> dict[str, Any]:
    """What ``avila.variant(key)`` records: a Custom ``$exposure`` event."""
    return {
        "event_id": str(uuid.uuid4()),
        "user_id": user,
        "timestamp": _stamp(at),
        "event_type": {
            "type": "Custom",
            "data": {
                "name": "$exposure",
                "properties": {"experiment": experiment, "variant": variant},
            },
        },
    }


def purchase(user: str, at: datetime, revenue: float) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "user_id": user,
        "timestamp": _stamp(at),
        "event_type": {
            "type": "Purchase",
            "data": {"order_id": str(uuid.uuid4()), "revenue": revenue, "currency": "EUR"},
        },
    }


def page_view(user: str, at: datetime, url: str = "/") -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "user_id": user,
        "timestamp": _stamp(at),
        "event_type": {"type": "PageView", "data": {"url": url}},
    }


def custom(user: str, at: datetime, name: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "user_id": user,
        "timestamp": _stamp(at),
        "event_type": {"type": "Custom", "data": {"name": name, "properties": {}}},
    }


def generated_events(seed: int, users: int, experiment: str, other: str) -> list[dict[str, Any]]:
    """Users with exposures to ``experiment`` (and some to ``other``), page views, purchases and
    sign-ups spread over a window wider than the experiment's, with the edge cases planted:

    - a purchase at exactly the first exposure's timestamp (a tie: counts);
    - exposures before START and after END (do not count); a purchase between an
      out-of-window exposure and the first in-window one (does not count);
    - purchases after END (do not count); exposures for ``other`` only (not exposed);
    - unicode user ids; revenue with cents and large values.
    """
    rng = np.random.default_rng(seed)
    span = (END - START).total_seconds()
    out: list[dict[str, Any]] = []
    for i in range(users):
        user = f"{UNICODE_NAMES[i % len(UNICODE_NAMES)]}-{i}" if i % 7 == 0 else f"user-{i}"
        kind = rng.random()
        first = START + timedelta(seconds=float(rng.uniform(0, span)))
        first = first.replace(microsecond=0)
        if kind < 0.05:  # exposed only to the other experiment, but buys
            out.append(exposure(user, first, other))
            out.append(purchase(user, first + timedelta(minutes=5), 30.0))
            continue
        if kind < 0.10:  # exposed only before the experiment started
            out.append(exposure(user, START - timedelta(days=1), experiment))
            out.append(purchase(user, START - timedelta(hours=20), 10.0))
            continue
        if kind < 0.13:  # exposed only after it ended, buys then
            out.append(exposure(user, END + timedelta(hours=1), experiment))
            out.append(purchase(user, END + timedelta(hours=2), 10.0))
            continue
        if kind < 0.16:  # only page views, never exposed (exposed for "any event" goals)
            out.append(page_view(user, first))
            continue
        if rng.random() < 0.1:  # an early exposure outside the window, a purchase in between
            out.append(exposure(user, START - timedelta(hours=2), experiment))
            out.append(purchase(user, first - timedelta(seconds=1), 12.5))
        out.append(page_view(user, first - timedelta(seconds=30)))
        out.append(exposure(user, first, experiment))
        for _ in range(int(rng.integers(0, 3))):  # repeat exposures later
            out.append(
                exposure(user, first + timedelta(hours=float(rng.uniform(0, 48))), experiment)
            )
        if rng.random() < 0.2:
            out.append(
                custom(user, first + timedelta(minutes=float(rng.uniform(0, 90))), "signed_up")
            )
        roll = rng.random()
        if roll < 0.05:  # a tie: the purchase carries the exposure's timestamp
            out.append(purchase(user, first, round(float(rng.gamma(2, 20)), 2)))
        elif roll < 0.30:
            for _ in range(int(rng.integers(1, 4))):
                at = first + timedelta(hours=float(rng.uniform(0.01, 72)))
                value = round(float(rng.gamma(2, 25)), 2) if rng.random() > 0.01 else 1e6
                out.append(purchase(user, at, value))
        elif roll < 0.33:  # buys before the exposure only
            out.append(purchase(user, first - timedelta(minutes=10), 40.0))
        if rng.random() < 0.05:  # buys after the end as well
            out.append(purchase(user, END + timedelta(hours=3), 99.0))
    return out


# --- the oracle -----------------------------------------------------------------------------


def oracle_variant(project: str, key: str, user: str, weights: Sequence[float]) -> int:
    """The documented assignment, written again: md5 of ``project US key US user`` (UTF-8),
    first 15 hex digits mod 10,000, against largest-remainder bucket bounds."""
    digest = hashlib.md5(f"{project}\x1f{key}\x1f{user}".encode()).hexdigest()
    value = int(digest[:15], 16) % 10_000
    shares = np.asarray(weights, dtype=float) / float(np.sum(weights)) * 10_000
    counts = np.floor(shares).astype(int)
    order = sorted(range(len(weights)), key=lambda i: (-(shares[i] - counts[i]), i))
    for i in order[: 10_000 - int(counts.sum())]:
        counts[i] += 1
    return int(np.searchsorted(np.cumsum(counts), value, side="right"))


def frame(events: Sequence[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for e in events:
        data = e["event_type"]["data"]
        rows.append(
            {
                "user_id": e["user_id"],
                "ts": pd.Timestamp(e["timestamp"]),
                "type": e["event_type"]["type"],
                "name": data.get("name"),
                "experiment": (data.get("properties") or {}).get("experiment"),
                "revenue": data.get("revenue"),
            }
        )
    return pd.DataFrame(rows)


def oracle_results(
    df: pd.DataFrame,
    key: str,
    weights: Sequence[float],
    *,
    exposure_mask: pd.Series,
    goal_mask: pd.Series,
    start: datetime = START,
    end: datetime = END,
) -> pd.DataFrame:
    """Per user: variant, converted, revenue (sum of goal-event revenue at/after first exposure)."""
    in_window = (df.ts >= pd.Timestamp(start)) & (df.ts < pd.Timestamp(end))
    exposures = df[in_window & exposure_mask]
    first = exposures.groupby("user_id").ts.min().rename("first_ts").reset_index()
    goals = df[in_window & goal_mask][["user_id", "ts", "revenue"]]
    joined = first.merge(goals, on="user_id", how="left")
    joined = joined[joined.ts >= joined.first_ts]
    per_goal = joined.groupby("user_id").agg(goals=("ts", "size"), revenue=("revenue", "sum"))
    users = first.set_index("user_id").join(per_goal)
    users["converted"] = users.goals.fillna(0) > 0
    users["revenue"] = users.revenue.fillna(0.0).astype(float)
    users["variant"] = [oracle_variant(PROJECT, key, u, weights) for u in users.index]
    return users[["variant", "converted", "revenue"]]
