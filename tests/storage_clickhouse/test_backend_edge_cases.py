"""DuckDB and ClickHouse (chdb) agree on edge-case data the differential suites do not generate.

Each test loads the same rows into a real DuckDB file and a real chdb store and runs the real
report (or the SQL fragment the reports, ML and Industry 4.0 code use) on both. DuckDB, the
embedded default, is the reference where docs/analytics.md does not say more: a user moving to
ClickHouse must get the same numbers. Found by hunting, each case failed on ClickHouse before
its fix in src/avila/storage/clickhouse/ (the test names say what broke):

- regular expressions: ClickHouse compiles them with "." matching a newline;
- numbers in text compared with gt/gte/lt/lte: DuckDB's cast ignores surrounding white space and
  reads "1_000" as 1000, ClickHouse's did neither;
- JSON property paths with a "-" in a key (documented as allowed) were a ClickHouse error;
- time buckets (telemetry rollups, ML monitoring) before 2000-01-03 were a ClickHouse error,
  and day starts (ML features) outside 1970..2106 were clamped;
- datetime parameters before the year 1000 were read by ClickHouse as 2001 and later.

The last tests are guards: untrusted text in filters stays a value on ClickHouse (its
parameters are formatted client-side), and a GDPR erase of odd ids leaves both stores alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from avila import analytics as A
from avila.analytics.common import fragments
from avila.industry40 import records
from avila.ml.monitoring import metric_series
from avila.storage import Store
from avila.storage.schema import EVENT_COLUMN_NAMES, EVENT_SCHEMA
from avila.testing.backends import open_backend
from tests.analytics.backend_pair import both_stores, normal

P = "edge"
T0 = datetime(2024, 10, 26, 12)
SPAN = {"start_time": (T0 - timedelta(days=1)).isoformat(), "end_time": (T0 + timedelta(days=2)).isoformat()}  # fmt: skip
#: Text that numeric comparisons read as numbers (or not): DuckDB's TRY_CAST is the reference.
NUMBER_TEXTS = [" 3", "3 ", "\t7\n", "1_000", "1_2_3", "1e1_0", "1__0", "_1", "1_", "abc", "-0"]
ODD = ["x' OR '1'='1", "%", "_", "\\", "\\'", "{x:String}", "?", "%s", "$$", "’", "\r\n", "\x00"]


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pydict(
        {name: [r.get(name) for r in rows] for name in EVENT_COLUMN_NAMES}, schema=EVENT_SCHEMA
    )


def _row(
    n: int, user: str, ts: datetime, etype: str = "page_view", **fields: Any
) -> dict[str, Any]:
    row = {
        "project_id": P,
        "event_id": f"e{n}",
        "user_id": user,
        "ts": ts,
        "received_at": ts,
        "event_type": etype,
    }
    return row | fields


def _rows() -> list[dict[str, Any]]:
    rows = []
    urls = ["a\nb", "axb", "/ü", *ODD]
    for i, url in enumerate(urls):
        rows.append(_row(len(rows), f"u{i}", T0 + timedelta(minutes=i), url=url))
    for i, text in enumerate(NUMBER_TEXTS + ODD):
        props = {"n": text, "my-key": f"k{i % 3}", "x-1": {"a-b": i}}
        rows.append(
            _row(len(rows), f"v{i}", T0 + timedelta(hours=i), "custom", event_name=text,
                 data=json.dumps({"properties": props}), metadata=json.dumps({"my-src": text}))
        )  # fmt: skip
    # Clock resets: before 1970, and far in the past and future of ClickHouse's DateTime.
    for i, ts in enumerate([datetime(1969, 12, 31, 23, 59, 59, 999_999), datetime(1850, 5, 1, 12),
                            datetime(2200, 3, 1, 6), datetime(2, 6, 1), datetime(2002, 6, 1)]):  # fmt: skip
        rows.append(_row(len(rows), f"w{i}", ts))
    return rows


def _telemetry() -> pa.Table:
    """A device whose clock started at the epoch, then one in 1999, each for 20 minutes."""
    rows: list[tuple[datetime, str, float]] = []
    for base in (
        datetime(1970, 1, 1),
        datetime(1999, 12, 31, 23, 50),
        datetime(1969, 12, 31, 23, 50),
    ):
        for s in range(0, 1200, 10):
            ts = base + timedelta(seconds=s, microseconds=s % 3)
            rows.append((ts, "temperature", 20.0 + (s % 7)))
            rows.append((ts, "power_kw", [0.0, 3.5, 7.25][s % 3]))
            rows.append((ts, "energy_kwh", s / 100.0))
    return pa.table(
        {
            "project_id": [P] * len(rows),
            "device_id": ["m1"] * len(rows),
            "ts": pa.array([r[0] for r in rows], pa.timestamp("us")),
            "metric": [r[1] for r in rows],
            "value": [r[2] for r in rows],
            "received_at": pa.array([r[0] for r in rows], pa.timestamp("us")),
        }
    )


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Store]]:
    events, telemetry = _table(_rows()), _telemetry()

    def fill(store: Store) -> None:
        store.append_events(events)
        store.append_table("telemetry", telemetry)

    yield from both_stores(tmp_path_factory, fill)


def _both(stores: dict[str, Store], report: Any) -> Any:
    """The report's answer, the same on both stores."""
    ours, reference = normal(report(stores["chdb"])), normal(report(stores["duckdb"]))
    assert ours == reference
    return ours


