"""A deterministic plant for the Industry 4.0 endpoints, written through the telemetry path.

One site (``plant-1``), ``lines`` lines of ``machines`` machines. Each machine ``L<l>-M<m>``
(type ``cnc``; attributes site, line, ``ideal_cycle_time_ms``) reports every ``interval_s``:
``state`` (see :mod:`avila.industry40.records`), ``units_good``, ``units_rejected``,
``power_kw`` and a cumulative ``energy_kwh``. Its vibration sensor ``L<l>-M<m>-VIB`` (type
``vibration_sensor``, attribute ``machine``) reports ``vibration_mm_s``, ``bearing_temp_c``.

* **Shifts**: two shifts, 06:00–22:00 UTC, Monday to Saturday, a 30-minute break at 12:00 and
  18:00 (planned stop, state 3, otherwise); each shift starts with 15 minutes of setup (4).
* **Degradation to failure**: vibration grows exponentially from ~2 mm/s with a per-machine
  rate while running; at 11 mm/s (the ``critical`` alarm limit the demo configures) the machine
  fails (state 0) for 2–6 h, is repaired and starts afresh. Bearing temperature follows
  vibration. The sensor reports only while its machine runs (sampling at operating speed).
* **Production**: while running, units come at the ideal cycle time slowed by 5–15 % and by
  minor stops (idle, state 2, ~2 % of minutes); the reject rate grows with wear.
* **Energy**: 18 kW running, 6 kW idle or setup, 1.5 kW down, 0.4 kW planned stop (± noise).

What the endpoints then say, and why they do not contradict each other: the twins are
``good`` (no alarm until 11 mm/s; minus 20 for ``stale`` once the data stop, and a sensor is
silent whenever its machine is stopped), while ``maintenance/predict`` gives each sensor's
time to 11 mm/s: every worn bearing fails within the 168 h horizon (``failure_probability``
≈ 1, which is true), risk ``high`` for 1–3 days left and ``critical`` under a day.

Same ``seed`` and ``end`` → same readings. Alarm rules (``vibration_sensor``: vibration max 11
critical, bearing temperature max 85 warning) are set too.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from avila.industry40.telemetry import Reading

FAILURE_VIBRATION = 11.0
SHIFT_START, SHIFT_END = 6, 22
BREAKS = ((12, 0), (18, 0))


@dataclass
class Machine:
    machine_id: str
    line: str
    ideal_cycle_ms: float
    slowdown: float
    wear_rate_per_h: float
    wear: float = 0.0  # log of vibration / baseline
    down_left_min: int = 0
    energy_kwh: float = 0.0
    registered: set[str] = field(default_factory=set)


def planned_state(at: datetime) -> int | None:
    """3 (planned stop) outside shifts and in breaks, 4 in the first 15 min of a shift, else
    None (production time)."""
    if at.weekday() == 6 or not SHIFT_START <= at.hour < SHIFT_END:
        return 3
    if any(at.hour == h and m <= at.minute < m + 30 for h, m in BREAKS):
        return 3
    if at.hour in (SHIFT_START, 14) and at.minute < 15:
        return 4
    return None


def build_plant(rng: np.random.Generator, lines: int, machines: int) -> list[Machine]:
    plant = []
    for line in range(1, lines + 1):
        for m in range(1, machines + 1):
            plant.append(
                Machine(
                    machine_id=f"L{line}-M{m}",
                    line=f"line-{line}",
                    ideal_cycle_ms=float(rng.choice([2000, 3000, 4000])),
                    slowdown=float(rng.uniform(0.05, 0.15)),
                    # reaches 11 mm/s from 2 mm/s (log ratio ~1.7) in 30-90 running hours
                    wear_rate_per_h=float(1.7 / rng.uniform(30, 90)),
                    wear=float(rng.uniform(0.0, 1.5)),
                )
            )
    return plant


def readings(
    seed: int, lines: int, machines: int, days: int, end: datetime, interval_s: int = 60
) -> Iterator[list[Reading]]:
    """Readings minute by minute (one list per simulated hour), oldest first."""
    rng = np.random.default_rng(seed)
    plant = build_plant(rng, lines, machines)
    start = end - timedelta(days=days)
    steps_per_hour = 3600 // interval_s
    total = days * 24 * steps_per_hour
    attrs = {m.machine_id: {"site": "plant-1", "line": m.line} for m in plant}
    hour: list[Reading] = []
    for step in range(total):
        at = start + timedelta(seconds=step * interval_s)
        for m in plant:
            hour.extend(_tick(rng, m, at, interval_s, attrs[m.machine_id]))
        if (step + 1) % steps_per_hour == 0:
            yield hour
            hour = []
    if hour:
        yield hour


def _tick(
    rng: np.random.Generator,
    m: Machine,
    at: datetime,
    interval_s: int,
    attrs: dict[str, str],
) -> list[Reading]:
    planned = planned_state(at)
    if m.down_left_min > 0:
        m.down_left_min -= 1
        state = 0
        if m.down_left_min == 0:
            m.wear = float(rng.uniform(0.0, 0.3))  # repaired: new bearing
    elif planned is not None:
        state = planned
    elif np.exp(m.wear) * 2.0 >= FAILURE_VIBRATION:
        state = 0
        m.down_left_min = int(rng.integers(120, 361))
    else:
        state = 2 if rng.random() < 0.02 else 1
    hours = interval_s / 3600
    if state == 1:
        m.wear += m.wear_rate_per_h * hours * float(rng.uniform(0.8, 1.2))
    good = rejected = 0
    if state == 1:
        cycle_s = m.ideal_cycle_ms / 1000 * (1 + m.slowdown)
        made = int(rng.poisson(interval_s / cycle_s))
        reject_p = 0.005 + 0.03 * max(0.0, m.wear - 1.0)
        rejected = int(rng.binomial(made, min(reject_p, 0.5)))
        good = made - rejected
    base_kw = {1: 18.0, 2: 6.0, 4: 6.0, 0: 1.5, 3: 0.4}[state]
    power = max(0.0, base_kw * float(rng.normal(1.0, 0.03)))
    m.energy_kwh += power * hours
    vibration = float(2.0 * np.exp(m.wear) * rng.normal(1.0, 0.04))
    temp = 35 + 4.5 * (vibration - 2.0) + float(rng.normal(0, 0.8))
    machine = Reading(
        device_id=m.machine_id,
        device_type="cnc",
        timestamp=at,
        metrics={
            "state": float(state),
            "units_good": float(good),
            "units_rejected": float(rejected),
            "power_kw": round(power, 3),
            "energy_kwh": round(m.energy_kwh, 4),
        },
        attributes=_first(m, m.machine_id, {**attrs, "ideal_cycle_time_ms": m.ideal_cycle_ms}),
    )
    sensor = Reading(
        device_id=f"{m.machine_id}-VIB",
        device_type="vibration_sensor",
        timestamp=at,
        metrics={"vibration_mm_s": round(float(vibration), 4), "bearing_temp_c": round(temp, 2)},
        attributes=_first(m, f"{m.machine_id}-VIB", {**attrs, "machine": m.machine_id})
        if state == 1
        else None,
    )
    # Condition monitoring samples at operating speed only: no vibration reading while stopped.
    return [machine, sensor] if state == 1 else [machine]


def _first(m: Machine, device_id: str, attributes: dict[str, object]) -> dict[str, object] | None:
    """Attributes on a device's first reading only (they register it)."""
    if device_id in m.registered:
        return None
    m.registered.add(device_id)
    return attributes


