"""Alert rules: the rule model and the value of each metric over a rule's window.

A rule watches one metric over the trailing window ``now - window_seconds <= ts <= now`` (event
or reading time ``ts``, UTC; both ends included, so something dated ahead of the server's clock
counts once the clock reaches it) and *breaches* when ``value op threshold``. The metrics:

``event_count``
    Events of ``condition_type`` (and ``condition_value`` matched against the type's key field,
    as in funnels) in the window.
``conversion_rate``
    Of the users with a ``steps[0]`` event in the window, the share that also have a
    ``steps[1]`` event in the window at or after their first ``steps[0]`` event (a fraction in
    [0, 1]). No value when no user did ``steps[0]``.
``telemetry``
    ``max`` | ``min`` | ``avg`` | ``last`` (latest ``ts``) of one metric's readings in the window,
    optionally of one device or of the devices of one type. No value without readings.
``anomaly``
    The robust (modified) z-score of the current window's value against the
    :data:`BASELINE_WINDOWS` windows of the same length just before it (window ``k`` is
    ``now - (k+1)·w <= ts < now - k·w``; the current one, ``k = 0``, also holds ``ts = now``):
    ``0.6745 * (x - median) / MAD`` (median and MAD of the baseline; when the MAD is 0,
    ``(x - median) / (1.2533 * mean absolute deviation)``; when that is 0 too, the score is 0
    for ``x == median`` and ±1e9 otherwise). ``series`` ``events`` counts events, ``revenue`` sums purchase revenue.
    No value while the baseline holds no data at all (a new project is not an anomaly).

A metric with no value never breaches. Untrusted input never reaches SQL as text: conditions
compile through :func:`avila.analytics.common.condition_expr`, aggregates come from an
allow-list and every value is a parameter.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Literal

import numpy as np
from msgspec import Meta, Struct

from avila.analytics.common import condition_expr, events_source, fragments
from avila.industry40.anomaly import robust_zscores
from avila.ingest.validation import epoch_us
from avila.schemas.analytics import EventCondition, MatchMode
from avila.storage.base import Store

#: Windows of history an anomaly score compares the current window with.
BASELINE_WINDOWS = 24
#: Longest window a rule may watch (30 days).
MAX_WINDOW_SECONDS = 30 * 86_400

Op = Literal[">", "<", ">=", "<="]
OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}
Name = Annotated[str, Meta(min_length=1, max_length=200)]
Url = Annotated[str, Meta(min_length=8, max_length=2000, pattern=r"^https?://[^\s]+$")]
Email = Annotated[str, Meta(max_length=320, pattern=r"^[^@\s<>,;]+@[^@\s<>,;]+$")]


class EventCountMetric(Struct, tag_field="kind", tag="event_count", forbid_unknown_fields=True):
    condition_type: str
    condition_value: Annotated[str, Meta(max_length=2000)] = ""
    match: MatchMode = "exact"


class ConversionRateMetric(
    Struct, tag_field="kind", tag="conversion_rate", forbid_unknown_fields=True
):
    steps: Annotated[list[EventCondition], Meta(min_length=2, max_length=2)]


class TelemetryMetric(Struct, tag_field="kind", tag="telemetry", forbid_unknown_fields=True):
    metric: Annotated[str, Meta(min_length=1, max_length=100)]
    aggregate: Literal["max", "min", "avg", "last"] = "max"
    device_id: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    device_type: Annotated[str, Meta(min_length=1, max_length=200)] | None = None


class AnomalyMetric(Struct, tag_field="kind", tag="anomaly", forbid_unknown_fields=True):
    series: Literal["events", "revenue"] = "events"


Metric = EventCountMetric | ConversionRateMetric | TelemetryMetric | AnomalyMetric


class Condition(Struct, forbid_unknown_fields=True):
    op: Op
    threshold: float


class WebhookDestination(Struct, tag_field="type", tag="webhook", forbid_unknown_fields=True):
    url: Url
    #: HMAC-SHA256 key; the body is signed in ``X-Avila-Signature: sha256=<hex>`` when set.
    secret: Annotated[str, Meta(min_length=1, max_length=500)] | None = None


class SlackDestination(Struct, tag_field="type", tag="slack", forbid_unknown_fields=True):
    url: Url


class EmailDestination(Struct, tag_field="type", tag="email", forbid_unknown_fields=True):
    to: Annotated[list[Email], Meta(min_length=1, max_length=50)]


Destination = WebhookDestination | SlackDestination | EmailDestination


class RuleSpec(Struct, forbid_unknown_fields=True):
    """The body of ``POST /api/v1/alerts/rules``."""

    name: Name
    metric: Metric
    condition: Condition
    window_seconds: Annotated[int, Meta(ge=1, le=MAX_WINDOW_SECONDS)]
    destinations: Annotated[list[Destination], Meta(max_length=20)]
    #: After a firing, the rule stays quiet this long even while it still breaches; default
    #: ``window_seconds`` (one breaching value stays in the window that long: one alert).
    cooldown_seconds: Annotated[int, Meta(ge=0, le=MAX_WINDOW_SECONDS)] | None = None

    @property
    def cooldown(self) -> int:
        return self.window_seconds if self.cooldown_seconds is None else self.cooldown_seconds


class PreviewSpec(Struct, forbid_unknown_fields=True):
    """The body of ``POST /api/v1/alerts/evaluate``: a metric's value now (or ``at``)."""

    metric: Metric
    window_seconds: Annotated[int, Meta(ge=1, le=MAX_WINDOW_SECONDS)]
    condition: Condition | None = None
    #: The window's end, RFC 3339; default now.
    at: datetime | None = None


