"""Trained models in Redis (``AVILA_REDIS_URL``): the file registry is the oracle, and a run
saved by one replica is installed by another one's prediction service."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avila.ml.predictions import PredictionService
from avila.ml.registry import ModelRegistry
from avila.shared import sync_client
from avila.shared.models import RedisModelRegistry
from avila.storage.duckdb.store import DuckDBStore
from tests.scaleout.conftest import RedisServer


@dataclass
class Artifact:
    """Stands for TrainedModels: the registries set ``version`` and pickle the rest."""

    users: dict[str, Any] = field(default_factory=dict)
    version: int = 0


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
