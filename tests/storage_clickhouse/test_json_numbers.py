"""A JSON property reads as the same text on DuckDB and ClickHouse (chdb), for every kind of value.

Event properties are stored as JSON text; filters (``eq``, ``in``, ...) and breakdown labels read
a property by path as text. DuckDB (the embedded default) is the reference: its
``json_extract_string`` writes a JSON double with ``.0`` when it has no fraction (``10.0``,
``1e3`` as ``1000.0``), which ClickHouse's JSON functions leave off (``10``). Before the fix in
src/avila/storage/clickhouse/analytics_sql.py an ``eq`` filter on ``"10.0"`` found nothing on
ClickHouse and a breakdown said ``10`` where DuckDB said ``10.0``; ``1.5e-7`` read as
``1.5e-07``.

Each test loads the same events into a real DuckDB file and a real chdb store and runs the real
reports (or the property expression they use) on both. ``EXPECTED`` holds DuckDB's texts,
checked on DuckDB too, so an engine upgrade that changes them is caught here.
"""

from __future__ import annotations

import json
import math
import random
import struct
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from avila import analytics as A
from avila.analytics.common import property_expr
from avila.storage import Store
from avila.storage.schema import EVENT_COLUMN_NAMES, EVENT_SCHEMA
from tests.analytics.backend_pair import both_stores, normal

P = "jsonnum"
T0 = datetime(2024, 10, 26, 12)
SPAN = {"start_time": (T0 - timedelta(days=1)).isoformat(), "end_time": (T0 + timedelta(days=2)).isoformat()}  # fmt: skip

#: JSON value as written -> DuckDB's text for it (None: SQL NULL).
EXPECTED: dict[str, str | None] = {
    # integers: small, negative, the 64-bit limits and beyond (DuckDB keeps the digits)
    "10": "10",
    "-10": "-10",
    "0": "0",
    "-0": "0",
    "9223372036854775807": "9223372036854775807",
    "9223372036854775808": "9223372036854775808",
    "-9223372036854775808": "-9223372036854775808",
    "-9223372036854775809": "-9223372036854775809",
    "18446744073709551615": "18446744073709551615",
    "18446744073709551616": "18446744073709551616",
    "123456789012345678901234567890": "123456789012345678901234567890",
    # floats, with and without a fraction
    "10.0": "10.0",
    "10.5": "10.5",
    "-2.50": "-2.5",
    "100.0": "100.0",
    "1e3": "1000.0",
    "1E3": "1000.0",
    "1e+3": "1000.0",
    "-1e3": "-1000.0",
    "1.5e-7": "1.5e-7",
    "1e-7": "1e-7",
    "1e-6": "0.000001",
    "1.0e-5": "0.00001",
    "0.1": "0.1",
    "0.30000000000000004": "0.30000000000000004",
    "-0.0": "-0.0",
    "0.0": "0.0",
    "1e-400": "0.0",
    "123456789.0": "123456789.0",
    "12345678901234567.0": "12345678901234568.0",
    "1e20": "100000000000000000000.0",
    "1e21": "1e21",
    "-1e21": "-1e21",
    "1e308": "1e308",
    "1.7976931348623157e308": "1.7976931348623157e308",
    "2.5e-308": "2.5e-308",
    "5e-324": "5e-324",
    "4.9e-324": "5e-324",
    # strings (including ones that look like numbers), booleans, null
    '"10"': "10",
    '"10.0"': "10.0",
    '"1e3"': "1e3",
    '""': "",
    '"ü€😀"': "ü€😀",
    '"\\u00fc"': "ü",
    '"a\\"b\\\\c"': 'a"b\\c',
    '"line\\nbreak"': "line\nbreak",
    "true": "true",
    "false": "false",
    "null": None,
    # objects and arrays without floats (see docs/scale-out.md for those with floats)
    '{"a": 1, "b": [true, null, "s"], "c": {}}': '{"a":1,"b":[true,null,"s"],"c":{}}',
    "[]": "[]",
    "{}": "{}",
    '["ü", "a/b", -5]': '["ü","a/b",-5]',
}


def _random_doubles(n: int) -> list[str]:
    """Shortest round-trip texts of doubles of every magnitude, and integral doubles."""
    rnd = random.Random(20261201)
    out: set[str] = set()
    while len(out) < n:
        f = struct.unpack("d", rnd.getrandbits(64).to_bytes(8, "little"))[0]
        if math.isfinite(f):
            out.add(repr(f))
        out.add(repr(float(rnd.randint(-(10 ** rnd.randint(0, 22)), 10 ** rnd.randint(0, 22)))))
        out.add(repr(rnd.random() * 10 ** rnd.randint(-9, 24)))
        out.add(f"{rnd.randint(1, 99)}e{rnd.randint(-330, 310)}")
    return sorted(v for v in out if math.isfinite(float(v)))


RANDOM = _random_doubles(400)


def _row(i: int, data: str | None) -> dict[str, Any]:
    ts = T0 + timedelta(seconds=i)
    return {
        "project_id": P, "event_id": f"e{i}", "user_id": f"u{i}", "ts": ts, "received_at": ts,
        "event_type": "custom", "event_name": "n", "data": data,
    }  # fmt: skip


