"""The rollup rows a write appends (Arrow, :func:`avila.storage.rollups.partials`) are exactly
the rows of the SQL aggregation the readers, the migration and erasure use (``DAILY_FROM``),
so the rollups stay exact whichever side computed them: same keys, same counts, the same
DECIMAL revenue (an erase's negated sums must cancel a write's to the last millionth)."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from avila.storage import rollups
from avila.storage.schema import EVENT_SCHEMA

T0 = datetime(2026, 3, 28, 23, 0)


def _events(seed: int, n: int) -> pa.Table:
    rng = random.Random(seed)
    halves = [5e-7, 2.5e-6, -5e-7, 1.0000005, 123.4567895, 0.1, 0.7, 1e15, -1e15]
    columns: dict[str, list[Any]] = {f.name: [] for f in EVENT_SCHEMA}
    for i in range(n):
        etype = rng.choice(["page_view", "purchase", "checkout", "click", "custom"])
        revenue = None
        if etype in ("purchase", "checkout"):
            revenue = rng.choice(
                [
                    rng.choice(halves),
                    round(rng.uniform(-50, 5000), rng.randint(0, 9)),
                    rng.uniform(-1e15, 1e15),
                    rng.randint(-(10**9), 10**9) / 2e6,  # exact halves of a millionth
                    None,
                    1e33,  # beyond DECIMAL(38, 6): left out of every rollup
                    -1e33,
                    float("nan"),
                    float("inf"),
                ]
            )
        ts = T0 + timedelta(minutes=rng.randint(-3000, 3000))
        if i % 97 == 0:
            ts = datetime(1969, 12, 31, 23, 59, 59, 999999)  # before the epoch: floor to a day
        row = {
            "project_id": rng.choice(["p1", "p2", "ünï"]),
            "event_id": f"e{i}",
            "user_id": rng.choice(["u1", "u2", "ユーザー", "u'3", ""]),
            "session_id": None,
            "ts": ts,
            "received_at": T0,
            "event_type": etype,
            "url": rng.choice([None, "/a", "/b?q=1", "/ç"]) if etype != "purchase" else None,
            "referrer": rng.choice([None, "https://x.example/", ""]),
            "revenue": revenue,
            "country": rng.choice([None, "BR", "DE"]),
            "device_type": rng.choice([None, "Desktop", "Mobile"]),
        }
        for name, values in columns.items():
            values.append(row.get(name))
    return pa.Table.from_pydict(columns, schema=EVENT_SCHEMA)


def _sql_rows(con: duckdb.DuckDBPyConnection, events: pa.Table) -> tuple[list[Any], list[Any]]:
    con.register("src_rows", events)
    src = rollups._representable("src_rows")
    daily = con.execute(f"SELECT * FROM ({rollups.DAILY_FROM.format(src=src)})").fetchall()
    users = con.execute(rollups._USER_DAYS_FROM.format(src=src)).fetchall()
    con.unregister("src_rows")
    return daily, users


def _arrow_rows(con: duckdb.DuckDBPyConnection, found: rollups.Partials) -> tuple[list[Any], ...]:
    # Read back through DuckDB, as the tables will hold them (DATE, DECIMAL(38, 6)).
    con.register("arrow_daily", found.daily)
    con.register("arrow_users", found.user_days)
    return (
        con.execute("SELECT * FROM arrow_daily").fetchall(),
        con.execute("SELECT * FROM arrow_users").fetchall(),
    )


def _key(row: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(repr(v) for v in row)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_arrow_partials_equal_the_sql_aggregation(seed: int) -> None:
    events = _events(seed, 3000)
    con = duckdb.connect()
    expected_daily, expected_users = _sql_rows(con, events)
    found = rollups.partials(events)
    assert found.daily.schema == rollups.DAILY_SCHEMA
    assert found.user_days.schema == rollups.USER_DAYS_SCHEMA
    got_daily, got_users = _arrow_rows(con, found)
    assert sorted(got_daily, key=_key) == sorted(expected_daily, key=_key)
    assert sorted(got_users, key=_key) == sorted(expected_users, key=_key)
    # the data really had the edge cases: revenue sums, excluded rows, a pre-epoch day
    assert any(r[6] is not None and r[6] != 0 for r in got_daily)
    assert sum(r[5] for r in got_daily if r[3] == "type") < events.num_rows
    assert any(r[1].year == 1969 for r in got_daily)


def test_revenue_beyond_the_exact_range_is_left_to_sql() -> None:
    events = _events(5, 500)
    assert rollups.partials(events) is not None
    revenue = events.column("revenue").to_pylist()
    revenue[3] = 3e31  # representable in the rollups, but DuckDB casts it approximately
    events = events.set_column(
        events.schema.get_field_index("revenue"), "revenue", pa.array(revenue, pa.float64())
    )
    assert rollups.partials(events) is None


def test_no_revenue_and_no_urls() -> None:
    events = _events(4, 200)
    events = events.set_column(
        events.schema.get_field_index("revenue"), "revenue", pa.nulls(200, pa.float64())
    )
    events = events.set_column(
        events.schema.get_field_index("url"), "url", pa.nulls(200, pa.string())
    )
    con = duckdb.connect()
    expected_daily, _ = _sql_rows(con, events)
    got_daily, _ = _arrow_rows(con, rollups.partials(events))
    assert sorted(got_daily, key=_key) == sorted(expected_daily, key=_key)
    assert not any(r[3] == "url" for r in got_daily)


def test_revenue_micros_round_like_duckdb() -> None:
    rng = random.Random(7)
    values = [5e-7, -5e-7, 2.5e-6, -2.5e-6, 1.0000005, 4.9999999e-7, 0.0, -0.0, 1e15, -1e15]
    values += [2.0**52 / 1e6 + k for k in range(-3, 4)]
    values += [math.nextafter(rollups.EXACT_REVENUE, 0) - k * 0.125 for k in range(50)]
    values += [rng.uniform(1e14, 1e15) * rng.choice([1, -1]) for _ in range(5000)]
    for _ in range(50_000):
        values.append(
            rng.choice(
                [
                    rng.uniform(-1, 1),
                    rng.uniform(-1e15, 1e15),
                    rng.randint(-(10**12), 10**12) / 2e6,
                    rng.randint(-(10**12), 10**12) / 1e6 + 5e-7,
                ]
            )
        )
    con = duckdb.connect()
    con.register("doubles", pa.table({"v": pa.array(values, pa.float64())}))
    cast = con.execute(
        f"SELECT {rollups.REVENUE_DECIMAL} FROM (SELECT v AS revenue FROM doubles)"
    ).fetchall()
    for value, (decimal,) in zip(values, cast, strict=True):
        assert Decimal(rollups._micros(value)).scaleb(-6) == decimal, value
    assert not math.isnan(sum(rollups._micros(v) for v in values))


def test_revenue_decimals_are_exact_to_the_millionth() -> None:
    """A plain ``::DECIMAL(38, 6)`` is computed from the double ``revenue * 1e6`` and is off by
    up to 0.07 near 1e15 (999999999999999.0 became 999999999999998.951424); the rollups'
    decimal is the double's value rounded to millionths (compared with Python's exact
    ``Decimal`` of the double), so a whole-day sum equals the exact sum."""
    rng = random.Random(3)
    values = [999999999999999.0, -999999999999998.0, 1e15, -1e15, 123.45, 0.01, -0.125]
    values += [float(rng.randint(-(10**15), 10**15)) for _ in range(2000)]
    values += [rng.randint(-(10**15), 10**15) / 100 for _ in range(2000)]
    values += [rng.uniform(-1e15, 1e15) for _ in range(2000)]
    con = duckdb.connect()
    con.register("doubles", pa.table({"revenue": pa.array(values, pa.float64())}))
    cast = con.execute(f"SELECT {rollups.REVENUE_DECIMAL} FROM doubles").fetchall()
    for value, (decimal,) in zip(values, cast, strict=True):
        exact = Decimal(value).quantize(Decimal("0.000001"))
        # the fraction's double product may round a tie the other way: at most one millionth
        assert abs(decimal - exact) <= Decimal("0.000001"), value
        if value == int(value):
            assert decimal == Decimal(int(value)), value


def test_a_day_python_cannot_hold_leaves_the_partials_to_sql(tmp_path: Any) -> None:
    """An event at 0000-12-31 (UTC) once made every loader round holding it fail, for good:
    its day became a Python date. Ingest now refuses such times; the loader's rollups also
    leave them to DuckDB's SQL, so a round written some other way still loads."""
    from avila.storage.duckdb.store import DuckDBStore

    events = _events(6, 50)
    year_zero = (datetime(1, 1, 1) - datetime(1970, 1, 1)) // timedelta(
        microseconds=1
    ) - 3_600_000_000
    ts = events.column("ts").cast(pa.int64()).to_pylist()
    ts[7] = year_zero
    events = events.set_column(
        events.schema.get_field_index("ts"), "ts", pa.array(ts, pa.int64()).cast(pa.timestamp("us"))
    )
    assert rollups.partials(events) is None
    assert rollups.partials(_events(6, 50)) is not None
    store = DuckDBStore(tmp_path / "zero.duckdb")
    try:
        store.commit_log_batch(10, events=events)
        assert store.query("SELECT count(*) FROM events") == [(50,)]
        assert store.query("SELECT year(min(day)) FROM rollup_daily") == [(0,)]
        represented = store.query(
            "SELECT count(*) FROM events WHERE revenue IS NULL OR abs(revenue) < 1e32"
        )
        rolled = store.query("SELECT sum(events) FROM rollup_daily WHERE kind = 'type'")
        assert rolled == represented
    finally:
        store.close()
