"""What one ingest-log entry holds, and how it is encoded.

An entry is the validated rows of one accepted request, ready for the store: the loader never
validates again. The first byte names the kind:

- ``EVENTS``: msgpack of a :data:`~avila.storage.schema.ColumnBatch` (the ``events`` table's
  columns, timestamps as epoch microseconds): cheap to build on the event loop. Two kinds of
  column are stored once rather than once per event (see :func:`encode_events`): the columns
  every event of the request shares (``@shared``: project, receive time) and the columns that
  come from an event's context (``@context``: each distinct combination once, and an index per
  event). Entries written before that hold every column in full; both read the same. The loader
  reads an entry with :func:`decode_event_values` (text as bytes, straight into Arrow) and
  builds its table with :func:`events_to_arrow`.
- ``TELEMETRY``: msgpack ``{"t": Arrow IPC of telemetry rows, "d": Arrow IPC of new device rows
  or None, "m": [project_id, message_id] or None}``: the readings, the devices first seen with
  them and the MQTT message identity (for redelivery dedup) go into the store together.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from avila.storage.schema import EVENT_SCHEMA, column_array

EVENTS = 1
TELEMETRY = 2

_encode = msgspec.msgpack.Encoder().encode
_decode_columns = msgspec.msgpack.Decoder(dict[str, Any]).decode
_decode_any = msgspec.msgpack.Decoder().decode


class _Shared(msgspec.Struct):
    project_id: str | None = None


class _EventKeys(msgspec.Struct):
    """The columns recovery needs; msgspec skips the others without building objects."""

    event_id: list[str]
    project_id: list[str] | None = None
    shared: _Shared | None = msgspec.field(default=None, name="@shared")


_decode_keys = msgspec.msgpack.Decoder(_EventKeys).decode


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


#: Columns every event of one request shares (:meth:`avila.ingest.validation.EventRows.to_columns`).
SHARED_COLUMNS = ("project_id", "received_at")
#: Columns that come from an event's context: its text and the values flattened out of it. The
#: events of one request usually share a context (one client's device, place and user agent),
#: and these columns are most of an event's bytes (the context text alone ~450 of ~760).
CONTEXT_COLUMNS = (
    "device_type", "os", "browser", "country", "city", "referrer", "user_agent", "context",
)  # fmt: skip
#: Entries of fewer events store every column in full: spreading a value over a handful of
#: rows costs the loader more than the repeats it saves (a single event is one row).
SPREAD_MIN_EVENTS = 16
_SHARED = "@shared"
_CONTEXT = "@context"
_INDEX = "index"


def encode_events(columns: dict[str, list[Any]]) -> bytes:
    """One EVENTS entry. Shared and context columns are stored once per distinct value
    (combination), which measured about half the entry's bytes and of the loader's CPU per event
    for a batch from one client (benchmarks/RESULTS.md); the key is the whole combination, so
    the stored rows are the given ones whatever the columns hold."""
    n = len(columns["event_id"])
    if n < SPREAD_MIN_EVENTS:
        return bytes((EVENTS,)) + _encode(columns)
    body: dict[str, Any] = {
        name: values
        for name, values in columns.items()
        if name not in SHARED_COLUMNS and name not in CONTEXT_COLUMNS
    }
    shared: dict[str, Any] = {}
    for name in SHARED_COLUMNS:
        values = columns[name]
        if values.count(values[0]) == n:
            shared[name] = values[0]
        else:
            body[name] = values
    if shared:
        body[_SHARED] = shared
    distinct: dict[tuple[Any, ...], int] = {}
    add = distinct.setdefault
    keys = zip(*(columns[c] for c in CONTEXT_COLUMNS), strict=True)
    index = [add(key, len(distinct)) for key in keys]
    if 2 * len(distinct) <= n:
        group: dict[str, Any] = {_INDEX: index}
        group.update(zip(CONTEXT_COLUMNS, zip(*distinct, strict=True), strict=True))
        body[_CONTEXT] = group
    else:  # few repeats: an index would only add bytes
        body.update((name, columns[name]) for name in CONTEXT_COLUMNS)
    return bytes((EVENTS,)) + _encode(body)


def _expand(body: dict[str, Any]) -> None:
    """Write the shared and context columns of one decoded entry out in full, in place."""
    n = len(body["event_id"])
    shared = body.pop(_SHARED, None)
    if shared:
        for name, value in shared.items():
            body[name] = [value] * n
    group = body.pop(_CONTEXT, None)
    if group:
        index = group[_INDEX]
        for name in CONTEXT_COLUMNS:
            values = group[name]
            body[name] = [values[i] for i in index]


def decode_events(payload: bytes | memoryview) -> dict[str, list[Any]]:
    """An EVENTS entry's columns, every one in full (str text)."""
    body: dict[str, Any] = _decode_columns(payload[1:])
    _expand(body)
    return body


