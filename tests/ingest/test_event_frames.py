"""EVENTS log entries: the loader's bytes decode (:func:`frames.decode_event_values`) gives the
same Arrow rows as the columns the server encoded, for every kind of value a column holds."""

from __future__ import annotations

import math
import random
from typing import Any

import pyarrow as pa
import pytest

from avila.storage import frames
from avila.storage.schema import EVENT_SCHEMA, TIMESTAMP_COLUMNS, columns_to_arrow

TEXTS = [
    "",
    "a",
    "São Paulo",
    "Zürich",
    "日本語のテキスト",
    "emoji 🎉👍🏽",
    "nul \x00 inside",
    'quote " backslash \\ newline \n',
    "x" * 40_000,
    '{"k":"v","n":[1,2,{"deep":"ü"}]}',
]


def _value(field: pa.Field, rng: random.Random) -> Any:
    if rng.random() < 0.2:
        return None
    if field.name in TIMESTAMP_COLUMNS:
        return rng.choice([0, -1, 1_767_225_600_000_123, 253_402_300_799_999_999])
    if pa.types.is_integer(field.type):
        return rng.choice([0, -1, 1, 2**31, -(2**62), 2**63 - 1])
    if pa.types.is_floating(field.type):
        return rng.choice([0.0, -0.0, 1.5, -1e-300, 1e15, 1e308, math.inf, 0.1 + 0.2])
    return rng.choice(TEXTS) + rng.choice(["", str(rng.random())])


def _columns(n: int, seed: int) -> dict[str, list[Any]]:
    rng = random.Random(seed)
    return {f.name: [_value(f, rng) for _ in range(n)] for f in EVENT_SCHEMA}


@pytest.mark.parametrize(("n", "seed"), [(1, 0), (7, 1), (100, 2), (3000, 3)])
def test_bytes_decode_gives_the_encoded_rows(n: int, seed: int) -> None:
    columns = _columns(n, seed)
    payload = frames.encode_events(columns)
    assert frames.kind(payload) == frames.EVENTS
    decoded = frames.decode_event_values(memoryview(payload))
    # text comes back as UTF-8 bytes, everything else as the values themselves
    for field in EVENT_SCHEMA:
        expected = columns[field.name]
        got = decoded[field.name]
        if pa.types.is_string(field.type):
            expected = [None if v is None else v.encode() for v in expected]
        assert got == expected, field.name
    # the oracle: Arrow built from the server's own columns (str values)
    assert columns_to_arrow([decoded]).equals(columns_to_arrow([columns]))
    assert columns_to_arrow([decoded]) == columns_to_arrow([frames.decode_events(payload)])


def test_several_entries_concatenate_in_order() -> None:
    parts = [_columns(n, seed) for seed, n in enumerate([5, 1, 40])]
    decoded = [frames.decode_event_values(frames.encode_events(p)) for p in parts]
    table = columns_to_arrow(decoded)
    assert table.num_rows == 46
    assert table.equals(columns_to_arrow(parts))
    assert table.column("event_id").to_pylist() == [v for p in parts for v in p["event_id"]]


def test_text_that_is_not_utf8_is_refused_not_stored() -> None:
    # Entries are written from Python str, so this cannot come from the server; a corrupt
    # entry that passed its checksum must still not become a wrong row.
    columns = _columns(3, 9)
    decoded = frames.decode_event_values(frames.encode_events(columns))
    decoded["url"] = [b"\xff\xfe", None, b"ok"]
    with pytest.raises(pa.ArrowInvalid):
        columns_to_arrow([decoded])
