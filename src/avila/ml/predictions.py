"""Per-user predictions served from the newest trained run, with documented fallbacks.

Scores are precomputed at training time (:class:`avila.ml.training.TrainedModels`), so a
request is a dictionary lookup plus, for a live session, one small model call. Fallbacks,
flagged with ``"baseline": true`` and a ``baseline_reason``:

* **no run trained yet** — churn and conversion probabilities are base rates measured on the
  store (churn: share of the users active in [E − 28 d, E − 14 d) with no event in
  [E − 14 d, E]; conversion: share of the users active in [E − 35 d, E − 7 d) who purchase in
  [E − 7 d, E]; E = newest event), recommendations are the most popular products (views 1,
  carts 3), next best action ``no_action``. Cached for five minutes.
* **a user without history in the run** (first seen after training) — the run's base rates
  and popularity list.

A user with no stored event at all is unknown (404).

**Nulls say why.** Every answer carries ``unavailable``: for each prediction field that is
``null``, ``{"code", "message"}`` (``{}`` when none is). Before any run, ``churn_probability``
is ``null`` when no user was active in [E − 28 d, E − 14 d) — a store with less than 14 days of
events, as a small demo — code ``churn_base_rate_undefined``; ``conversion_probability`` alike
(``conversion_base_rate_undefined``) when no user was seen before E − 7 d. ``clv`` is ``null`` in
every baseline (``no_model_trained`` / ``user_not_in_run``). The fields keep the contract's
types (number or null).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from avila.errors import AvilaError, NotFound
from avila.ml.conversion import LiveSessions
from avila.ml.features import SESSION_FEATURES
from avila.ml.registry import RunRegistry
from avila.ml.training import MODEL_NAMES, TrainedModels
from avila.storage.base import Store

__all__ = ["PredictionService"]

log = logging.getLogger("avila.ml")

# Churn: of the users active 28-14 days before the newest event, the share not active since;
# conversion: of the users active before the last 7 days, the share who bought in them. One
# pass over the events (no correlated subqueries: ClickHouse's are limited). The windows
# compare event times, not their calendar days: E is not midnight, so an event on a boundary's
# day can fall on either side of it.
_COLD_SQL = """
WITH bounds AS (SELECT max(ts) AS e FROM events WHERE project_id = ?),
     per_user AS (
       SELECT user_id,
         max(CASE WHEN ts >= e - INTERVAL 28 DAY AND ts < e - INTERVAL 14 DAY
             THEN 1 ELSE 0 END) AS mid,
         max(CASE WHEN ts >= e - INTERVAL 14 DAY THEN 1 ELSE 0 END) AS recent,
         max(CASE WHEN ts < e - INTERVAL 7 DAY THEN 1 ELSE 0 END) AS earlier,
         max(CASE WHEN event_type = 'purchase' AND ts >= e - INTERVAL 7 DAY
             THEN 1 ELSE 0 END) AS bought_last,
         min(ts) AS first_ts, max(e) AS newest
       FROM events, bounds WHERE project_id = ? AND ts >= e - INTERVAL 35 DAY
       GROUP BY user_id)
SELECT avg(CASE WHEN mid = 1 THEN 1.0 - recent END),
       avg(CASE WHEN earlier = 1 THEN 1.0 * bought_last END),
       min(first_ts), max(newest)
FROM per_user
"""

_POPULAR_SQL = """
SELECT product_id, sum(CASE event_type WHEN 'add_to_cart' THEN 3.0 ELSE 1.0 END) AS score
FROM events WHERE project_id = ? AND product_id IS NOT NULL
  AND event_type IN ('product_view', 'add_to_cart')