def _events(stores: dict[str, Store], *filters: dict[str, Any]) -> int:
    answer = _both(stores, lambda s: A.overview(s, P, {**SPAN, "filters": list(filters)}))
    return int(answer["total_events"])


# -- regular expressions -------------------------------------------------------------------------


def test_regex_dot_does_not_match_a_newline(stores: dict[str, Store]) -> None:
    """url "a\\nb" and "axb": "^a.b$" matches only "axb" (RE2's default, DuckDB); ClickHouse
    matched both. A pattern's own (?s) still makes "." match the newline on both."""
    assert _events(stores, {"property": "url", "operator": "regex", "value": "^a.b$"}) == 1
    assert _events(stores, {"property": "url", "operator": "regex", "value": "(?s)^a.b$"}) == 2
    steps = [
        {"condition_type": "page_view", "condition_value": "^a.b$", "match": "regex"},
        {"condition_type": "page_view", "condition_value": ""},
    ]
    funnel = _both(stores, lambda s: A.funnel(s, P, {**SPAN, "steps": steps}))
    assert funnel["total_users"] == 1


# -- numbers written as text -----------------------------------------------------------------------


@pytest.mark.parametrize("op", ["gt", "gte", "lt", "lte"])
@pytest.mark.parametrize("prop", ["properties.n", "event_name", "metadata.my-src"])
def test_numbers_in_text_are_read_as_duckdb_reads_them(
    stores: dict[str, Store], op: str, prop: str
) -> None:
    """Text like " 3", "\\t7\\n", "1_000", "1_2_3" is a number to DuckDB's cast (white space
    around, one "_" between digits); "1__0", "_1", "1_" are not. ClickHouse read only plain
    numbers."""
    counts = {v: _events(stores, {"property": prop, "operator": op, "value": v}) for v in (2, 7)}
    expected = {"gt": {2: 6, 7: 3}, "gte": {2: 6, 7: 4}, "lt": {2: 1, 7: 3}, "lte": {2: 1, 7: 4}}
    assert counts == expected[op]


# -- JSON property paths -----------------------------------------------------------------------------


def test_json_keys_with_a_hyphen_are_readable(stores: dict[str, Store]) -> None:
    """docs/analytics.md allows "-" in JSON path keys; ClickHouse's JSONPath parser refused
    ``$.properties.my-key`` (a 500 on every report filtering or breaking down by it)."""
    key = "event_type.data.properties.my-key"
    assert _events(stores, {"property": key, "operator": "eq", "value": "k1"}) == 8
    assert _events(stores, {"property": "properties.x-1.a-b", "operator": "gte", "value": 20}) == 3
    assert _events(stores, {"property": "metadata.my-src", "operator": "is_set"}) == 23
    trends = _both(stores, lambda s: A.trends(s, P, {**SPAN, "breakdown": key}))
    assert {s["breakdown_value"]: s["total"] for s in trends["series"]} == {
        "k0": 8, "k1": 8, "k2": 7, None: 15,
    }  # fmt: skip


# -- time: buckets, day starts, parameters -------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (datetime(1970, 1, 1), datetime(1970, 1, 1, 0, 20)),
        (datetime(1969, 12, 31, 23, 50), datetime(1970, 1, 1, 0, 10)),
        (datetime(1999, 12, 31, 23, 45), datetime(2000, 1, 1, 0, 15)),
    ],
)
def test_telemetry_rollups_before_2000(
    stores: dict[str, Store], start: datetime, end: datetime
) -> None:
    """A device whose clock reset to 1970 (or a 1999 replay): rolled-up series, thinned values
    and energy buckets. ClickHouse's toStartOfInterval refused a time before its origin,
    2000-01-03, so each was an error."""
    cases = [
        lambda s: records.series(s, P, "m1", None, start, end, "1m"),
        lambda s: records.values_of(s, P, "m1", "temperature", start, end, max_points=7),
        lambda s: records.energy_rows(s, P, "m1", start, end, bucket_us=300_000_000),
    ]
    for case in cases:
        assert _both(stores, case) not in ([], {}, None)


