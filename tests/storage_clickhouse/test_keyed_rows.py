"""The keyed small-table writes every caller uses instead of dialect SQL (twins, alarm rules,
devices, experiments, alert rules, GDPR erase), on DuckDB and on ClickHouse (chdb; and a live
server with CLICKHOUSE_URL): the same calls give the same rows and the same counts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from avila.storage.base import Store
from avila.storage.duckdb.store import DuckDBStore
from tests.storage_clickhouse.conftest import open_clickhouse

KINDS = ["duckdb", "chdb"] + (["live"] if os.environ.get("CLICKHOUSE_URL") else [])
T1, T2, T3 = datetime(2026, 1, 1, 0, 0, 0, 1), datetime(2026, 2, 1), datetime(2026, 3, 1, 12)


@pytest.fixture(params=KINDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    store: Store
    if request.param == "duckdb":
        store = DuckDBStore(tmp_path / "s.duckdb")
    else:
        store = open_clickhouse(request.param, tmp_path)
    try:
        yield store
    finally:
        if request.param == "live":
            store.execute(f"DROP DATABASE IF EXISTS `{store.target.database}`")  # type: ignore[attr-defined]
        store.close()


def twin(version: int, doc: str, at: datetime = T1) -> dict[str, object]:
    return {
        "project_id": "p",
        "device_id": "d'1",
        "desired": doc,
        "version": version,
        "updated_at": at,
    }


def test_insert_new_inserts_once(any_store: Store) -> None:
    key = ("project_id", "device_id")
    assert any_store.insert_new("twin_desired", key, twin(1, '{"a": 1}'))
    assert not any_store.insert_new("twin_desired", key, twin(1, '{"a": 2}'))
    assert any_store.insert_new("twin_desired", key, {**twin(1, "{}"), "project_id": "q"})
    assert any_store.query(
        "SELECT project_id, desired, version, updated_at FROM twin_desired ORDER BY project_id"
    ) == [("p", '{"a": 1}', 1, T1), ("q", "{}", 1, T1)]


def test_update_rows_is_a_compare_and_set(any_store: Store) -> None:
    key = {"project_id": "p", "device_id": "d'1"}
    any_store.insert_new("twin_desired", tuple(key), twin(1, "v1"))
    changed = any_store.update_rows(
        "twin_desired",
        key,
        {"desired": "v2", "version": 2, "updated_at": T2},
        expect={"version": 1},
    )
    assert changed == 1
    stale = any_store.update_rows(
        "twin_desired",
        key,
        {"desired": "v2b", "version": 2, "updated_at": T3},
        expect={"version": 1},
    )
    assert stale == 0
    assert any_store.query("SELECT desired, version, updated_at FROM twin_desired") == [
        ("v2", 2, T2)
    ]
    assert any_store.update_rows("twin_desired", {"project_id": "nobody"}, {"desired": "x"}) == 0


def test_upsert_replaces_by_key(any_store: Store) -> None:
    key = ("project_id", "device_type")
    any_store.upsert(
        "alarm_rules",
        key,
        {"project_id": "p", "device_type": "cnc", "rules": "[1]", "updated_at": T1},
    )
    any_store.upsert(
        "alarm_rules",
        key,
        {"project_id": "p", "device_type": "cnc", "rules": "[2]", "updated_at": T2},
    )
    any_store.upsert(
        "alarm_rules",
        key,
        {"project_id": "p", "device_type": "pump", "rules": "[3]", "updated_at": T3},
    )
    assert any_store.query(
        "SELECT device_type, rules, updated_at FROM alarm_rules ORDER BY device_type"
    ) == [("cnc", "[2]", T2), ("pump", "[3]", T3)]


def _device(i: int) -> dict[str, object]:
    return {
        "project_id": "p",
        "device_id": f"m{i}",
        "device_type": "cnc",
        "attributes": '{"site": "ü"}',
        "first_seen": T1,
        "last_seen": T1,
    }


def test_update_many_and_update_rows_on_devices(any_store: Store) -> None:
    for i in range(3):
        assert any_store.insert_new("devices", ("project_id", "device_id"), _device(i))
    changed = any_store.update_many(
        "devices",
        ("project_id", "device_id"),
        [
            {"project_id": "p", "device_id": "m0", "first_seen": T1, "last_seen": T3},
            {"project_id": "p", "device_id": "m2", "first_seen": T2, "last_seen": T3},
            {"project_id": "other", "device_id": "m1", "first_seen": T2, "last_seen": T3},
        ],
    )
    assert changed == 2
    any_store.update_rows("devices", {"project_id": "p", "device_id": "m1"}, {"attributes": "{}"})
    assert any_store.query(
        "SELECT device_id, device_type, attributes, first_seen, last_seen FROM devices"
        " ORDER BY device_id"
    ) == [
        ("m0", "cnc", '{"site": "ü"}', T1, T3),
        ("m1", "cnc", "{}", T1, T1),
        ("m2", "cnc", '{"site": "ü"}', T2, T3),
    ]


def test_delete_rows_counts_and_deletes_only_matches(any_store: Store) -> None:
    for rule in ("r1", "r2", "r3"):
        any_store.execute(
            "INSERT INTO alert_rules VALUES (?, ?, ?, ?, ?)", ["p", rule, "n", "{}", T1]
        )
    any_store.execute("INSERT INTO alert_rules VALUES (?, ?, ?, ?, ?)", ["q", "r1", "n", "{}", T1])
    assert (
        any_store.delete_rows("alert_rules", {"project_id": "p", "rule_id": ["r1", "r3", "zz"]})
        == 2
    )
    assert any_store.delete_rows("alert_rules", {"project_id": "p", "rule_id": "r1"}) == 0
    assert any_store.delete_rows("alert_rules", {"project_id": "p", "rule_id": []}) == 0
    assert any_store.query("SELECT project_id, rule_id FROM alert_rules ORDER BY 1, 2") == [
        ("p", "r2"),
        ("q", "r1"),
    ]


@pytest.mark.parametrize(
    ("table", "names"),
    [("alert_rules; DROP TABLE events", ["project_id"]), ("alert_rules", ["rule_id = 1 OR 1"])],
)
def test_names_outside_the_catalog_are_refused(
    any_store: Store, table: str, names: list[str]
) -> None:
    with pytest.raises(ValueError):
        any_store.delete_rows(table, dict.fromkeys(names, "x"))
    with pytest.raises(ValueError):
        any_store.upsert(table, names, dict.fromkeys(names, "x"))