class Rule(Struct, kw_only=True):
    """A stored rule of one project."""

    id: str
    project_id: str
    spec: RuleSpec
    created_at: datetime


def breaches(condition: Condition, value: float | None) -> bool:
    """Whether ``value op threshold`` holds; a missing value never breaches."""
    return value is not None and OPS[condition.op](value, condition.threshold)


def check_metric(store: Store, metric: Metric) -> None:
    """Semantic checks the schema cannot express (unknown event types, bad regexes ...); raises
    :class:`~avila.errors.ValidationFailed` with the field path."""
    if isinstance(metric, EventCountMetric):
        condition_expr(store, _as_condition(metric), "metric")
    elif isinstance(metric, ConversionRateMetric):
        for i, step in enumerate(metric.steps):
            condition_expr(store, step, f"metric.steps[{i}]")


def _as_condition(metric: EventCountMetric) -> EventCondition:
    return EventCondition(metric.condition_type, metric.condition_value, metric.match)


def evaluate(
    store: Store, project_id: str, metric: Metric, window_seconds: int, now: datetime
) -> float | None:
    """The value of ``metric`` over the window of ``window_seconds`` ending at ``now`` (naive
    UTC); blocking."""
    since = now - timedelta(seconds=window_seconds)
    if isinstance(metric, EventCountMetric):
        return _event_count(store, project_id, metric, since, now)
    if isinstance(metric, ConversionRateMetric):
        return _conversion_rate(store, project_id, metric, since, now)
    if isinstance(metric, TelemetryMetric):
        return _telemetry(store, project_id, metric, since, now)
    return _anomaly(store, project_id, metric, now, window_seconds)


def _event_count(
    store: Store, project_id: str, metric: EventCountMetric, since: datetime, now: datetime
) -> float:
    cond = condition_expr(store, _as_condition(metric), "metric")
    table = fragments(store)["events_unstitched"]
    rows = store.query(
        f"SELECT count(*) FROM {table} WHERE project_id = ? AND ts BETWEEN ? AND ? AND {cond.sql}",
        [project_id, since, now, *cond.params],
    )
    return float(rows[0][0])