def test_ml_metric_series_before_2000(stores: dict[str, Store]) -> None:
    """The anomaly monitor's hourly event series over the events of 1969-12-31."""
    start, end = datetime(1969, 12, 31), datetime(1970, 1, 1, 2)

    def series(s: Store) -> Any:
        frame = metric_series(s, P, start, end)
        return {str(k): list(v) for k, v in frame.to_dict("list").items()}

    assert _both(stores, series)["events.all"][-3:] == [1.0, 0.0, 0.0]


def test_day_start_outside_1970_to_2106(stores: dict[str, Store]) -> None:
    """The ML features' UTC day of an event: ClickHouse's toStartOfDay returns a 32-bit
    DateTime, so 1969-12-31 became 1970-01-01 and 2200 became 2106."""

    def days(s: Store) -> list[tuple[Any, ...]]:
        day = fragments(s)["day_start"].format("ts")
        return s.query(f"SELECT user_id, {day} FROM events WHERE user_id LIKE 'w%' ORDER BY 1")

    assert _both(stores, days) == [
        ["w0", datetime(1969, 12, 31)],
        ["w1", datetime(1850, 5, 1)],
        ["w2", datetime(2200, 3, 1)],
        ["w3", datetime(2, 6, 1)],
        ["w4", datetime(2002, 6, 1)],
    ]


def test_time_range_before_the_year_1000(stores: dict[str, Store]) -> None:
    """A range in the years 1..4 counts the event of 0002-06-01, not that of 2002-06-01:
    clickhouse-connect wrote the bound datetime as "1-02-01 ...", which ClickHouse reads as
    2001-02-01."""
    span = {"start_time": "0001-02-01T00:00:00Z", "end_time": "0005-01-01T00:00:00Z"}
    answer = _both(stores, lambda s: A.overview(s, P, span))
    assert answer["total_events"] == 1
    assert answer["dau"] == [{"date": "0002-06-01", "users": 1}]


# -- guards: untrusted values, erase ---------------------------------------------------------------


@pytest.mark.parametrize("value", ODD)
def test_untrusted_filter_values_stay_values(stores: dict[str, Store], value: str) -> None:
    """Quotes, backslashes, "%", "?", "{x:String}" and NUL in filter values match exactly what
    they say on both backends (ClickHouse binds them client-side, escaped by
    clickhouse-connect; nothing is pasted into the SQL)."""
    assert _events(stores, {"property": "url", "operator": "eq", "value": value}) == 1
    assert _events(stores, {"property": "url", "operator": "in", "value": [value, "zz"]}) == 1
    assert _events(stores, {"property": "properties.n", "operator": "eq", "value": value}) == 1
    assert _events(stores, {"property": "url", "operator": "prefix", "value": value}) >= 1
    contains = _events(stores, {"property": "url", "operator": "contains", "value": value})
    assert contains == sum(value in u for u in ["a\nb", "axb", "/ü", *ODD])
    assert _events(stores, {"property": "event_name", "operator": "neq", "value": value}) == 37


def test_erasing_odd_ids_leaves_both_stores_alike(tmp_path: Path) -> None:
    """GDPR erase of ids with quotes, backslashes, NUL and astral characters, through a chain
    of identity links, then the same reports."""
    users = ["nul\x00id", "O'Brien", "a\\b", "🙂", "e\u0301", "%"]
    rows = [_row(i, u, T0 + timedelta(minutes=i), url=u) for i, u in enumerate(users * 3)]
    links = [("nul\x00id", "O'Brien"), ("O'Brien", "a\\b"), ("🙂", "e\u0301")]
    link_table = pa.table(
        {
            "project_id": [P] * len(links),
            "anonymous_id": [a for a, _ in links],
            "user_id": [b for _, b in links],
            "ts": pa.array([T0] * len(links), pa.timestamp("us")),
            "received_at": pa.array([T0] * len(links), pa.timestamp("us")),
            "source": ["test"] * len(links),
            "event_id": [f"l{i}" for i in range(len(links))],
        }
    )
    pair = {b: open_backend(b, tmp_path / b) for b in ("duckdb", "chdb")}
    try:
        for store in pair.values():
            store.append_events(_table(rows))
            store.append_table("identities", link_table)
        assert _both(pair, lambda s: A.erase_user(s, P, "a\\b")) == {"deleted_events": 9}
        assert _both(pair, lambda s: A.erase_user(s, P, "e\u0301")) == {"deleted_events": 6}
        left = _both(pair, lambda s: sorted(r[0] for r in s.query("SELECT user_id FROM events")))
        assert left == ["%"] * 3
        assert _both(pair, lambda s: A.overview(s, P, SPAN))["unique_users"] == 1
    finally:
        for store in pair.values():
            store.close()
