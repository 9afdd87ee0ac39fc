"""Sparkplug B payload decoding (Eclipse Sparkplug 3.0, ``sparkplug_b.proto``).

Only what telemetry needs is declared: ``Payload`` (timestamp, metrics, seq) and ``Metric``
(name, alias, timestamp, datatype, is_null and the scalar ``value`` oneof). The message classes
are built at import from a hand-written descriptor with the ``protobuf`` runtime, with the
published field numbers; fields not declared here (metadata, properties, datasets, templates)
are skipped by the parser as unknown fields.

Values: Int8/16/32 travel in ``int_value`` (uint32) and Int64 in ``long_value`` (uint64) as two's
complement, so they are sign-extended here; booleans become 1.0 / 0.0; strings, bytes, DateTime
and complex types are not telemetry and are skipped. Timestamps are epoch milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto

# Sparkplug B data type codes (spec 6.4.16)
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN = 9, 10, 11
_SIGNED_BITS = {INT8: 32, INT16: 32, INT32: 32}


def _build() -> tuple[type, type]:
    proto = descriptor_pb2.FileDescriptorProto(
        name="avila_sparkplug_b.proto", package="org.eclipse.tahu.protobuf", syntax="proto2"
    )
    payload = proto.message_type.add(name="Payload")
    metric = payload.nested_type.add(name="Metric")
    optional = _F.LABEL_OPTIONAL
    for name, number, ftype in (
        ("name", 1, _F.TYPE_STRING),
        ("alias", 2, _F.TYPE_UINT64),
        ("timestamp", 3, _F.TYPE_UINT64),
        ("datatype", 4, _F.TYPE_UINT32),
        ("is_historical", 5, _F.TYPE_BOOL),
        ("is_transient", 6, _F.TYPE_BOOL),
        ("is_null", 7, _F.TYPE_BOOL),
    ):
        metric.field.add(name=name, number=number, type=ftype, label=optional)
    metric.oneof_decl.add(name="value")
    for name, number, ftype in (
        ("int_value", 10, _F.TYPE_UINT32),
        ("long_value", 11, _F.TYPE_UINT64),
        ("float_value", 12, _F.TYPE_FLOAT),
        ("double_value", 13, _F.TYPE_DOUBLE),
        ("boolean_value", 14, _F.TYPE_BOOL),
        ("string_value", 15, _F.TYPE_STRING),
        ("bytes_value", 16, _F.TYPE_BYTES),
    ):
        metric.field.add(name=name, number=number, type=ftype, label=optional, oneof_index=0)
    payload.field.add(name="timestamp", number=1, type=_F.TYPE_UINT64, label=optional)
    payload.field.add(
        name="metrics",
        number=2,
        type=_F.TYPE_MESSAGE,
        label=_F.LABEL_REPEATED,
        type_name=".org.eclipse.tahu.protobuf.Payload.Metric",
    )
    payload.field.add(name="seq", number=3, type=_F.TYPE_UINT64, label=optional)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    desc = pool.FindMessageTypeByName("org.eclipse.tahu.protobuf.Payload")
    payload_cls = message_factory.GetMessageClass(desc)
    return payload_cls, message_factory.GetMessageClass(desc.nested_types_by_name["Metric"])


Payload, Metric = _build()


@dataclass(frozen=True)
class SparkplugMetric:
    name: str | None
    alias: int | None
    timestamp_ms: int | None
    value: float


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def _value(m: object) -> float | None:
    kind = m.WhichOneof("value")  # type: ignore[attr-defined]
    if kind is None or m.is_null:  # type: ignore[attr-defined]
        return None
    datatype = m.datatype  # type: ignore[attr-defined]
    if kind == "int_value":
        raw = m.int_value  # type: ignore[attr-defined]
        return float(_signed(raw, 32) if datatype in _SIGNED_BITS else raw)
    if kind == "long_value":
        raw = m.long_value  # type: ignore[attr-defined]
        return float(_signed(raw, 64) if datatype == INT64 else raw)
    if kind in ("float_value", "double_value"):
        return float(getattr(m, kind))
    if kind == "boolean_value":
        return 1.0 if m.boolean_value else 0.0  # type: ignore[attr-defined]
    return None


def decode_payload(data: bytes) -> tuple[int | None, list[SparkplugMetric]]:
    """(payload timestamp ms, numeric metrics); raises ``ValueError`` on a malformed payload."""
    payload = Payload()
    try:
        payload.ParseFromString(data)
    except Exception as exc:  # google.protobuf.message.DecodeError
        raise ValueError(f"not a Sparkplug B payload: {exc}") from None
    out = []
    for m in payload.metrics:
        value = _value(m)
        if value is None:
            continue
        out.append(
            SparkplugMetric(
                name=m.name if m.HasField("name") else None,
                alias=m.alias if m.HasField("alias") else None,
                timestamp_ms=m.timestamp if m.HasField("timestamp") else None,
                value=value,
            )
        )
    return (payload.timestamp if payload.HasField("timestamp") else None), out