def _rows() -> list[dict[str, Any]]:
    """One event per value, at ``properties.v`` and nested at ``properties.n.my-key.v``
    (metadata and context too); then events without the key, with a null parent, none at all."""
    rows = []
    for value in [*EXPECTED, *RANDOM]:
        data = '{"properties": {"v": ' + value + ', "n": {"my-key": {"v": ' + value + "}}}}"
        row = _row(len(rows), data)
        row["metadata"] = '{"v": ' + value + "}"
        row["context"] = '{"a": {"v": ' + value + "}}"
        rows.append(row)
    for data in ['{"properties": {}}', '{"properties": null}', '{"properties": [1]}', "{}", None]:
        rows.append(_row(len(rows), data))
    return rows


ROWS = _rows()
PATHS = ["properties.v", "properties.n.my-key.v", "metadata.v", "context.a.v"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Store]]:
    table = pa.Table.from_pydict(
        {name: [r.get(name) for r in ROWS] for name in EVENT_COLUMN_NAMES}, schema=EVENT_SCHEMA
    )
    yield from both_stores(tmp_path_factory, lambda store: store.append_events(table))


def _texts(store: Store, path: str) -> dict[str, str | None]:
    """event_id -> the property's text, read through the analytics' property expression."""
    prop = property_expr(store, path, "breakdown")
    rows = store.query(
        f"SELECT event_id, {prop.sql} FROM events WHERE project_id = ?", [*prop.params, P]
    )
    return {str(e): v for e, v in rows}


def _value_of(i: int) -> str:
    return [*EXPECTED, *RANDOM][i]


@pytest.mark.parametrize("path", PATHS)
def test_duckdb_texts_are_the_reference(stores: dict[str, Store], path: str) -> None:
    texts = _texts(stores["duckdb"], path)
    for i, (value, expected) in enumerate(EXPECTED.items()):
        assert texts[f"e{i}"] == expected, value
    for i in range(len(EXPECTED) + len(RANDOM), len(ROWS)):
        assert texts[f"e{i}"] is None


@pytest.mark.parametrize("path", PATHS)
def test_every_value_reads_as_duckdb_text(stores: dict[str, Store], path: str) -> None:
    ours, reference = _texts(stores["chdb"], path), _texts(stores["duckdb"], path)
    differ = {_value_of(int(e[1:])): (ours[e], reference[e]) for e in reference if ours[e] != reference[e]}  # fmt: skip
    assert differ == {}
    assert len(ours) == len(ROWS)


def _events(store: Store, *filters: dict[str, Any]) -> int:
    return int(A.overview(store, P, {**SPAN, "filters": list(filters)})["total_events"])


@pytest.mark.parametrize("path", ["properties.v", "properties.n.my-key.v"])
def test_eq_and_in_filters_match_the_same_events(stores: dict[str, Store], path: str) -> None:
    """``eq`` on DuckDB's text finds the same events on both (``10.0`` finds 10.0, 1e1 and
    10.00, not 10 or "10"); ``in``, ``neq``, ``prefix`` likewise."""
    texts = sorted({t for t in EXPECTED.values() if t is not None})
    for text in texts:
        flt = {"property": path, "operator": "eq", "value": text}
        counts = {name: _events(s, flt) for name, s in stores.items()}
        assert counts["chdb"] == counts["duckdb"] >= 1, text
    for flt in [
        {"property": path, "operator": "in", "value": ["10.0", "1000.0", "-0.0", "1e21"]},
        {"property": path, "operator": "neq", "value": "10.0"},
        {"property": path, "operator": "prefix", "value": "100"},
        {"property": path, "operator": "is_set"},
        {"property": path, "operator": "gt", "value": 99.5},
    ]:
        counts = {name: _events(s, flt) for name, s in stores.items()}
        assert counts["chdb"] == counts["duckdb"], flt
    assert _events(stores["chdb"], {"property": path, "operator": "eq", "value": "10.0"}) == 2


def _window(start: int, stop: int) -> dict[str, str]:
    """The events ``e<start>`` to ``e<stop - 1>`` (one a second from T0)."""
    return {
        "start_time": (T0 + timedelta(seconds=start)).isoformat(),
        "end_time": (T0 + timedelta(seconds=stop)).isoformat(),
    }


@pytest.mark.parametrize("path", ["properties.v", "metadata.v"])
def test_breakdown_labels_match(stores: dict[str, Store], path: str) -> None:
    """Every value's label, in windows of at most 100 values (the breakdown limit)."""
    labels: set[Any] = set()
    for start in range(0, len(ROWS), 100):
        query = {**_window(start, start + 100), "interval": "day", "breakdown": path,
                 "breakdown_limit": 100}  # fmt: skip
        ours, reference = (normal(A.trends(stores[b], P, query)) for b in ("chdb", "duckdb"))
        assert ours == reference
        labels |= {s["breakdown_value"] for s in reference["series"]}
    assert {"10.0", "1000.0", "-0.0", "1e21", "1.5e-7", "10", "true", "100.0", None} <= labels


def test_funnel_breakdown_matches(stores: dict[str, Store]) -> None:
    steps = [{"condition_type": "custom", "condition_value": ""}] * 2
    query = {**_window(0, len(EXPECTED)), "steps": steps, "breakdown": "properties.v",
             "breakdown_limit": 100}  # fmt: skip
    ours, reference = (normal(A.funnel(stores[b], P, query)) for b in ("chdb", "duckdb"))
    assert ours == reference
    assert "1000.0" in json.dumps(reference)


def test_values_json_round_trip() -> None:
    """The test data is valid JSON that Python reads as the number or value named."""
    for value in [*EXPECTED, *RANDOM]:
        json.loads('{"v": ' + value + "}")
