"""Experiment results on DuckDB and on embedded ClickHouse (chdb): the same events give the same
answer. The exposure condition reads a JSON property (``properties.experiment``): on ClickHouse
that expression once took more parameters than it was given, so every experiment with an
exposure event failed there."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import msgspec
import pytest

from avila.experiments.models import ExperimentSpec
from avila.experiments.repository import ExperimentRepository
from avila.experiments.results import results
from avila.ingest.validation import validate_events
from avila.storage.base import Store
from tests.analytics.backend_pair import both_stores, normal

from .experiment_data import END, PROJECT, START, generated_events

EXPOSED = {
    "key": "checkout-button",
    "variants": [{"name": "control", "weight": 1}, {"name": "green", "weight": 1}],
    "goal": {"type": "conversion", "condition_type": "purchase", "condition_value": ""},
    "exposure": {"condition_type": "custom", "condition_value": "$exposure"},
    "start_time": START.isoformat(),
    "end_time": END.isoformat(),
}
REVENUE = EXPOSED | {"key": "checkout-revenue", "goal": {"type": "revenue"}}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Store]]:
    events = generated_events(7, 600, "checkout-button", "checkout-revenue")
    raws = [msgspec.json.encode(e) for e in events]

    def fill(store: Store) -> None:
        for i in range(0, len(raws), 2000):
            rows, rejected = validate_events(
                raws[i : i + 2000], PROJECT, received_at=END + timedelta(days=30)
            )
            assert rejected == []
            store.append_events(rows.to_arrow())

    yield from both_stores(tmp_path_factory, fill)


@pytest.mark.parametrize("spec", [EXPOSED, REVENUE], ids=["conversion", "revenue"])
def test_the_same_events_give_the_same_results(stores: dict[str, Store], spec: Any) -> None:
    answers = {}
    for name, store in stores.items():
        experiment = ExperimentRepository(store).create(
            PROJECT, msgspec.convert(spec, ExperimentSpec), now=START.replace(tzinfo=None)
        )
        answers[name] = normal(
            results(store, experiment, now=(END + timedelta(days=1)).replace(tzinfo=None))
        )
    assert answers["duckdb"]["exposed_total"] > 20  # not a trivial answer
    assert answers["chdb"] == answers["duckdb"]
