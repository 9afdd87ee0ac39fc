"""EVENTS log entries: the loader's bytes decode (:func:`frames.decode_event_values` and
:func:`frames.events_to_arrow`) gives the same Arrow rows as the columns the server encoded, for
every kind of value a column holds, whether its shared and context columns were stored once or
in full (and for entries written before they could be)."""

from __future__ import annotations

import math
import random
from typing import Any

import msgspec
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
    full = frames.event_values_columns(decoded)
    for field in EVENT_SCHEMA:
        expected = columns[field.name]
        got = full[field.name]
        if pa.types.is_string(field.type):
            expected = [None if v is None else v.encode() for v in expected]
        assert got == expected, field.name
    # the oracle: Arrow built from the server's own columns (str values)
    assert frames.events_to_arrow([decoded]).equals(columns_to_arrow([columns]))
    assert frames.decode_events(payload) == columns


def test_several_entries_concatenate_in_order() -> None:
    parts = [_columns(n, seed) for seed, n in enumerate([5, 1, 40])]
    decoded = [frames.decode_event_values(frames.encode_events(p)) for p in parts]
    table = frames.events_to_arrow(decoded)
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
        frames.events_to_arrow([decoded])


def _one_client(
    n: int, seed: int, project: str = "shop", received: int = 1_767_225_600_000_000
) -> dict[str, list[Any]]:
    """A request as the server sees one: one project and receive time, a few contexts."""
    rng = random.Random(seed)
    columns = _columns(n, seed)
    columns["project_id"] = [project] * n
    columns["received_at"] = [received] * n
    contexts = [
        [_value(f, rng) for f in EVENT_SCHEMA if f.name in frames.CONTEXT_COLUMNS] for _ in range(3)
    ]
    picks = [rng.choice(contexts) for _ in range(n)]
    for i, name in enumerate(frames.CONTEXT_COLUMNS):
        columns[name] = [pick[i] for pick in picks]
    return columns


def _legacy(columns: dict[str, list[Any]]) -> bytes:
    """An entry as written before shared and context columns were stored once."""
    return bytes((frames.EVENTS,)) + msgspec.msgpack.encode(columns)


def test_shared_and_context_columns_are_stored_once_and_read_back_in_full() -> None:
    columns = _one_client(500, 11)
    payload = frames.encode_events(columns)
    assert len(payload) < len(_legacy(columns))
    decoded = frames.decode_event_values(payload)
    assert "context" not in decoded and "project_id" not in decoded
    assert len(decoded["@context"]["context"]) <= 3 and decoded["@shared"]["project_id"] == b"shop"
    assert frames.decode_events(payload) == columns
    assert frames.events_to_arrow([decoded]).equals(columns_to_arrow([columns]))


def test_entries_of_every_form_concatenate_in_order() -> None:
    parts = [
        _one_client(40, 1),
        _columns(30, 2),  # contexts and projects differ per event: stored in full
        _one_client(1, 3, project="other"),  # too few to spread
        _one_client(0, 4),
        _one_client(frames.SPREAD_MIN_EVENTS, 9, project="p"),
        _one_client(25, 5, received=0),
    ]
    mixed = parts[1] | {"project_id": ["a", "b"] * 15}
    parts.append(mixed)
    payloads = [frames.encode_events(p) for p in parts] + [_legacy(parts[0]), _legacy(mixed)]
    expected = parts + [parts[0], mixed]
    decoded = [frames.decode_event_values(p) for p in payloads]
    table = frames.events_to_arrow(decoded)
    assert table.num_rows == sum(len(p["event_id"]) for p in expected)
    assert table.equals(columns_to_arrow(expected))
    for payload, columns in zip(payloads, expected, strict=True):
        assert frames.decode_events(payload) == columns
    assert frames.events_to_arrow([]).num_rows == 0


def test_context_text_that_is_not_utf8_is_refused() -> None:
    decoded = frames.decode_event_values(frames.encode_events(_one_client(20, 6)))
    decoded["@context"]["context"] = [b"\xc3"] * len(decoded["@context"]["context"])
    with pytest.raises(pa.ArrowInvalid):
        frames.events_to_arrow([decoded])


def test_recovery_reads_the_keys_of_every_form() -> None:
    one = _one_client(20, 7, project="p1")
    mixed = _columns(6, 8) | {"project_id": ["a", "b", "c"] * 2}
    for columns in (one, mixed):
        columns["event_id"] = [f"e{i} ü" for i in range(len(columns["event_id"]))]
        expected = list(zip(columns["project_id"], columns["event_id"], strict=True))
        assert list(frames.event_keys(frames.encode_events(columns))) == expected
        assert list(frames.event_keys(_legacy(columns))) == expected
