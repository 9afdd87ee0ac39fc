"""The conversion-rate alert metric on every backend (DuckDB, embedded ClickHouse) against the
plain-Python oracle of tests/alerts/oracles.py, with events dated before 1970 (the API accepts
them, see avila.ingest.validation) and at the epoch itself.

ClickHouse fills the missing side of a LEFT JOIN with the type's default (1970-01-01 for a
time, see avila.storage.clickhouse.analytics_sql): a user with a first step but no second step
once compared "no second step" as 1970-01-01 and counted as converted whenever the first step
was at or before the epoch."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from avila.alerts.rules import ConversionRateMetric, evaluate
from avila.schemas.analytics import EventCondition
from avila.storage import Store
from avila.storage.schema import EVENT_COLUMN_NAMES, EVENT_SCHEMA
from avila.testing.backends import BACKENDS, open_backend
from tests.alerts import oracles
from tests.alerts.oracles import Ev

PROJECT = "pre-epoch"
EPOCH = datetime(1970, 1, 1)
FIRST, SECOND = ("page_view", ""), ("purchase", "")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened = open_backend(request.param, tmp_path)
    yield opened
    opened.close()


def _events() -> list[Ev]:
    events = [
        Ev("viewed-only", "page_view", "/", EPOCH - timedelta(days=3)),
        Ev("bought-after", "page_view", "/", EPOCH - timedelta(days=3)),
        Ev("bought-after", "purchase", "", EPOCH - timedelta(days=2)),
        Ev("bought-before", "purchase", "", EPOCH - timedelta(days=4)),
        Ev("bought-before", "page_view", "/", EPOCH - timedelta(days=3)),
        Ev("at-epoch-only", "page_view", "/", EPOCH),  # no purchase: 1970-01-01 >= t0 held
        Ev("across-epoch", "page_view", "/", EPOCH - timedelta(microseconds=1)),
        Ev("across-epoch", "purchase", "", EPOCH),
        Ev("after-epoch-only", "page_view", "/", EPOCH + timedelta(days=2)),
    ]
    rng = random.Random(1969)
    for u in range(40):  # users on both sides of the epoch, ties included
        for _ in range(rng.randint(1, 4)):
            kind = rng.choice(["page_view", "page_view", "purchase"])
            ts = EPOCH + timedelta(hours=rng.randint(-24 * 20, 24 * 5))
            events.append(Ev(f"r{u}", kind, "/" if kind == "page_view" else "", ts))
    return events


def _load(store: Store, events: list[Ev]) -> None:
    columns: dict[str, list[object]] = {name: [] for name in EVENT_COLUMN_NAMES}
    for i, ev in enumerate(events):
        row = {
            "project_id": PROJECT,
            "event_id": f"e{i}",
            "user_id": ev.user,
            "ts": ev.ts,
            "received_at": ev.ts,
            "event_type": ev.type,
            "url": ev.key if ev.type == "page_view" else None,
        }
        for name in EVENT_COLUMN_NAMES:
            columns[name].append(row.get(name))
    store.append_events(pa.Table.from_pydict(columns, schema=EVENT_SCHEMA))


@pytest.mark.parametrize(
    ("at", "window"),
    [
        (EPOCH + timedelta(days=5), 30 * 86_400),  # across the epoch
        (EPOCH - timedelta(hours=1), 10 * 86_400),  # wholly before it
        (EPOCH, 4 * 86_400),  # ending at the epoch
        (EPOCH + timedelta(days=6), 5 * 86_400),  # wholly after it (unchanged)
    ],
    ids=["across", "before", "ending-at", "after"],
)
def test_conversion_rate_before_1970_equals_the_oracle(
    store: Store, at: datetime, window: int
) -> None:
    events = _events()
    _load(store, events)
    metric = ConversionRateMetric(
        [EventCondition(*FIRST), EventCondition(*SECOND)]  # page_view, then purchase
    )
    expected = oracles.conversion_rate(events, at, window, FIRST, SECOND)
    assert expected is not None and 0 < expected < 1  # a non-trivial answer
    assert evaluate(store, PROJECT, metric, window, at) == pytest.approx(expected, abs=1e-12)


def test_a_user_without_the_second_step_never_converts(store: Store) -> None:
    """The smallest case: one user viewed before 1970 (or at the epoch) and never bought."""
    events = [
        Ev("old", "page_view", "/", datetime(1969, 7, 20, 20, 17)),
        Ev("epoch", "page_view", "/", EPOCH),
        Ev("buyer", "page_view", "/", datetime(1969, 7, 20)),
        Ev("buyer", "purchase", "", datetime(1969, 7, 21)),
    ]
    _load(store, events)
    metric = ConversionRateMetric([EventCondition(*FIRST), EventCondition(*SECOND)])
    at, window = EPOCH + timedelta(days=1), 200 * 86_400
    assert oracles.conversion_rate(events, at, window, FIRST, SECOND) == pytest.approx(1 / 3)
    assert evaluate(store, PROJECT, metric, window, at) == pytest.approx(1 / 3)