def decode_event_values(payload: bytes | memoryview) -> dict[str, Any]:
    """An EVENTS entry for :func:`events_to_arrow`: text as UTF-8 ``bytes`` instead of ``str``
    (no UTF-8 decode here and no encode again in Arrow, which takes the bytes as they are and
    checks them: the loader's msgpack-to-Arrow step costs ~25 % less; RESULTS.md; msgspec has
    no such mode, ``msgpack``'s ``raw=True`` is it), and the shared and context columns as
    stored (``@shared``, ``@context``). Every other column is a list with a value per event."""
    body = msgpack.unpackb(payload[1:], raw=True)
    out: dict[str, Any] = {key.decode(): values for key, values in body.items()}
    for name in (_SHARED, _CONTEXT):
        stored = out.get(name)
        if stored is not None:
            out[name] = {key.decode(): values for key, values in stored.items()}
    return out


def event_values_columns(decoded: dict[str, Any]) -> dict[str, list[Any]]:
    """Every column of one :func:`decode_event_values` entry in full (text as bytes)."""
    body = dict(decoded)
    _expand(body)
    return body


def events_to_arrow(
    entries: list[dict[str, Any]], memory_pool: pa.MemoryPool | None = None
) -> pa.Table:
    """One Arrow table (:data:`~avila.storage.schema.EVENT_SCHEMA`) of several
    :func:`decode_event_values` entries, in order. A column stored once per distinct value is
    built from those values and spread by index in Arrow (``take``), never per event in Python."""
    counts = [len(entry["event_id"]) for entry in entries]
    # Rounds of single events hold no spread entry: no index to build (numpy per entry).
    spread = any(_SHARED in entry or _CONTEXT in entry for entry in entries)
    context_index: pa.Array | None = None
    arrays = []
    for field in EVENT_SCHEMA:
        name = field.name
        if not spread:
            values, index = _plain_values(entries, name), None
        elif name in SHARED_COLUMNS:
            values, index = _spread(entries, counts, name, _SHARED)
        elif name in CONTEXT_COLUMNS:
            if context_index is None:
                values, context_index = _spread(entries, counts, name, _CONTEXT)
            else:
                values = _distinct_values(entries, name)
            index = context_index
        else:
            values, index = _plain_values(entries, name), None
        array = column_array(values, field, memory_pool)
        arrays.append(array if index is None else pc.take(array, index, memory_pool=memory_pool))
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)


def _plain_values(entries: list[dict[str, Any]], name: str) -> list[Any]:
    """Column ``name`` of entries that store it in full, in order."""
    if len(entries) == 1:
        values: list[Any] = entries[0][name]
        return values
    values = []
    for entry in entries:
        values.extend(entry[name])  # (a pointer copy: far cheaper than chain())
    return values


def _distinct_values(entries: list[dict[str, Any]], name: str) -> list[Any]:
    values: list[Any] = []
    for entry in entries:
        group = entry.get(_CONTEXT)
        values.extend(entry[name] if group is None else group[name])
    return values


def _spread(
    entries: list[dict[str, Any]], counts: list[int], name: str, where: str
) -> tuple[list[Any], pa.Array | None]:
    """(the stored values of column ``name`` in entry order, the index that spreads them to one
    per event; None when every entry stores it in full)."""
    values: list[Any] = []
    parts: list[np.ndarray[Any, Any]] = []
    spread = False
    for entry, n in zip(entries, counts, strict=True):
        offset = len(values)
        stored = entry.get(where)
        if stored is None or name not in stored:
            values.extend(entry[name])
            parts.append(np.arange(offset, offset + n, dtype=np.int64))
        elif where == _SHARED:
            values.append(stored[name])
            parts.append(np.full(n, offset, dtype=np.int64))
            spread = True
        else:
            values.extend(stored[name])
            parts.append(np.asarray(stored[_INDEX], dtype=np.int64) + offset)
            spread = True
    if not spread:
        return values, None
    return values, pa.array(np.concatenate(parts) if parts else np.empty(0, np.int64))


def encode_telemetry(
    readings: pa.Table, devices: pa.Table | None, message: tuple[str, str] | None = None
) -> bytes:
    body = {
        "t": to_ipc(readings),
        "d": to_ipc(devices) if devices is not None and devices.num_rows else None,
        "m": list(message) if message else None,
    }
    return bytes((TELEMETRY,)) + _encode(body)


@dataclass
class TelemetryEntry:
    readings: pa.Table
    devices: pa.Table | None
    message: tuple[str, str] | None


def decode_telemetry(payload: bytes | memoryview, *, tables: bool = True) -> TelemetryEntry:
    body = _decode_any(payload[1:])
    message = (str(body["m"][0]), str(body["m"][1])) if body.get("m") else None
    if not tables:
        return TelemetryEntry(pa.table({}), None, message)
    return TelemetryEntry(
        from_ipc(body["t"]),
        from_ipc(body["d"]) if body.get("d") else None,
        message,
    )


def kind(payload: bytes | memoryview) -> int:
    return int(payload[0])


def event_keys(payload: bytes | memoryview) -> Iterator[tuple[str, str]]:
    """``(project_id, event_id)`` of every event in an EVENTS entry."""
    keys = _decode_keys(payload[1:])
    if keys.project_id is None:
        if keys.shared is None or keys.shared.project_id is None:
            raise ValueError("EVENTS entry without a project_id")
        project = keys.shared.project_id
        yield from ((project, event_id) for event_id in keys.event_id)
    else:
        yield from zip(keys.project_id, keys.event_id, strict=True)
