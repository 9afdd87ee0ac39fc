"""Model registry: every training run of a project, persisted under ``<data dir>/models/``.

Layout, one directory per project (its id percent-encoded)::

    models/<project>/registry.json   # every run: version, trained_at, window, metrics
    models/<project>/run-000003.pkl  # the fitted models and precomputed scores of run 3

Versions are consecutive integers per project. Writes are atomic (temporary file, fsync,
rename), so a crash during training leaves the previous run in place. Only the newest
``keep_artifacts`` runs keep their pickled artifact; their metadata stays listed.

The artifacts are pickles written by this process into the data directory; they are only
ever read from there (never accepted from clients).

Example:

>>> import tempfile
>>> registry = ModelRegistry(Path(tempfile.mkdtemp()))
>>> meta = registry.save("default", {"weights": [1, 2]}, {"models": {}})
>>> meta["version"], registry.load_latest("default")[1]
(1, {'weights': [1, 2]})
"""

from __future__ import annotations

import json
import os
import pickle
import threading
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote

__all__ = ["ModelRegistry", "RunRegistry"]


class RunRegistry(Protocol):
    """Where runs are kept: :class:`ModelRegistry` (files, one replica) or
    :class:`avila.shared.models.RedisModelRegistry` (replicas sharing ``AVILA_REDIS_URL``)."""

    #: True when other processes may save runs the server should pick up while it runs.
    changes_elsewhere: bool

    def projects(self) -> list[str]: ...

    def runs(self, project_id: str) -> list[dict[str, Any]]: ...

    def latest_version(self, project_id: str) -> int | None: ...

    def save(self, project_id: str, artifact: Any, meta: dict[str, Any]) -> dict[str, Any]: ...

    def load_latest(self, project_id: str) -> tuple[dict[str, Any], Any] | None: ...

    def announce_erased(self, project_id: str, user_ids: list[str]) -> None:
        """Tell the replicas sharing these runs that the users' data was erased (GDPR)."""
        ...

    def erased_since(self, cursor: str | None) -> tuple[str | None, list[tuple[str, str]]]:
        """``(project_id, user_id)`` erasures announced after ``cursor`` (None: none yet, only
        the cursor of now), and the cursor to pass next time."""
        ...


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class ModelRegistry:
    """Runs per project on disk; thread-safe within one process."""

    changes_elsewhere = False

    # One replica: the service that erased a user is the only one serving predictions.
    def announce_erased(self, project_id: str, user_ids: list[str]) -> None:
        return None

    def erased_since(self, cursor: str | None) -> tuple[str | None, list[tuple[str, str]]]:
        return cursor, []

    def __init__(self, root: Path, keep_artifacts: int = 3) -> None:
        self.root = Path(root)
        self.keep_artifacts = keep_artifacts
        self._lock = threading.Lock()

    def _dir(self, project_id: str) -> Path:
        return self.root / quote(project_id, safe="")

    def projects(self) -> list[str]:
        """Projects with at least one recorded run."""
        if not self.root.is_dir():
            return []
        return sorted(
            unquote(p.name) for p in self.root.iterdir() if (p / "registry.json").is_file()
        )

    def runs(self, project_id: str) -> list[dict[str, Any]]:
        """Metadata of every run, oldest first (empty before the first training)."""
        path = self._dir(project_id) / "registry.json"
        if not path.is_file():
            return []
        return list(json.loads(path.read_text())["runs"])

    def latest_version(self, project_id: str) -> int | None:
        runs = self.runs(project_id)
        return int(runs[-1]["version"]) if runs else None

    def save(self, project_id: str, artifact: Any, meta: dict[str, Any]) -> dict[str, Any]:
        """Persist a run; returns ``meta`` with its new ``version`` (and ``artifact`` file)."""
        with self._lock:
            directory = self._dir(project_id)
            directory.mkdir(parents=True, exist_ok=True)
            runs = self.runs(project_id)
            version = (runs[-1]["version"] + 1) if runs else 1
            name = f"run-{version:06d}.pkl"
            if hasattr(artifact, "version"):
                artifact.version = version
            _atomic_write(directory / name, pickle.dumps(artifact, protocol=5))
            meta = {**meta, "version": version, "artifact": name}
            runs.append(meta)
            _atomic_write(
                directory / "registry.json",
                json.dumps({"project_id": project_id, "runs": runs}, indent=1).encode(),
            )
            for old in runs[: -self.keep_artifacts]:
                (directory / old["artifact"]).unlink(missing_ok=True)
            return meta

    def load_latest(self, project_id: str) -> tuple[dict[str, Any], Any] | None:
        """``(meta, artifact)`` of the newest run whose artifact exists, or ``None``."""
        directory = self._dir(project_id)
        for meta in reversed(self.runs(project_id)):
            path = directory / meta["artifact"]
            if path.is_file():
                with open(path, "rb") as handle:
                    return meta, pickle.load(handle)  # noqa: S301 - our own data dir only
        return None