GROUP BY product_id ORDER BY score DESC, product_id LIMIT ?
"""


_TRAIN_HINT = (
    "POST /api/v1/ml/train to score every user (a refusal, 422 insufficient_training_data,"
    " names what the store still lacks)"
)


def _cold_gaps(
    churn: Any, conversion: Any, first: datetime | None, newest: datetime | None
) -> dict[str, dict[str, str]]:
    """``unavailable`` entries for the store base rates that are undefined (no user in
    their window)."""
    span = ""
    if first is not None and newest is not None:
        days = (newest - first).total_seconds() / 86400
        span = f" (its events of the last 35 days span {days:.1f} days, to {newest:%Y-%m-%d %H:%M})"
    out = {}
    if churn is None:
        out["churn_probability"] = {
            "code": "churn_base_rate_undefined",
            "message": "no model trained yet, and the churn base rate is undefined on this"
            " store: it is the share of users active 28 to 14 days before the newest event"
            f" with no event since, and no user was active then{span}. {_TRAIN_HINT}.",
        }
    if conversion is None:
        out["conversion_probability"] = {
            "code": "conversion_base_rate_undefined",
            "message": "no model trained yet, and the conversion base rate is undefined on"
            " this store: it is the share of users seen before the last 7 days who purchase"
            f" in them, and no user was seen before them{span}. {_TRAIN_HINT}.",
        }
    return out


def _now_us() -> int:
    return int(time.time() * 1_000_000)


class PredictionService:
    """Holds the newest run per project; answers predictions and also-bought lists."""

    def __init__(
        self,
        store: Store,
        registry: RunRegistry,
        live: LiveSessions | None = None,
        *,
        cold_cache_seconds: float = 300.0,
        recommendations: int = 10,
    ) -> None:
        self.store = store
        self.registry = registry
        self.live = live or LiveSessions()
        self.cold_cache_seconds = cold_cache_seconds
        self.recommendations = recommendations
        self._runs: dict[str, tuple[dict[str, Any], TrainedModels]] = {}
        self._cold: dict[str, tuple[float, dict[str, Any]]] = {}
        self._forgotten: set[tuple[str, str]] = set()
        #: where this replica is in the registry's erasure announcements (other replicas')
        self._erased_cursor: str | None = None
        self._lock = threading.Lock()

    # -- runs ------------------------------------------------------------------------------

    def load_all(self) -> int:
        """Load the newest run of every project in the registry; returns how many. Users
        erased since a run was saved (no stored event left) are dropped from it."""
        # erasures announced from now on are applied by refresh; earlier ones by the filter
        self._erased_cursor, _ = self.registry.erased_since(None)
        for project in self.registry.projects():
            loaded = self.registry.load_latest(project)
            if loaded is not None:
                self.install(project, loaded[0], self._drop_erased(project, loaded[1]))
        return len(self._runs)

    def refresh(self) -> int:
        """Forget users other replicas erased, and install runs saved elsewhere (another
        replica) since they were loaded; returns how many projects changed. One cheap version
        read per project. A new run is filtered against the store like a loaded one: it may
        have been trained before an erasure and saved after it."""
        self._erased_cursor, erased = self.registry.erased_since(self._erased_cursor)
        for project_id, user_id in erased:
            self._forget_here(project_id, user_id)
        changed = 0
        for project in self.registry.projects():
            newest = self.registry.latest_version(project)
            current = self._runs.get(project)
            if newest is None or (current is not None and current[0]["version"] >= newest):
                continue
            loaded = self.registry.load_latest(project)
            if loaded is not None:
                self.install(project, loaded[0], self._drop_erased(project, loaded[1]))
                changed += 1
        return changed

    def _drop_erased(self, project_id: str, models: TrainedModels) -> TrainedModels:
        """``models`` without the scores of users who have no stored event any more: the
        saved run still holds users erased after it was trained (GDPR), and the set of
        :meth:`forget`-ten users does not survive a restart of the server."""
        rows = self.store.query(
            "SELECT DISTINCT user_id FROM events WHERE project_id = ?", [project_id]
        )
        present = {str(row[0]) for row in rows}
        models.users = {u: r for u, r in models.users.items() if u in present}
        return models

    def install(self, project_id: str, meta: dict[str, Any], models: TrainedModels) -> None:
        with self._lock:
            # Users erased while the run was training must not come back with it.
            erased = {user for project, user in self._forgotten if project == project_id}
            if erased:
                models.users = {u: r for u, r in models.users.items() if u not in erased}
            self._runs[project_id] = (meta, models)
            self._forgotten = {k for k in self._forgotten if k[0] != project_id}

    def projects(self) -> list[str]:
        """Projects with a loaded run."""
        return list(self._runs)

    def current(self, project_id: str) -> tuple[dict[str, Any], TrainedModels] | None:
        return self._runs.get(project_id)

    def forget(self, project_id: str, user_id: str) -> None:
        """Stop serving a user's precomputed scores and live state (after their data was
        erased), here and, through the registry, on the replicas that share it."""
        self._forget_here(project_id, user_id)
        try:
            self.registry.announce_erased(project_id, [user_id])
        except AvilaError as exc:
            # The events are gone; replicas that loaded the run keep the scores until they
            # restart (their load filters against the store).
            log.warning("erasure not announced to other replicas", extra={"error": exc.message})

    def _forget_here(self, project_id: str, user_id: str) -> None:
        with self._lock:
            self._forgotten.add((project_id, user_id))
        self.live.forget(project_id, user_id)

    # -- predictions -----------------------------------------------------------------------

    def predict(self, project_id: str, user_id: str) -> dict[str, Any]:
        """The predictions body for one user; raises 404 for a user with no stored event."""
        run = self._runs.get(project_id)
        forgotten = (project_id, user_id) in self._forgotten
        record = None if run is None or forgotten else run[1].users.get(user_id)
        now_us = _now_us()
        session = self.live.get(project_id, user_id, now_us=now_us)
        if record is not None and run is not None:
            meta, models = run
            version = f"v{meta['version']}"
            body = {
                "user_id": user_id,
                **record,
                "model_versions": dict.fromkeys(MODEL_NAMES, version),
                "baseline": False,
                "as_of": models.as_of,
            }
        else:
            if session is None and (forgotten or not self._exists(project_id, user_id)):
                raise NotFound(f"unknown user {user_id!r}", code="user_not_found")
            body = self._baseline(project_id, user_id, run)
        body["session"] = self._session(run, session) if session is not None else None
        body.setdefault("unavailable", {})
        return body

    def _exists(self, project_id: str, user_id: str) -> bool:
        rows = self.store.query(
            "SELECT 1 FROM events WHERE project_id = ? AND user_id = ? LIMIT 1",
            [project_id, user_id],
        )
        return bool(rows)

    def _baseline(
        self, project_id: str, user_id: str, run: tuple[dict[str, Any], TrainedModels] | None
    ) -> dict[str, Any]:
        unavailable: dict[str, dict[str, str]] = {}
        if run is not None:
            models = run[1]
            rates: dict[str, Any] = dict(models.base_rates)
            popular = models.popularity
            reason = "user has no history in the trained run (first seen after training)"
            version = f"v{run[0]['version']}-baseline"
            unavailable["clv"] = {
                "code": "user_not_in_run",
                "message": f"{reason}: no customer lifetime value until the next run",
            }
        else:
            cold = self._cold_baseline(project_id)
            rates, popular = cold["rates"], cold["popularity"]
            reason = "no model trained yet: store base rates and product popularity"
            version = "baseline"
            unavailable.update(cold["unavailable"])
            unavailable["clv"] = {
                "code": "no_model_trained",
                "message": "no model trained yet (POST /api/v1/ml/train): customer lifetime"
                " value needs the CLV model",
            }
        return {
            "unavailable": unavailable,
            "user_id": user_id,
            "churn_probability": rates.get("churn"),
            "conversion_probability": rates.get("conversion"),
            "recommendations": [
                {"product_id": p, "score": round(float(s), 6)}
                for p, s in popular[: self.recommendations]
            ],
            "next_best_action": {
                "action": "no_action",
                "reason": "baseline: no user history in the models to justify an action",
            },
            "model_versions": dict.fromkeys(MODEL_NAMES, version),
            "baseline": True,
            "baseline_reason": reason,
            "clv": None,
        }

    def _cold_baseline(self, project_id: str) -> dict[str, Any]:
        cached = self._cold.get(project_id)
        if cached is not None and time.monotonic() - cached[0] < self.cold_cache_seconds:
            return cached[1]
        churn, conversion, first, newest = self.store.query(_COLD_SQL, [project_id, project_id])[0]
        popular = self.store.query(_POPULAR_SQL, [project_id, self.recommendations])
        value = {
            "unavailable": _cold_gaps(churn, conversion, first, newest),
            "rates": {
                "churn": None if churn is None else round(float(churn), 6),
                "conversion": None if conversion is None else round(float(conversion), 6),
            },
            "popularity": [(str(p), float(s)) for p, s in popular],
        }
        self._cold[project_id] = (time.monotonic(), value)
        return value

    @staticmethod
    def _session(run: tuple[dict[str, Any], TrainedModels] | None, state: Any) -> dict[str, Any]:
        import pandas as pd

        features = state.features()
        model = run[1].session_model if run is not None else None
        if state.purchased:
            probability: float | None = 1.0
        elif model is not None:
            frame = pd.DataFrame([features], columns=SESSION_FEATURES)
            probability = round(float(model.predict_proba(frame)[0]), 6)
        else:
            probability = None
        return {
            "session_id": state.session_id,
            "started_at": datetime.fromtimestamp(state.start_us / 1e6, UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "events": state.events,
            "purchased": state.purchased,
            "conversion_probability": probability,
            "model_version": f"v{run[0]['version']}" if model is not None and run else None,
        }

    def also_bought(self, project_id: str, product_id: str, n: int = 10) -> dict[str, Any]:
        run = self._runs.get(project_id)
        if run is None:
            raise NotFound(
                "no trained model yet: POST /api/v1/ml/train first", code="model_not_trained"
            )
        items = run[1].also_bought.get(product_id)
        if items is None:
            raise NotFound(f"unknown product {product_id!r}", code="product_not_found")
        return {
            "product_id": product_id,
            "also_bought": [{"product_id": p, "score": round(s, 6)} for p, s in items[:n]],
            "model_version": f"v{run[0]['version']}",
        }
