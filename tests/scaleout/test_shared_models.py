"""Trained models in Redis (``AVILA_REDIS_URL``): the file registry is the oracle, and a run
saved by one replica is installed by another one's prediction service."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from avila.errors import NotFound
from avila.ml.predictions import PredictionService
from avila.ml.registry import ModelRegistry
from avila.shared import sync_client
from avila.shared.models import RedisModelRegistry
from avila.storage.duckdb.store import DuckDBStore
from avila.storage.schema import EVENT_SCHEMA
from tests.scaleout.conftest import RedisServer


@dataclass
class Artifact:
    """Stands for TrainedModels: the registries set ``version`` and pickle the rest."""

    users: dict[str, Any] = field(default_factory=dict)
    version: int = 0
    as_of: str = "2026-11-30T00:00:00+00:00"


def _runs(registry: Any, project: str) -> list[tuple[int, str]]:
    return [(r["version"], r["note"]) for r in registry.runs(project)]


def test_redis_registry_answers_like_the_file_registry(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    files = ModelRegistry(tmp_path / "models", keep_artifacts=2)
    shared = RedisModelRegistry(sync_client(redis_server.url), keep_artifacts=2)
    projects = ["p-" + uuid.uuid4().hex[:6], "shop/ünï " + uuid.uuid4().hex[:4]]
    assert shared.load_latest(projects[0]) is None and shared.runs(projects[0]) == []
    assert shared.latest_version(projects[0]) is None
    for step in range(4):
        for project in projects:
            artifact = Artifact({f"u{step}": {"churn": step / 10}})
            a = files.save(project, artifact, {"note": f"run {step}"})
            b = shared.save(project, Artifact(dict(artifact.users)), {"note": f"run {step}"})
            assert a["version"] == b["version"] == step + 1
    for project in projects:
        assert _runs(shared, project) == _runs(files, project)
        assert shared.latest_version(project) == files.latest_version(project) == 4
        (meta_a, art_a), (meta_b, art_b) = files.load_latest(project), shared.load_latest(project)
        assert meta_a["version"] == meta_b["version"] and art_a == art_b
        assert art_b.version == 4
    assert set(projects) <= set(shared.projects())
    # keep_artifacts=2: runs 1 and 2 are listed, their artifacts gone, in both registries
    client = sync_client(redis_server.url)
    prefix = "avila:models:" + projects[0]
    assert [client.exists(f"{prefix}:artifact:{v}") for v in (1, 2, 3, 4)] == [0, 0, 1, 1]


def test_a_run_saved_by_one_replica_is_installed_by_another(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    project = "m-" + uuid.uuid4().hex[:6]
    store = DuckDBStore(str(tmp_path / "replica-b.duckdb"))
    try:
        # replicas share the store; a run's users have events there (a new run is filtered)
        store.append_events(_events(project, ["u1"]))
        trainer = RedisModelRegistry(sync_client(redis_server.url))
        replica_b = PredictionService(store, RedisModelRegistry(sync_client(redis_server.url)))
        replica_b.load_all()
        assert replica_b.current(project) is None
        trainer.save(project, Artifact({"u1": {"churn": 0.25}}), {"note": "first"})
        assert replica_b.refresh() == 1
        meta, models = replica_b.current(project)
        assert meta["version"] == 1 and models.users == {"u1": {"churn": 0.25}}
        assert replica_b.refresh() == 0  # nothing new: nothing reloaded
        trainer.save(project, Artifact({"u1": {"churn": 0.5}}), {"note": "second"})
        assert replica_b.refresh() == 1
        assert replica_b.current(project)[0]["version"] == 2
    finally:
        store.close()


def _events(project: str, users: list[str]) -> pa.Table:
    """One page view per user, every other column null."""
    at = datetime(2026, 11, 29, 12, 0)
    given = {
        "project_id": [project] * len(users),
        "event_id": [f"e-{u}" for u in users],
        "user_id": users,
        "ts": [at] * len(users),
        "received_at": [at] * len(users),
        "event_type": ["page_view"] * len(users),
    }
    return pa.table(
        [pa.array(given.get(f.name, [None] * len(users)), f.type) for f in EVENT_SCHEMA],
        schema=EVENT_SCHEMA,
    )


def test_a_user_erased_on_one_replica_is_forgotten_by_the_others(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Replica A erases u1 (GDPR); replica B, which loaded the run before, stops serving u1's
    scores at its next refresh, and so does a run trained before the erasure and saved after
    it. The replicas share the store (one DuckDB file here, ClickHouse in production)."""
    project = "gdpr-" + uuid.uuid4().hex[:6]
    store = DuckDBStore(str(tmp_path / "shared.duckdb"))
    try:
        store.append_events(_events(project, ["u1", "u2", "ünï/3"]))
        trainer = RedisModelRegistry(sync_client(redis_server.url))
        scores = {"u1": {"churn": 0.1}, "u2": {"churn": 0.2}, "ünï/3": {"churn": 0.3}}
        trainer.save(project, Artifact(dict(scores)), {"note": "before"})
        replica_a = PredictionService(store, RedisModelRegistry(sync_client(redis_server.url)))
        replica_b = PredictionService(store, RedisModelRegistry(sync_client(redis_server.url)))
        replica_a.load_all()
        replica_b.load_all()
        assert replica_b.predict(project, "u1")["churn"] == 0.1

        store.erase_users(project, ["u1", "ünï/3"], links=True)  # what DELETE /users/{id} does
        replica_a.forget(project, "u1")
        replica_a.forget(project, "ünï/3")
        for user in ("u1", "ünï/3"):
            with pytest.raises(NotFound):
                replica_a.predict(project, user)
        assert replica_b.refresh() == 0  # no new run: the erasures alone
        for user in ("u1", "ünï/3"):
            with pytest.raises(NotFound):
                replica_b.predict(project, user)
        assert replica_b.predict(project, "u2")["churn"] == 0.2

        # a run that read the events before the erasure, saved after it
        trainer.save(project, Artifact(dict(scores)), {"note": "trained before the erasure"})
        for replica in (replica_a, replica_b):
            assert replica.refresh() == 1
            assert set(replica.current(project)[1].users) == {"u2"}
            with pytest.raises(NotFound):
                replica.predict(project, "u1")
        # a replica started later filters at load, and reads no old announcement again
        replica_c = PredictionService(store, RedisModelRegistry(sync_client(redis_server.url)))
        replica_c.load_all()
        assert set(replica_c.current(project)[1].users) == {"u2"}
        assert replica_c.refresh() == 0
    finally:
        store.close()


def test_an_erasure_redis_cannot_announce_still_forgets_here(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    project = "gdpr-down"
    store = DuckDBStore(str(tmp_path / "shared.duckdb"))
    try:
        store.append_events(_events(project, ["u1"]))
        nobody = RedisModelRegistry(sync_client("redis://127.0.0.1:1"))  # nothing listens
        replica = PredictionService(store, nobody)
        replica.install(project, {"version": 1}, Artifact({"u1": {"churn": 0.1}}))
        store.erase_users(project, ["u1"], links=True)
        replica.forget(project, "u1")  # the erase succeeded; the announcement is only logged
        with pytest.raises(NotFound):
            replica.predict(project, "u1")
        assert "erasure not announced to other replicas" in caplog.text
    finally:
        store.close()
