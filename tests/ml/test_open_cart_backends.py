"""Open-cart values of the training run (``cart_value``: price × quantity of the items carted
after the user's last purchase, every item when they never bought) on every backend (DuckDB,
embedded ClickHouse) against plain Python, with carts dated before 1970 (the API accepts them,
see avila.ingest.validation) and at the epoch itself.

The "no purchase" side of the join once stood for 1970-01-01 (``coalesce(last_buy, 1970)``,
and ClickHouse fills a LEFT JOIN's missing time with 1970-01-01 anyway): the carts of a user who
never bought counted only when dated after the epoch."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from avila.ml.features import load_event_data, user_snapshot
from avila.ml.training import _open_cart_values
from avila.storage import Store
from avila.storage.schema import EVENT_COLUMN_NAMES, EVENT_SCHEMA
from avila.testing.backends import BACKENDS, open_backend

PROJECT = "carts"
EPOCH = datetime(1970, 1, 1)
END = EPOCH + timedelta(days=3)
Spec = tuple[str, str, datetime, dict[str, Any]]  # user, event type, time, other fields


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened = open_backend(request.param, tmp_path)
    yield opened
    opened.close()


def _row(i: int, user: str, kind: str, ts: datetime, **fields: Any) -> dict[str, Any]:
    return {"project_id": PROJECT, "event_id": f"e{i}", "user_id": user, "ts": ts,
            "received_at": ts, "event_type": kind, **fields}  # fmt: skip


def _events() -> list[dict[str, Any]]:
    def cart(user: str, ts: datetime, price: float | None, quantity: int | None = 1) -> Spec:
        return (user, "add_to_cart", ts, {"product_id": "p", "price": price, "quantity": quantity})

    def buy(user: str, ts: datetime) -> Spec:
        return (user, "purchase", ts, {"revenue": 5.0})

    specs: list[Spec] = [
        cart("never-bought-old", EPOCH - timedelta(days=2), 3.0, 2),  # 6.0
        cart("never-bought-epoch", EPOCH, 4.0),  # at the epoch itself: 4.0
        cart("never-bought-both", EPOCH - timedelta(hours=5), 1.5),
        cart("never-bought-both", EPOCH + timedelta(hours=5), 2.5, None),  # quantity 1: 4.0
        buy("bought-then-carted", EPOCH - timedelta(days=3)),
        cart("bought-then-carted", EPOCH - timedelta(days=3), 100.0),  # same time: not after
        cart("bought-then-carted", EPOCH - timedelta(days=1), 7.0),  # 7.0
        cart("carted-then-bought", EPOCH - timedelta(days=2), 9.0),
        buy("carted-then-bought", EPOCH - timedelta(days=1)),  # 0.0
        cart("no-price", EPOCH - timedelta(days=1), None),  # 0.0
        cart("after-end", END, 50.0),  # at the end: not read
    ]
    rng = random.Random(70)
    for u in range(30):
        for _ in range(rng.randint(1, 5)):
            ts = EPOCH + timedelta(hours=rng.randint(-24 * 10, 24 * 3 - 1))
            if rng.random() < 0.3:
                specs.append(buy(f"r{u}", ts))
            else:
                specs.append(cart(f"r{u}", ts, float(rng.randint(1, 9)), rng.randint(1, 3)))
    return [_row(i, user, kind, ts, **fields) for i, (user, kind, ts, fields) in enumerate(specs)]


def _load(store: Store, rows: list[dict[str, Any]]) -> None:
    columns = {name: [r.get(name) for r in rows] for name in EVENT_COLUMN_NAMES}
    store.append_events(pa.Table.from_pydict(columns, schema=EVENT_SCHEMA))


def _oracle(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per user: price × quantity (quantity 1 when absent, price 0) of the carts before END
    and after the user's last purchase (all of them for a user who never bought)."""
    last_buy: dict[str, datetime] = {}
    for r in rows:
        if r["event_type"] == "purchase":
            last_buy[r["user_id"]] = max(last_buy.get(r["user_id"], r["ts"]), r["ts"])
    values: dict[str, float] = {}
    for r in rows:
        user = r["user_id"]
        values.setdefault(user, 0.0)
        if r["event_type"] != "add_to_cart" or r["ts"] >= END:
            continue
        if user in last_buy and r["ts"] <= last_buy[user]:
            continue
        quantity = 1 if r.get("quantity") is None else r["quantity"]
        values[user] += (r.get("price") or 0.0) * quantity
    return values


def test_open_cart_values_before_1970_equal_plain_python(store: Store) -> None:
    rows = _events()
    _load(store, rows)
    data = load_event_data(store, PROJECT, END)
    users = sorted(set(data.daily["user_id"]))
    customers = pd.DataFrame({"open_cart": 1.0}, index=users)
    got = _open_cart_values(store, PROJECT, data, customers).to_dict()
    expected = {u: v for u, v in _oracle(rows).items() if u in set(users)}
    assert expected["never-bought-old"] == 6.0 and expected["never-bought-epoch"] == 4.0
    assert expected["never-bought-both"] == 4.0 and expected["bought-then-carted"] == 7.0
    assert got == pytest.approx(expected, abs=1e-9)


def test_a_flagged_open_cart_has_a_value(store: Store) -> None:
    """Training's own flag (features: a cart after the last purchase, or no purchase at all)
    and the value agree for a user who only carted before 1970."""
    rows = [
        _row(0, "old", "add_to_cart", EPOCH - timedelta(days=1), product_id="p", price=2.0),
        _row(1, "new", "add_to_cart", EPOCH + timedelta(days=1), product_id="p", price=3.0),
    ]
    _load(store, rows)
    data = load_event_data(store, PROJECT, END)
    customers = user_snapshot(data.daily, data.end, horizon_days=14)
    assert customers["open_cart"].to_dict() == {"new": 1.0, "old": 1.0}
    got = _open_cart_values(store, PROJECT, data, customers).to_dict()
    assert got == {"new": 3.0, "old": 2.0}