def _conversion_rate(
    store: Store, project_id: str, metric: ConversionRateMetric, since: datetime, now: datetime
) -> float | None:
    first = condition_expr(store, metric.steps[0], "metric.steps[0]")
    second = condition_expr(store, metric.steps[1], "metric.steps[1]")
    source = events_source(store, project_id)
    # A user converts when their latest step-2 event in the window is at or after their first
    # step-1 event: the same as "some step-2 event at or after it". ``c.n > 0`` marks a user
    # with step-2 events: without a match ClickHouse fills ``c.t1`` with 1970-01-01, not NULL
    # (avila.storage.clickhouse.analytics_sql), which is ">= t0" for a t0 at or before 1970.
    rows = store.query(
        f"WITH s AS (SELECT user_id, min(ts) AS t0 FROM {source}"
        f" WHERE project_id = ? AND ts BETWEEN ? AND ? AND {first.sql} GROUP BY user_id),"
        f" c AS (SELECT user_id, max(ts) AS t1, count(*) AS n FROM {source}"
        f" WHERE project_id = ? AND ts BETWEEN ? AND ? AND {second.sql} GROUP BY user_id)"
        " SELECT count(*), count(*) FILTER (WHERE c.n > 0 AND c.t1 >= s.t0)"
        " FROM s LEFT JOIN c ON c.user_id = s.user_id",
        [project_id, since, now, *first.params, project_id, since, now, *second.params],
    )
    started, converted = int(rows[0][0]), int(rows[0][1])
    return converted / started if started else None


_AGGREGATES = {
    "max": "max(value)",
    "min": "min(value)",
    "avg": "avg(value)",
    "last": "arg_max(value, ts)",
}


def _telemetry(
    store: Store, project_id: str, metric: TelemetryMetric, since: datetime, now: datetime
) -> float | None:
    where = ["project_id = ?", "metric = ?", "ts BETWEEN ? AND ?"]
    params: list[object] = [project_id, metric.metric, since, now]
    if metric.device_id is not None:
        where.append("device_id = ?")
        params.append(metric.device_id)
    if metric.device_type is not None:
        where.append(
            "device_id IN (SELECT device_id FROM devices WHERE project_id = ? AND device_type = ?)"
        )
        params += [project_id, metric.device_type]
    rows = store.query(
        f"SELECT {_AGGREGATES[metric.aggregate]} FROM telemetry WHERE {' AND '.join(where)}",
        params,
    )
    value = rows[0][0] if rows else None
    return None if value is None else float(value)


def anomaly_series(
    store: Store, project_id: str, series: str, now: datetime, window_seconds: int
) -> list[float]:
    """Per window, oldest first, the ``series`` value of the :data:`BASELINE_WINDOWS` windows
    before the current one and then the current one."""
    width_us = window_seconds * 1_000_000
    since = now - timedelta(seconds=window_seconds * (BASELINE_WINDOWS + 1))
    value = "count(*)" if series == "events" else "coalesce(sum(revenue), 0)"
    only = "" if series == "events" else " AND event_type = 'purchase'"
    frag = fragments(store)
    table = frag["events_unstitched"]
    age_us = f"(? - {frag['epoch_us'].format('ts')} - 1)"
    # Window 0 is the current one, k the k-th before it (ts = now gives -1: window 0 too).
    rows = store.query(
        f"SELECT greatest(0, {frag['int_div'].format(age_us, '?')}) AS k, {value}"
        f" FROM {table} WHERE project_id = ? AND ts BETWEEN ? AND ?{only} GROUP BY k",
        [epoch_us(now), width_us, project_id, since, now],
    )
    values = [0.0] * (BASELINE_WINDOWS + 1)
    for k, v in rows:
        if 0 <= int(k) <= BASELINE_WINDOWS:
            values[BASELINE_WINDOWS - int(k)] += float(v)
    return values


def _anomaly(
    store: Store, project_id: str, metric: AnomalyMetric, now: datetime, window_seconds: int
) -> float | None:
    values = anomaly_series(store, project_id, metric.series, now, window_seconds)
    if not any(values[:-1]):
        return None
    scores, _, _ = robust_zscores(np.asarray(values), window=BASELINE_WINDOWS)
    return float(scores[-1])
