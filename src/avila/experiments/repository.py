"""Experiment definitions, stored in the ``experiments`` table (DuckDB migration 5).

A definition is immutable once created (changing weights or the goal mid-test would
re-randomise users and mix two experiments in one result), so it is cached in process after
the first read: the assignment endpoint, called by every page that uses ``avila.variant``,
costs one dictionary lookup. Immutability also keeps the cache correct with several API
replicas. Create validates everything a 422 can say before anything is stored.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import msgspec

from avila.analytics.common import condition_expr, invalid, naive_utc, utcnow
from avila.errors import AvilaError, NotFound
from avila.experiments.assignment import bucket_bounds
from avila.experiments.models import ConversionGoal, Experiment, ExperimentSpec
from avila.schemas.analytics import EventCondition
from avila.storage.base import Store


class ExperimentNotFound(NotFound):
    code = "experiment_not_found"


class ExperimentExists(AvilaError):
    status = 409
    code = "experiment_exists"


def validate(store: Store, spec: ExperimentSpec) -> None:
    """The checks msgspec cannot express; each raises ValidationFailed with the field path."""
    seen: dict[str, int] = {}
    for i, variant in enumerate(spec.variants):
        if variant.name in seen:
            raise invalid(
                "duplicate_variant",
                f"variants[{i}].name",
                f"variant name {variant.name!r} is also variant {seen[variant.name]}'s",
            )
        seen[variant.name] = i
    bucket_bounds([v.weight for v in spec.variants])
    if isinstance(spec.goal, ConversionGoal):
        goal = spec.goal
        condition_expr(
            store, EventCondition(goal.condition_type, goal.condition_value, goal.match), "goal"
        )
    if spec.exposure is not None:
        exp = spec.exposure
        condition_expr(
            store, EventCondition(exp.condition_type, exp.condition_value, exp.match), "exposure"
        )
    if spec.start_time and spec.end_time and naive_utc(spec.end_time) <= naive_utc(spec.start_time):
        raise invalid("invalid_time_range", "end_time", "end_time must be after start_time")


class ExperimentRepository:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[tuple[str, str], Experiment] = {}
        self._lock = threading.Lock()

    def create(
        self, project_id: str, spec: ExperimentSpec, *, now: datetime | None = None
    ) -> Experiment:
        """Store a new experiment; ExperimentExists (409) if the key is taken in the project.
        ``start_time`` defaults to now (creation)."""
        validate(self.store, spec)
        created = now or utcnow()
        start = naive_utc(spec.start_time) if spec.start_time else created
        end = naive_utc(spec.end_time) if spec.end_time else None
        if end is not None and end <= start:
            raise invalid("invalid_time_range", "end_time", "end_time must be after start_time")
        inserted = self.store.insert_new(
            "experiments",
            ("project_id", "key"),
            {
                "project_id": project_id,
                "key": spec.key,
                "definition": msgspec.json.encode(spec).decode(),
                "start_time": start,
                "end_time": end,
                "created_at": created,
            },
        )
        if not inserted:
            raise ExperimentExists(
                f"experiment {spec.key!r} already exists; definitions cannot change, "
                "create a new key",
                details=[{"path": "key", "message": "already exists"}],
            )
        return Experiment(project_id, spec, start, end, created)

    def get(self, project_id: str, key: str) -> Experiment:
        with self._lock:
            cached = self._cache.get((project_id, key))
        if cached is not None:
            return cached
        rows = self.store.query(
            "SELECT definition, start_time, end_time, created_at FROM experiments"
            " WHERE project_id = ? AND key = ?",
            [project_id, key],
        )
        if not rows:
            raise ExperimentNotFound(
                f"no experiment {key!r} in this project",
                details=[{"path": "key", "message": "unknown experiment"}],
            )
        experiment = self._row(project_id, rows[0])
        with self._lock:
            self._cache[(project_id, key)] = experiment
        return experiment

    def list(self, project_id: str) -> list[Experiment]:
        rows = self.store.query(
            "SELECT definition, start_time, end_time, created_at FROM experiments"
            " WHERE project_id = ? ORDER BY created_at, key",
            [project_id],
        )
        return [self._row(project_id, row) for row in rows]

    @staticmethod
    def _row(project_id: str, row: tuple[Any, ...]) -> Experiment:
        spec = msgspec.json.decode(row[0], type=ExperimentSpec)
        return Experiment(project_id, spec, row[1], row[2], row[3])
