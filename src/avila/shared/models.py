"""Trained models and their registry in Redis, for replicas that share ``AVILA_REDIS_URL``
(same interface as :class:`avila.ml.registry.ModelRegistry`).

Layout per project (id percent-encoded): ``avila:models:<project>:runs`` (list of the runs'
JSON metadata, oldest first), ``avila:models:<project>:artifact:<version>`` (the pickled
models, the newest ``keep_artifacts`` runs only), ``avila:models:<project>:version`` (the
counter that numbers runs) and the set ``avila:models:projects``. A run is written in one
MULTI/EXEC, so a replica never sees metadata without its artifact.

Replicas that did not train a run install it within :data:`REFRESH_SECONDS`
(:meth:`avila.ml.predictions.PredictionService.refresh`).

Erasures (GDPR): the replica that erased a user appends ``(project, user)`` to the stream
``avila:models:erased`` (the newest :data:`ERASURES_KEPT` entries); the others read it at each
refresh and stop serving the user's scores and live state, as the erasing replica did at once.

The artifacts are pickles this code wrote; they are only read back from this Redis. Anyone who
can write to that Redis can therefore run code in the replicas: protect it (password or ACL,
private network), as for the data directory in the embedded tier.
"""

from __future__ import annotations

import json
import pickle
from typing import Any
from urllib.parse import quote, unquote

import redis

from avila.shared.keys import unavailable

PROJECTS = "avila:models:projects"
REFRESH_SECONDS = 5.0
ERASED = "avila:models:erased"
#: Erasure announcements kept; a replica that missed more (down longer than the erasures of
#: this many users take) filters its runs against the store when it loads them at start.
ERASURES_KEPT = 100_000


def _prefix(project_id: str) -> str:
    return f"avila:models:{quote(project_id, safe='')}"


class RedisModelRegistry:
    #: Runs may be saved by other replicas: poll for them (see PredictionService.refresh).
    changes_elsewhere = True

    def __init__(self, client: redis.Redis, keep_artifacts: int = 3) -> None:
        self._redis = client
        self.keep_artifacts = keep_artifacts

    def close(self) -> None:
        """Close the registry's Redis client (each registry has its own, see
        ``avila.shared.open_model_registry``): at the server's shutdown. Blocks briefly (drops
        sockets): call off the event loop."""
        self._redis.close()

    def projects(self) -> list[str]:
        try:
            members = self._redis.smembers(PROJECTS)
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        return sorted(unquote(m.decode() if isinstance(m, bytes) else str(m)) for m in members)

    def runs(self, project_id: str) -> list[dict[str, Any]]:
        try:
            raw = self._redis.lrange(_prefix(project_id) + ":runs", 0, -1)
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        return [json.loads(r) for r in raw]

    def latest_version(self, project_id: str) -> int | None:
        try:
            raw = self._redis.lindex(_prefix(project_id) + ":runs", -1)
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        return None if raw is None else int(json.loads(raw)["version"])

    def save(self, project_id: str, artifact: Any, meta: dict[str, Any]) -> dict[str, Any]:
        prefix = _prefix(project_id)
        try:
            version = int(self._redis.incr(prefix + ":version"))
            if hasattr(artifact, "version"):
                artifact.version = version
            meta = {**meta, "version": version, "artifact": f"run-{version:06d}"}
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(f"{prefix}:artifact:{version}", pickle.dumps(artifact, protocol=5))
                pipe.rpush(prefix + ":runs", json.dumps(meta))
                pipe.sadd(PROJECTS, quote(project_id, safe=""))
                stale = version - self.keep_artifacts
                if stale >= 1:
                    pipe.delete(f"{prefix}:artifact:{stale}")  # older ones went before
                pipe.execute()
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        return meta

    def load_latest(self, project_id: str) -> tuple[dict[str, Any], Any] | None:
        prefix = _prefix(project_id)
        for meta in reversed(self.runs(project_id)):
            try:
                blob = self._redis.get(f"{prefix}:artifact:{meta['version']}")
            except redis.RedisError as exc:
                raise unavailable(exc) from exc
            if isinstance(blob, bytes):
                return meta, pickle.loads(blob)  # noqa: S301 - written by us, see module doc
        return None

    def announce_erased(self, project_id: str, user_ids: list[str]) -> None:
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for user_id in user_ids:
                    pipe.xadd(
                        ERASED,
                        {"p": project_id, "u": user_id},
                        maxlen=ERASURES_KEPT,
                        approximate=True,
                    )
                pipe.execute()
        except redis.RedisError as exc:
            raise unavailable(exc) from exc

    def erased_since(self, cursor: str | None) -> tuple[str | None, list[tuple[str, str]]]:
        try:
            if cursor is None:
                newest = self._redis.xrevrange(ERASED, count=1)
                return (_text(newest[0][0]) if newest else "0-0"), []
            found = self._redis.xrange(ERASED, min=f"({cursor}")
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        if not found:
            return cursor, []
        erased = []
        for _, fields in found:
            if fields:  # an announcement trimmed while being read comes back empty
                erased.append((_text(fields[b"p"]), _text(fields[b"u"])))
        return _text(found[-1][0]), erased


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
