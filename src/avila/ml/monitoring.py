"""Anomalies on the store's metric series: detect, keep, publish.

Metric series (per project, from the events table, UTC buckets):

* ``events.<type>`` — events per bucket of each event type with at least one event per hour
  on average, and ``events.all``;
* ``revenue`` — summed purchase revenue per bucket;
* ``error_rate`` — share of events that are Custom events whose name contains ``error``
  (only when such events exist).

Two detectors (see :mod:`avila.ml.anomaly`): the *seasonal* one on hourly buckets (expected
value = median of the same hour of the week/day in the history; flagged beyond the band that
targets 0.1 % false alarms), and the *streaming* Half-Space Trees on per-minute vectors of all
metrics together (score in [0, 1]; flagged at or above ``threshold`` once warmed up).
Detected anomalies go to :class:`AnomalyLog` (the store's ``anomalies`` table, queryable) and,
when new and recent, to the live bus's ``alerts`` channel.
"""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from avila.analytics.common import fragments
from avila.ml.anomaly import SeasonalAnomalyDetector, StreamingAnomalyDetector
from avila.storage.base import Store

if TYPE_CHECKING:
    import pandas as pd  # loaded by the first fit or read: the app starts without it

__all__ = [
    "AnomalyLog",
    "score_hours",
    "stabilise",
    "metric_series",
    "seasonal_anomalies",
    "streaming_anomalies",
]

_SERIES_SQL = """
SELECT {bucket} AS bucket, event_type, count(*) AS n,
       coalesce(sum(revenue) FILTER (WHERE event_type = 'purchase'), 0.0) AS revenue,
       count(*) FILTER (WHERE event_type = 'custom' AND lower(event_name) LIKE '%error%')
           AS errors
FROM events WHERE project_id = ? AND ts >= ? AND ts < ?
GROUP BY ALL
"""


def metric_series(
    store: Store, project_id: str, start: datetime, end: datetime, *, bucket_seconds: int = 3600
) -> pd.DataFrame:
    """One row per bucket in ``[start, end)`` (empty buckets are zeros), one column per metric.

    ``start``/``end`` are naive UTC and should be multiples of the bucket.
    """
    import pandas as pd

    bucket = fragments(store)["time_bucket_us"].format(int(bucket_seconds) * 1_000_000, "ts")
    sql = _SERIES_SQL.format(bucket=bucket)
    raw = store.query_arrow(sql, [project_id, start, end]).to_pandas()
    index = pd.date_range(start, end, freq=f"{bucket_seconds}s", inclusive="left")
    out = pd.DataFrame(index=index)
    if raw.empty:
        out["events.all"] = 0.0
        return out
    raw["bucket"] = pd.to_datetime(raw["bucket"])
    counts = raw.pivot_table(index="bucket", columns="event_type", values="n", aggfunc="sum")
    counts = counts.reindex(index, fill_value=0).fillna(0.0)
    hours = max((end - start).total_seconds() / 3600, 1.0)
    for kind in sorted(counts.columns):
        if counts[kind].sum() / hours >= 1.0:
            out[f"events.{kind}"] = counts[kind].astype(float)
    total = counts.sum(axis=1).astype(float)
    out["events.all"] = total
    out["revenue"] = raw.groupby("bucket")["revenue"].sum().reindex(index, fill_value=0.0)
    errors = raw.groupby("bucket")["errors"].sum().reindex(index, fill_value=0)
    if errors.sum() > 0:
        out["error_rate"] = np.where(total > 0, errors / total.where(total > 0, 1.0), 0.0)
    return out


def _record(
    metric: str, detector: str, bucket: Any, seconds: int, **values: float | None
) -> dict[str, Any]:
    import pandas as pd

    return {
        "metric": metric,
        "detector": detector,
        "bucket_start": pd.Timestamp(bucket).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "bucket_seconds": seconds,
        **{k: (None if v is None or not np.isfinite(v) else float(v)) for k, v in values.items()},
    }


def seasonal_anomalies(
    hourly: pd.DataFrame, *, window_hours: int = 168, false_alarm_rate: float = 0.001
) -> tuple[list[dict[str, Any]], dict[str, SeasonalAnomalyDetector]]:
    """Fit one seasonal detector per metric on all but the last ``window_hours`` and score those.

    The season follows the history: three weeks or more → hour of week, three days or more →
    hour of day, otherwise none. Returns the anomalies and the fitted detectors (for scoring
    later hours).
    """
    history, window = hourly.iloc[:-window_hours], hourly.iloc[-window_hours:]
    if len(history) >= 3 * 168:
        season = "hour_of_week"
    elif len(history) >= 3 * 24:
        season = "hour_of_day"
    else:
        season = "none"
    if len(history) < 3 or window.empty:
        return [], {}
    found: list[dict[str, Any]] = []
    detectors: dict[str, SeasonalAnomalyDetector] = {}
    for metric in hourly.columns:
        det = SeasonalAnomalyDetector(false_alarm_rate=false_alarm_rate, season=season)  # type: ignore[arg-type]
        det.fit(stabilise(metric, history[metric]))
        detectors[metric] = det
        found.extend(score_hours(metric, det, window[metric]))
    return found, detectors


def stabilise(metric: str, values: pd.Series) -> pd.Series:
    """Anscombe's square root for counts and money (Poisson-like noise grows with the level;
    after the transform it is about constant, as the detector's single scale assumes)."""
    if metric == "error_rate":
        return values
    return np.sqrt(values.clip(lower=0) + 3 / 8)


