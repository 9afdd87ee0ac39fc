"""Digital twins: reported state from telemetry, desired state with optimistic concurrency,
relationships, health and a short-horizon forecast.

* ``reported`` — the latest value (and its reading time) of every metric the device sent.
* ``desired`` — a JSON object set through ``PUT .../twin/{id}/desired``; ``version`` counts its
  updates (0 before the first) and is the twin's ETag (``"<version>"``). A PUT with
  ``If-Match`` that names another version fails with 412 ``twin_version_mismatch``.
* ``delta`` — the desired keys whose value differs from the reported one (or is not reported).
* ``health_score`` (0–100) starts at 100 and loses points, each listed in ``health``
  ``explanation`` with its reason: an active threshold alarm (critical 40, warning 15), a
  latest value that is anomalous against its own recent history (robust z-score > 3.5 over the
  previous 60 readings; 10 per metric), a latest value within 10 % of an alarm limit (5 per
  metric), a machine ``state`` of down (30) and a silent device (no reading for more than five
  of its usual intervals, at least 5 min; 20). Bands: ``good`` ≥ 80, ``fair`` ≥ 50, ``poor``.
  It is the condition *now* and extrapolates no trend: a signal rising towards its limit is
  :mod:`avila.industry40.maintenance`'s business (RUL and risk), so a twin can be ``good``
  while maintenance says ``high``.
* ``forecast`` — ordinary least squares line through the last readings (at most 500, within
  24 h), extrapolated with its 95 % prediction band
  ŷ ± 1.96·s·√(1 + 1/n + (t − t̄)²/Σ(tᵢ − t̄)²), s the residual standard deviation.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from avila.errors import AvilaError, ValidationFailed
from avila.industry40 import records
from avila.industry40.alarms import AlarmService
from avila.industry40.anomaly import robust_zscores
from avila.industry40.devices import DeviceRegistry, rfc3339
from avila.storage.base import Store

ANOMALY_WINDOW = 60


class VersionMismatch(AvilaError):
    status = 412
    code = "twin_version_mismatch"


def etag(version: int) -> str:
    return f'"{version}"'


def _parse_if_match(value: str) -> int | None:
    """The version an ``If-Match`` names (``"3"``, ``W/"3"``, ``3``); None for ``*``."""
    raw = value.strip()
    if raw == "*":
        return None
    raw = raw.removeprefix("W/").strip('"')
    try:
        return int(raw)
    except ValueError:
        raise ValidationFailed(
            f'If-Match must be an ETag returned by GET (e.g. "3"), got {value!r}',
            code="invalid_if_match",
            details=[{"path": "header.If-Match", "message": "not a twin ETag"}],
        ) from None


class TwinService:
    def __init__(self, store: Store, registry: DeviceRegistry, alarms: AlarmService) -> None:
        self.store = store
        self.registry = registry
        self.alarms = alarms

    def _desired(self, project_id: str, device_id: str) -> tuple[dict[str, Any], int]:
        rows = self.store.query(
            "SELECT desired, version FROM twin_desired WHERE project_id = ? AND device_id = ?",
            [project_id, device_id],
        )
        return (json.loads(rows[0][0]), int(rows[0][1])) if rows else ({}, 0)

    def get(
        self, project_id: str, device_id: str, *, now: datetime | None = None
    ) -> dict[str, Any]:
        device = self.registry.require(project_id, device_id)
        reported_rows = records.latest(self.store, project_id, device_id)
        reported = {
            m: {"value": v, "timestamp": rfc3339(records.from_us(ts))} for m, v, ts in reported_rows
        }
        desired, version = self._desired(project_id, device_id)
        delta = {k: v for k, v in desired.items() if k not in reported or reported[k]["value"] != v}
        last_us = max((ts for _, _, ts in reported_rows), default=None)
        health = self.health(project_id, device_id, reported_rows, now=now)
        children = [
            d.device_id
            for d in self.registry.devices(project_id)
            if d.device_id != device_id and d.attributes.get("machine") == device_id
        ]
        return {
            "device_id": device_id,
            "device_type": device.device_type,
            "reported": reported,
            "desired": desired,
            "delta": delta,
            "health_score": health["score"],
            "health": health,
            "last_seen": rfc3339(records.from_us(last_us)) if last_us is not None else None,
            "first_seen": rfc3339(records.from_us(device.first_seen_us)),
            "version": version,
            "attributes": device.attributes,
            "relationships": {
                "site": device.attributes.get("site"),
                "line": device.attributes.get("line"),
                "machine": device.machine,
                "children": sorted(children),
            },
            "active_alarms": self.alarms.active_for(project_id, device_id),
        }

    def put_desired(
        self, project_id: str, device_id: str, desired: dict[str, Any], if_match: str | None
    ) -> int:
        """Replace the desired document; returns the new version. Raises 412 when
        ``if_match`` names a version other than the current one."""
        self.registry.require(project_id, device_id)
        _, current = self._desired(project_id, device_id)
        expected = _parse_if_match(if_match) if if_match is not None else None
        if expected is not None and expected != current:
            raise VersionMismatch(
                f"the twin is at version {current}, not {expected}; GET it again and retry",
                details=[{"current_version": current, "if_match": if_match}],
            )
        doc = json.dumps(desired)
        key = {"project_id": project_id, "device_id": device_id}
        now = datetime.now(UTC).replace(tzinfo=None)
        if current == 0:
            row = {**key, "desired": doc, "version": 1, "updated_at": now}
            changed = int(self.store.insert_new("twin_desired", tuple(key), row))
        else:
            # The version check in the store too (compare-and-set): two writers racing on one
            # version, one wins.
            changed = self.store.update_rows(
                "twin_desired",
                key,
                {"desired": doc, "version": current + 1, "updated_at": now},
                expect={"version": current},
            )
        if changed != 1:
            raise VersionMismatch(
                "the twin changed while it was being updated; GET it again and retry",
            )
        return current + 1

    def health(
        self,
        project_id: str,
        device_id: str,
        reported_rows: list[tuple[str, float, int]],
        *,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        device = self.registry.require(project_id, device_id)
        items: list[dict[str, Any]] = []
        for alert in self.alarms.active_for(project_id, device_id):
            penalty = 40 if alert["severity"] == "critical" else 15
            items.append(
                {
                    "factor": "threshold_alarm",
                    "metric": alert["metric"],
                    "penalty": penalty,
                    "detail": f"{alert['metric']} = {alert['value']:g} is beyond its "
                    f"{alert['bound']} limit {alert['limit']:g} ({alert['severity']})",
                }
            )
        rules = {r.metric: r for r in self.alarms.rules_for(project_id, device.device_type)}
        latest = {m: v for m, v, _ in reported_rows}
        if latest.get(records.STATE_METRIC) == 0:
            items.append(
                {
                    "factor": "machine_down",
                    "metric": "state",
                    "penalty": 30,
                    "detail": "state is 0 (down)",
                }
            )
        for metric, value in latest.items():
            rule = rules.get(metric)
            if rule is None:
                continue
            for limit in (rule.max, rule.min):
                if limit is None:
                    continue
                inside = (rule.min is None or value >= rule.min) and (
                    rule.max is None or value <= rule.max
                )
                if inside and abs(limit - value) <= 0.1 * max(abs(limit), 1e-9):
                    items.append(
                        {
                            "factor": "near_limit",
                            "metric": metric,
                            "penalty": 5,
                            "detail": f"{metric} = {value:g} is within 10 % of its limit {limit:g}",
                        }
                    )
        items.extend(
            self._anomalies(
                project_id, device_id, [m for m in latest if m not in records.RESERVED_METRICS]
            )
        )
        last_us = max((ts for _, _, ts in reported_rows), default=None)
        if last_us is not None:
            interval = self._usual_interval_s(project_id, device_id)
            silent = now.timestamp() - last_us / 1e6
            limit = max(300.0, 5 * interval)
            if silent > limit:
                items.append(
                    {
                        "factor": "stale",
                        "metric": None,
                        "penalty": 20,
                        "detail": f"no reading for {silent:.0f} s (usual interval {interval:.0f} s)",
                    }
                )
        score = float(max(0, 100 - sum(i["penalty"] for i in items)))
        return {
            "score": score,
            "status": "good" if score >= 80 else "fair" if score >= 50 else "poor",
            "explanation": items,
        }

    def _usual_interval_s(self, project_id: str, device_id: str) -> float:
        rows = self.store.query(
            f"SELECT {records.epoch_us(self.store, 'ts')} FROM (SELECT DISTINCT ts FROM telemetry"
            " WHERE project_id = ?"
            " AND device_id = ? ORDER BY ts DESC LIMIT 50)",
            [project_id, device_id],
        )
        ts = np.sort(np.asarray([r[0] for r in rows], dtype=float))
        return float(np.median(np.diff(ts)) / 1e6) if len(ts) > 2 else 60.0

    def _anomalies(
        self, project_id: str, device_id: str, metrics: list[str]
    ) -> list[dict[str, Any]]:
        if not metrics:
            return []
        rows = self.store.query(
            "SELECT metric, value FROM (SELECT metric, ts, value,"
            " row_number() OVER (PARTITION BY metric ORDER BY ts DESC) AS k FROM telemetry"
            " WHERE project_id = ? AND device_id = ? AND metric IN ("
            + ", ".join("?" for _ in metrics)
            + f")) WHERE k <= {ANOMALY_WINDOW + 1} ORDER BY metric, ts",
            [project_id, device_id, *metrics],
        )
        by_metric: dict[str, list[float]] = {}
        for metric, value in rows:
            by_metric.setdefault(metric, []).append(value)
        out = []
        for metric, values in sorted(by_metric.items()):
            if len(values) <= 10:
                continue
            scores, _, _ = robust_zscores(values, window=ANOMALY_WINDOW, min_periods=10)
            z = scores[-1]
            if np.isfinite(z) and abs(z) > 3.5:
                out.append(
                    {
                        "factor": "anomalous_value",
                        "metric": metric,
                        "penalty": 10,
                        "detail": f"latest {metric} = {values[-1]:g} has robust z-score {z:.1f}"
                        f" against its previous {len(values) - 1} readings",
                    }
                )
        return out

    def forecast(
        self, project_id: str, device_id: str, metric: str, horizon_minutes: float, points: int = 12
    ) -> dict[str, Any]:
        self.registry.require(project_id, device_id)
        end_row = self.store.query(
            f"SELECT {records.epoch_us(self.store, 'max(ts)')} FROM telemetry"
            " WHERE project_id = ? AND device_id = ?"
            " AND metric = ?",
            [project_id, device_id, metric],
        )[0][0]
        if end_row is None:
            raise ValidationFailed(
                f"device {device_id!r} has no readings of {metric!r}",
                code="forecast_no_data",
                details=[{"path": "$.metric", "message": "no readings"}],
            )
        end = records.from_us(int(end_row)) + timedelta(microseconds=1)
        t_us, y = records.values_of(
            self.store,
            project_id,
            device_id,
            metric,
            end - timedelta(hours=24),
            end,
            max_points=500,
        )
        if len(y) < 3:
            raise ValidationFailed(
                f"need at least 3 readings of {metric!r} in the last 24 h to forecast",
                code="forecast_too_few_points",
                details=[{"path": "$.metric", "message": "too few readings"}],
            )
        t = (np.asarray(t_us, dtype=float) - t_us[-1]) / 3.6e9  # hours, 0 = last reading
        yv = np.asarray(y)
        slope, intercept = np.polyfit(t, yv, 1)
        resid = yv - (intercept + slope * t)
        n = len(yv)
        s = float(np.sqrt(resid @ resid / max(n - 2, 1)))
        t_mean = float(t.mean())
        sxx = float(((t - t_mean) ** 2).sum()) or 1e-12
        steps = np.linspace(horizon_minutes / 60 / points, horizon_minutes / 60, points)
        half = 1.96 * s * np.sqrt(1 + 1 / n + (steps - t_mean) ** 2 / sxx)
        base = records.from_us(t_us[-1])
        return {
            "device_id": device_id,
            "metric": metric,
            "method": "ols_linear_trend",
            "trend_per_hour": float(slope),
            "residual_std": s,
            "history_points": n,
            "points": [
                {
                    "timestamp": rfc3339(base + timedelta(hours=float(h))),
                    "value": float(intercept + slope * h),
                    "lower": float(intercept + slope * h - w),
                    "upper": float(intercept + slope * h + w),
                }
                for h, w in zip(steps, half, strict=True)
            ],
        }
