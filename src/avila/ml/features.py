"""Model inputs read from the store: daily user activity, point-in-time snapshots, sessions.

The store is read with a few aggregate queries (:func:`load_event_data`), so training touches
per-user-per-day rows rather than raw events. Snapshots follow the leakage-free protocol of
REFERENCES (supervised churn/conversion): features use only days before ``t0``; labels look at
``[t0, t0 + H)``. All times are naive UTC, as stored; ``t0`` is a day boundary.

Example (a hand-built daily table):

>>> import pandas as pd
>>> daily = pd.DataFrame({
...     "user_id": ["a", "a", "b"],
...     "day": pd.to_datetime(["2024-01-01", "2024-01-09", "2024-01-02"]),
...     "events": [3, 2, 4], "sessions": [1, 1, 2], "page_view": [2, 1, 3],
...     "product_view": [1, 1, 1], "add_to_cart": [0, 0, 0], "checkout": [0, 0, 0],
...     "purchase": [0, 1, 0], "search": [0, 0, 0], "revenue": [0.0, 30.0, 0.0],
...     "first_ts": pd.to_datetime(["2024-01-01 10:00", "2024-01-09 12:00", "2024-01-02 08:00"]),
...     "last_ts": pd.to_datetime(["2024-01-01 11:00", "2024-01-09 12:30", "2024-01-02 09:00"]),
... })
>>> snap = user_snapshot(daily, pd.Timestamp("2024-01-05"), horizon_days=7)
>>> snap.loc[["a", "b"], ["events_total", "churned", "converted"]].to_dict("index")
{'a': {'events_total': 3, 'churned': 0, 'converted': 1}, 'b': {'events_total': 4, 'churned': 1, 'converted': 0}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from avila.analytics.common import fragments
from avila.storage.base import Store

if TYPE_CHECKING:
    import pandas as pd  # loaded by the first fit or read: the app starts without it

__all__ = [
    "COUNTED_TYPES",
    "SESSION_FEATURES",
    "SNAPSHOT_FEATURES",
    "EventData",
    "load_event_data",
    "load_session_prefixes",
    "user_snapshot",
]

#: Event types counted per user and day (snake_case, as stored).
COUNTED_TYPES = ("page_view", "product_view", "add_to_cart", "checkout", "purchase", "search")

#: Per-user snapshot features, in model column order.
SNAPSHOT_FEATURES = [
    "recency_days",
    "tenure_days",
    "events_total",
    "events_7d",
    "events_14d",
    "events_28d",
    "active_days_total",
    "active_days_7d",
    "active_days_14d",
    "active_days_28d",
    "sessions_total",
    "sessions_7d",
    "sessions_28d",
    *(f"{t}_total" for t in COUNTED_TYPES),
    "add_to_cart_14d",
    "purchase_28d",
    "revenue_total",
    "revenue_28d",
    "visit_rate",
    "recency_vs_gap",
    "trend_7_28",
    "days_since_purchase",
    "open_cart",
    "open_checkout",
]

#: Features of a session after its first k events (live conversion model).
SESSION_FEATURES = [
    "events_so_far",
    "page_views",
    "product_views",
    "carts",
    "removes",
    "checkouts",
    "searches",
    "duration_s",
]

# Templates: {day}, {items}, {duration_s} and {sample_hash} are the backend's SQL fragments
# (see :func:`_dialect`).
_DAILY_SQL = (
    """
SELECT user_id, {day} AS day, count(*) AS events,
       greatest(count(DISTINCT session_id), 1) AS sessions,
       """
    + ", ".join(f"count(*) FILTER (WHERE event_type = '{t}') AS {t}" for t in COUNTED_TYPES)
    + """,
       coalesce(sum(revenue) FILTER (WHERE event_type = 'purchase'), 0.0) AS revenue,
       min(ts) AS first_ts, max(ts) AS last_ts
FROM events WHERE project_id = ? AND ts < ?
GROUP BY ALL
"""
)

# e.ts: in ClickHouse an alias (min(ts) AS ts) would shadow the column in WHERE.
_INTERACTIONS_SQL = """
SELECT user_id, product_id AS item_id,
       CASE event_type WHEN 'product_view' THEN 'view' ELSE 'cart' END AS event, min(e.ts) AS ts
FROM events AS e
WHERE project_id = ? AND e.ts < ? AND event_type IN ('product_view', 'add_to_cart')
  AND product_id IS NOT NULL
