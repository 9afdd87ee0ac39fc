"""What one ingest-log entry holds, and how it is encoded.

An entry is the validated rows of one accepted request, ready for the store: the loader never
validates again. The first byte names the kind:

- ``EVENTS``: msgpack of a :data:`~avila.storage.schema.ColumnBatch` (the ``events`` table's
  columns, timestamps as epoch microseconds): cheap to build on the event loop. The loader
  reads it with :func:`decode_event_values` (text as bytes, straight into Arrow).
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
import pyarrow as pa

EVENTS = 1
TELEMETRY = 2

_encode = msgspec.msgpack.Encoder().encode
_decode_columns = msgspec.msgpack.Decoder(dict[str, list[Any]]).decode
_decode_any = msgspec.msgpack.Decoder().decode


class _EventKeys(msgspec.Struct):
    """The two columns recovery needs; msgspec skips the others without building objects."""

    project_id: list[str]
    event_id: list[str]


_decode_keys = msgspec.msgpack.Decoder(_EventKeys).decode


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def encode_events(columns: dict[str, list[Any]]) -> bytes:
    return bytes((EVENTS,)) + _encode(columns)


def decode_events(payload: bytes | memoryview) -> dict[str, list[Any]]:
    return _decode_columns(payload[1:])


def decode_event_values(payload: bytes | memoryview) -> dict[str, list[Any]]:
    """:func:`decode_events` with text as UTF-8 ``bytes`` instead of ``str``, for building Arrow:
    no UTF-8 decode here and no encode again in Arrow, which takes the bytes as they are and
    checks them (the loader's msgpack-to-Arrow step costs ~25 % less; RESULTS.md). msgspec has
    no such mode; ``msgpack``'s ``raw=True`` is it."""
    body = msgpack.unpackb(payload[1:], raw=True)
    return {key.decode(): values for key, values in body.items()}


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
    yield from zip(keys.project_id, keys.event_id, strict=True)