def _unstabilise(metric: str, values: np.ndarray) -> np.ndarray:
    if metric == "error_rate":
        return values
    return np.asarray(np.clip(values, 0, None) ** 2 - 3 / 8, dtype=float)


def score_hours(
    metric: str, detector: SeasonalAnomalyDetector, values: pd.Series
) -> list[dict[str, Any]]:
    """Anomalous hours of ``values`` under a fitted detector, in the metric's own units."""
    scored = detector.score(stabilise(metric, values))
    flagged = scored[scored["is_anomaly"]]
    bands = {c: _unstabilise(metric, flagged[c].to_numpy()) for c in ("expected", "lower", "upper")}
    return [
        _record(
            metric,
            "seasonal",
            bucket,
            3600,
            value=float(values.loc[bucket]),
            expected=bands["expected"][i],
            lower=max(bands["lower"][i], 0.0),
            upper=bands["upper"][i],
            score=row["z"],
        )
        for i, (bucket, row) in enumerate(flagged.iterrows())
    ]


def streaming_anomalies(
    minutely: pd.DataFrame,
    detector: StreamingAnomalyDetector | None = None,
    *,
    threshold: float = 0.98,
) -> tuple[list[dict[str, Any]], StreamingAnomalyDetector]:
    """Score-then-learn each minute's vector of metrics; flag scores >= ``threshold``.

    Nothing is flagged before the detector has seen its first reference window.
    """
    det = detector or StreamingAnomalyDetector(seed=42)
    found: list[dict[str, Any]] = []
    columns = list(minutely.columns)
    for bucket, values in zip(minutely.index, minutely.to_numpy(dtype=float), strict=True):
        reading = dict(zip(columns, values, strict=True))
        warmed = det.n_seen_ >= det.window_size
        score = det.score_then_learn(reading)
        if warmed and score >= threshold:
            top = max(columns, key=lambda c: reading[c])
            found.append(
                _record(
                    "minute_vector",
                    "streaming",
                    bucket,
                    60,
                    value=reading.get("events.all", reading[top]),
                    expected=None,
                    lower=None,
                    upper=None,
                    score=score,
                )
            )
    return found, det


class AnomalyLog:
    """Detected anomalies, in the store's ``anomalies`` table (shared by every replica that
    shares the store); a repeated (metric, detector, bucket) is ignored.

    An anomaly's ``id`` is derived from its key (project, metric, detector, bucket start), so
    every replica and every retry gives the same anomaly the same id, and it fits a JSON
    number (below 2**53)."""

    COLUMNS = (
        "metric",
        "detector",
        "bucket_start",
        "bucket_seconds",
        "value",
        "expected",
        "lower",
        "upper",
        "score",
        "detected_at",
    )
    KEY = ("project_id", "metric", "detector", "bucket_start")

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, project_id: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store ``records``; returns the ones that were new (with ``id`` and ``detected_at``)."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        new: list[dict[str, Any]] = []
        for rec in records:
            row = {c: rec.get(c) for c in self.COLUMNS}
            row["detected_at"] = rec.get("detected_at") or now
            anomaly_id = anomaly_id_of(
                project_id, str(row["metric"]), str(row["detector"]), str(row["bucket_start"])
            )
            stored = {"project_id": project_id, "anomaly_id": anomaly_id, **row}
            if self.store.insert_new("anomalies", self.KEY, stored):
                new.append({"id": anomaly_id, **rec, "detected_at": row["detected_at"]})
        return new

    def query(
        self,
        project_id: str,
        *,
        metric: str | None = None,
        detector: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Newest bucket first; ``since``/``until`` compare RFC 3339 UTC bucket starts."""
        where, params = ["project_id = ?"], [project_id]
        for clause, value in (
            ("metric = ?", metric),
            ("detector = ?", detector),
            ("bucket_start >= ?", since),
            ("bucket_start < ?", until),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = (
            "SELECT anomaly_id, "
            + ", ".join(self.COLUMNS)
            + " FROM anomalies WHERE "
            + " AND ".join(where)
            + " ORDER BY bucket_start DESC, anomaly_id DESC LIMIT ?"
        )
        rows = self.store.query(sql, [*params, limit])
        return [dict(zip(("id", *self.COLUMNS), row, strict=True)) for row in rows]

    def adopt_sqlite(self, path: Path) -> int:
        """Move the anomalies of a data directory from before the store kept them
        (``<data dir>/models/anomalies.sqlite``) into the store, then rename the file to
        ``*.moved``; returns how many were new. Ids become the key-derived ones."""
        if not path.exists():
            return 0
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute(
                "SELECT project_id, " + ", ".join(self.COLUMNS) + " FROM anomalies"
            ).fetchall()
        finally:
            conn.close()
        moved = 0
        for project_id, *values in rows:
            moved += len(self.add(project_id, [dict(zip(self.COLUMNS, values, strict=True))]))
        path.rename(path.with_name(path.name + ".moved"))
        return moved


def anomaly_id_of(project_id: str, metric: str, detector: str, bucket_start: str) -> int:
    """A stable id below 2**53 from an anomaly's key."""
    digest = hashlib.blake2b(
        "\x1f".join((project_id, metric, detector, bucket_start)).encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") >> 11