GROUP BY ALL
UNION ALL
SELECT user_id, item_id, 'purchase' AS event, min(ts) AS ts FROM (
    SELECT user_id, ts, {items} AS item_id
    FROM events WHERE project_id = ? AND ts < ? AND event_type = 'purchase'
) WHERE item_id IS NOT NULL
GROUP BY ALL
"""

_PURCHASES_SQL = """
SELECT user_id, ts, coalesce(revenue, 0.0) AS value FROM events
WHERE project_id = ? AND ts < ? AND event_type = 'purchase'
"""

_SESSION_SQL = """
WITH e AS (
    SELECT user_id, session_id, ts, event_id, event_type,
           row_number() OVER w AS events_so_far,
           count(*) FILTER (WHERE event_type = 'page_view') OVER w AS page_views,
           count(*) FILTER (WHERE event_type = 'product_view') OVER w AS product_views,
           count(*) FILTER (WHERE event_type = 'add_to_cart') OVER w AS carts,
           count(*) FILTER (WHERE event_type = 'remove_from_cart') OVER w AS removes,
           count(*) FILTER (WHERE event_type = 'checkout') OVER w AS checkouts,
           count(*) FILTER (WHERE event_type = 'search') OVER w AS searches,
           count(*) FILTER (WHERE event_type = 'purchase') OVER w AS purchases_so_far,
           {duration_s} AS duration_s,
           min(ts) OVER (PARTITION BY user_id, session_id) AS session_start,
           coalesce(max(CASE WHEN event_type = 'purchase' THEN 1 ELSE 0 END) OVER (
               PARTITION BY user_id, session_id ORDER BY ts, event_id
               ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING), 0) AS purchased
    FROM events
    WHERE project_id = ? AND ts < ? AND session_id IS NOT NULL
    WINDOW w AS (PARTITION BY user_id, session_id ORDER BY ts, event_id
                 ROWS UNBOUNDED PRECEDING)
)
SELECT session_start, purchased, {features} FROM e
WHERE purchases_so_far = 0 AND {sample_hash} % ? = 0
""".replace("{features}", ", ".join(SESSION_FEATURES))


@dataclass
class EventData:
    """What training reads from the store for one project, up to ``end`` (exclusive)."""

    project_id: str
    start: pd.Timestamp | None
    end: pd.Timestamp
    daily: pd.DataFrame
    interactions: pd.DataFrame
    purchases: pd.DataFrame

    @property
    def span_days(self) -> float:
        """Days from the first event to ``end`` (0 for an empty project)."""
        import pandas as pd

        if self.start is None:
            return 0.0
        return float((self.end - self.start) / pd.Timedelta(days=1))

    @property
    def bulk_start(self) -> pd.Timestamp | None:
        """Where the bulk of the activity starts: the first percentile of the user-days.

        Training lays its snapshot grid over this, not over the first event, so a few stray
        old events (the README's example event from 2025, one backfilled user) do not stretch
        a month of data into a year of nearly empty weekly snapshots."""
        import pandas as pd

        if self.start is None or not len(self.daily):
            return self.start
        return max(self.start, pd.Timestamp(self.daily["day"].quantile(0.01)))

    @property
    def bulk_span_days(self) -> float:
        """Days from :attr:`bulk_start` to ``end`` (0 for an empty project)."""
        import pandas as pd

        start = self.bulk_start
        if start is None:
            return 0.0
        return float((self.end - start) / pd.Timedelta(days=1))


def _dialect(store: Store, template: str) -> str:
    frag = fragments(store)
    epoch = frag["epoch_us"].format("ts")
    return template.format(
        day=frag["day_start"].format("ts"),
        items=frag["purchase_item_ids"].format("data"),
        duration_s=f"(({epoch}) - min({epoch}) OVER w) / 1e6",
        sample_hash=frag["hash"].format("event_id"),
    )


def _frame(store: Store, sql: str, params: list[Any]) -> pd.DataFrame:
    return store.query_arrow(_dialect(store, sql), params).to_pandas()


def load_event_data(store: Store, project_id: str, end: Any = None) -> EventData:
    """Daily activity, product interactions and purchases of ``project_id`` before ``end``.

    ``end`` defaults to just after the newest stored event, so the whole history is read.
    """
    import pandas as pd

    if end is None:
        row = store.query("SELECT min(ts), max(ts) FROM events WHERE project_id = ?", [project_id])[
            0
        ]
        end = (
            pd.Timestamp(row[1]) + pd.Timedelta(microseconds=1)
            if row[1] is not None
            else pd.Timestamp.now("UTC").tz_localize(None)
        )
    end = pd.Timestamp(end)
    end = end.tz_convert("UTC").tz_localize(None) if end.tzinfo is not None else end
    end_py = end.to_pydatetime()
    daily = _frame(store, _DAILY_SQL, [project_id, end_py])
    interactions = _frame(store, _INTERACTIONS_SQL, [project_id, end_py, project_id, end_py])
    purchases = _frame(store, _PURCHASES_SQL, [project_id, end_py])
    for frame, cols in ((daily, ("day", "first_ts", "last_ts")), (interactions, ("ts",))):
        for col in cols:
            frame[col] = pd.to_datetime(frame[col]).astype("datetime64[us]")
    purchases["ts"] = pd.to_datetime(purchases["ts"]).astype("datetime64[us]")
    start = pd.Timestamp(daily["first_ts"].min()) if len(daily) else None
    return EventData(project_id, start, end, daily, interactions, purchases)


def load_session_prefixes(
    store: Store, project_id: str, end: Any, *, sample_every: int = 1
) -> pd.DataFrame:
    """One row per session prefix (after each event, until the first purchase).

    Columns: ``session_start``, ``purchased`` (1 when a purchase follows later in the same
    session) and :data:`SESSION_FEATURES`. ``sample_every`` keeps about one prefix in that many
    (a deterministic hash of the event id), to bound training time on large stores.
    """
    import pandas as pd

    end = pd.Timestamp(end).to_pydatetime()
    frame = _frame(store, _SESSION_SQL, [project_id, end, max(1, int(sample_every))])
    frame["session_start"] = pd.to_datetime(frame["session_start"]).astype("datetime64[us]")
    return frame


def _window_sum(past: pd.DataFrame, age: pd.Series, days: int, column: str) -> pd.Series:
    return past.loc[age < days].groupby("user_id")[column].sum()


def user_snapshot(
    daily: pd.DataFrame,
    t0: Any,
    *,
    horizon_days: float,
    active_within_days: float | None = None,
    conversion_horizon_days: float | None = None,
) -> pd.DataFrame:
    """Features of every user seen before ``t0`` (:data:`SNAPSHOT_FEATURES`) and two labels.

    ``churned`` = 1 when the user has no activity in ``[t0, t0 + horizon_days)``;
    ``converted`` = 1 when they purchase in ``[t0, t0 + conversion_horizon_days)`` (defaults to
    ``horizon_days``). ``recency_days`` and ``tenure_days`` count from the last / first event
    to ``t0``. ``active_within_days`` keeps users whose last event is at most that old.
    """
    import pandas as pd

    t0 = pd.Timestamp(t0)
    past = daily[daily["day"] < t0]
    age = (t0 - past["day"]) / pd.Timedelta(days=1)  # 1 for the day before t0
    g = past.groupby("user_id")
    out = pd.DataFrame(
        {
            "recency_days": (t0 - g["last_ts"].max()) / pd.Timedelta(days=1),
            "tenure_days": (t0 - g["first_ts"].min()) / pd.Timedelta(days=1),
            "events_total": g["events"].sum(),
            "active_days_total": g.size(),
            "sessions_total": g["sessions"].sum(),
            "revenue_total": g["revenue"].sum(),
        }
    )
    for t in COUNTED_TYPES:
        out[f"{t}_total"] = g[t].sum()
    for days in (7, 14, 28):
        out[f"events_{days}d"] = _window_sum(past, age, days, "events")
        out[f"active_days_{days}d"] = past.loc[age <= days].groupby("user_id").size()
    out["sessions_7d"] = _window_sum(past, age, 7, "sessions")
    out["sessions_28d"] = _window_sum(past, age, 28, "sessions")
    out["add_to_cart_14d"] = _window_sum(past, age, 14, "add_to_cart")
    out["purchase_28d"] = _window_sum(past, age, 28, "purchase")
    out["revenue_28d"] = _window_sum(past, age, 28, "revenue")
    out = out.fillna(0.0)
    # Rates and ratios: the planted slowdown shows as a low trend and a long recency relative
    # to the user's own usual gap, which recency alone cannot see.
    out["visit_rate"] = out["active_days_total"] / np.maximum(out["tenure_days"], 1.0)
    out["recency_vs_gap"] = out["recency_days"] * out["visit_rate"]
    out["trend_7_28"] = (out["events_7d"] + 1) / (out["events_28d"] / 4 + 1)
    bought = past[past["purchase"] > 0].groupby("user_id")["last_ts"].max()
    carted = past[past["add_to_cart"] > 0].groupby("user_id")["last_ts"].max()
    out["days_since_purchase"] = ((t0 - bought) / pd.Timedelta(days=1)).reindex(out.index)
    last_cart, last_buy = carted.reindex(out.index), bought.reindex(out.index)
    open_cart = last_cart.notna() & (last_buy.isna() | (last_cart > last_buy))
    out["open_cart"] = (open_cart & out["add_to_cart_14d"].gt(0)).astype(float)
    # A checkout without a later purchase (a failed or abandoned payment), in the last 14 days.
    checked = past[(past["checkout"] > 0) & (age <= 14)].groupby("user_id")["last_ts"].max()
    last_checkout = checked.reindex(out.index)
    out["open_checkout"] = (
        last_checkout.notna() & (last_buy.isna() | (last_checkout > last_buy))
    ).astype(float)
    if active_within_days is not None:
        out = out[out["recency_days"] <= active_within_days]
    future = daily[(daily["day"] >= t0) & (daily["day"] < t0 + pd.Timedelta(days=horizon_days))]
    conv_days = horizon_days if conversion_horizon_days is None else conversion_horizon_days
    conv_future = daily[
        (daily["day"] >= t0)
        & (daily["day"] < t0 + pd.Timedelta(days=conv_days))
        & (daily["purchase"] > 0)
    ]
    out["churned"] = (~out.index.isin(future["user_id"].unique())).astype(int)
    out["converted"] = out.index.isin(conv_future["user_id"].unique()).astype(int)
    out["snapshot"] = t0
    for col in ("events_total", "active_days_total", "sessions_total"):
        out[col] = out[col].astype(int)
    out.index.name = "user_id"
    return out[[*SNAPSHOT_FEATURES, "churned", "converted", "snapshot"]]