def default_end() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def run_factory_demo(
    storage_url: str,
    *,
    lines: int = 2,
    machines: int = 3,
    days: int = 7,
    seed: int = 42,
    end: datetime | None = None,
    project: str = "default",
) -> int:
    """Write the plant into the store at ``storage_url``; returns the number of readings
    (0 when the project already has devices: the demo never doubles data)."""
    from tqdm import tqdm

    from avila.industry40.alarms import AlarmRule, AlarmRules, AlarmService
    from avila.industry40.ingestion import TelemetryService
    from avila.live.bus import LiveBus
    from avila.storage import open_store

    store = open_store(storage_url, lock_wait=1.0)
    end_at = end or default_end()
    try:
        if store.query("SELECT count(*) FROM devices WHERE project_id = ?", [project])[0][0]:
            print(f"avila demo-factory: project {project!r} already has devices", file=sys.stderr)
            return 0
        service = TelemetryService(store)
        alarms = AlarmService(store, service.registry, LiveBus())
        alarms.set_rules(
            project,
            "vibration_sensor",
            AlarmRules(
                rules=[
                    AlarmRule(metric="vibration_mm_s", max=FAILURE_VIBRATION, severity="critical"),
                    AlarmRule(metric="bearing_temp_c", max=85.0, severity="warning"),
                ]
            ),
        )

        async def write() -> int:
            await service.start()
            stored = 0
            try:
                hours = days * 24
                with tqdm(total=hours, unit="h", desc="factory", file=sys.stderr) as bar:
                    batch: list[Reading] = []
                    for hour in readings(seed, lines, machines, days, end_at):
                        batch.extend(hour)
                        bar.update(1)
                        if len(batch) >= 5000:
                            stored += await _ingest(service, batch, project, end_at)
                            batch = []
                    if batch:
                        stored += await _ingest(service, batch, project, end_at)
            finally:
                await service.close()
            return stored

        stored = asyncio.run(write())
        print(
            f"avila demo-factory: {stored} readings stored (project {project}, {lines} lines x "
            f"{machines} machines, {days} days to {end_at:%Y-%m-%d %H:%M} UTC, seed {seed})",
            file=sys.stderr,
        )
        return stored
    finally:
        store.close()


async def _ingest(service: object, batch: list[Reading], project: str, now: datetime) -> int:
    result = await service.ingest_readings(  # type: ignore[attr-defined]
        list(enumerate(batch)), project, now=now
    )
    if result.rejected:
        raise RuntimeError(f"demo readings rejected: {result.rejected[:3]}")
    return int(result.accepted)
