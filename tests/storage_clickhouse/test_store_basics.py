"""The ClickHouse store's Store interface on chdb (and a live server with CLICKHOUSE_URL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from avila.storage.clickhouse.store import ClickHouseStore
from avila.storage.schema import EVENT_COLUMN_NAMES, EVENT_SCHEMA, columns_to_arrow

EPOCH = datetime(1970, 1, 1)


def us(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


def events(rows: list[dict[str, object]]) -> pa.Table:
    cols: dict[str, list[object]] = {n: [] for n in EVENT_COLUMN_NAMES}
    for row in rows:
        for name in EVENT_COLUMN_NAMES:
            cols[name].append(row.get(name))
    return columns_to_arrow([cols])


T0 = datetime(2026, 3, 31, 23, 59, 59, 999_999)  # month edge: two partitions


def sample() -> pa.Table:
    return events(
        [
            {
                "project_id": "p",
                "event_id": f"e{i}",
                "user_id": ["ü-ser", "u'2", "u%3"][i % 3],
                "ts": us(T0 + timedelta(microseconds=i)),
                "received_at": us(T0),
                "event_type": "purchase" if i % 2 else "page_view",
                "revenue": 1e300 if i == 3 else (None if i % 2 == 0 else 9.99),
                "data": '{"k": "v\\u00e9"}',
            }
            for i in range(6)
        ]
    )


def test_append_and_read_back_every_form(store: ClickHouseStore) -> None:
    table = sample()
    store.append_events(table)
    got = store.query_arrow("SELECT * FROM events ORDER BY ts")
    assert got.column_names == list(EVENT_COLUMN_NAMES)
    # Same values and the same Arrow types as written (naive UTC microsecond timestamps).
    assert got.cast(EVENT_SCHEMA).equals(table)
    assert got.schema.field("ts").type == pa.timestamp("us")
    rows = store.query(
        "SELECT user_id, ts, revenue FROM events WHERE ts >= ? AND user_id = ? ORDER BY ts",
        [T0 + timedelta(microseconds=1), "u'2"],
    )
    assert rows == [
        ("u'2", T0 + timedelta(microseconds=1), 9.99),
        ("u'2", T0 + timedelta(microseconds=4), None),
    ]
    # An aware parameter is the same instant as naive UTC.
    aware = (T0 + timedelta(microseconds=5)).replace(tzinfo=UTC)
    assert store.query("SELECT count() FROM events WHERE ts >= ?", [aware]) == [(1,)]
    batches = list(store.query_batches("SELECT event_id FROM events ORDER BY event_id", None, 2))
    assert sum(b.num_rows for b in batches) == 6
    assert sorted(store.recent_event_keys(T0)) == [("p", f"e{i}") for i in range(6)]
    assert list(store.recent_event_keys(T0 + timedelta(microseconds=1))) == []


@pytest.mark.parametrize(
    "value", ["it's", "back\\slash", "100%", "?", "'; DROP TABLE events; --", "ünï", "\x00x"]
)
def test_parameters_are_values_never_sql(store: ClickHouseStore, value: str) -> None:
    assert store.query("SELECT ?, '?', '%', ?", [value, 7]) == [(value, "?", "%", 7)]
    assert store.query("SELECT count() FROM events") == [(0,)]


def test_literal_percent_and_question_mark_without_parameters(store: ClickHouseStore) -> None:
    assert store.query("SELECT '100%', '?' -- a ? in a comment\n") == [("100%", "?")]


def test_append_table_checks_names_against_the_catalog(store: ClickHouseStore) -> None:
    msgs = pa.table(
        {
            "project_id": ["p"],
            "message_id": ["m1"],
            "received_at": pa.array([us(T0)], pa.int64()).cast(pa.timestamp("us")),
        }
    )
    store.append_table("telemetry_messages", msgs)
    assert store.query("SELECT message_id, received_at FROM telemetry_messages") == [("m1", T0)]
    with pytest.raises(ValueError, match="no table"):
        store.append_table("nope; DROP TABLE events", msgs)
    with pytest.raises(ValueError, match="no columns"):
        store.append_table("telemetry_messages", msgs.append_column("evil", pa.array([1])))
    with pytest.raises(ValueError):
        store.append_table("events", sample())


def test_ping_and_close(store: ClickHouseStore) -> None:
    store.ping()


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT ? , '?'", "SELECT %s , '?'"),
        ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', %s"),
        ("SELECT 'a\\' ?', ?", "SELECT 'a\\' ?', %s"),
        ('SELECT "col?" FROM t WHERE x = ?', 'SELECT "col?" FROM t WHERE x = %s'),
        ("SELECT `a?b` -- ? 50%\n, ?", "SELECT `a?b` -- ? 50%%\n, %s"),
        ("SELECT /* ? */ 5 % 2, ?", "SELECT /* ? */ 5 %% 2, %s"),
        ("SELECT x LIKE '%?%' AND y = ?", "SELECT x LIKE '%%?%%' AND y = %s"),
    ],
)
def test_placeholders_are_translated_outside_quotes_and_comments(sql: str, expected: str) -> None:
    from avila.storage.clickhouse.params import translate

    assert translate(sql) == expected
