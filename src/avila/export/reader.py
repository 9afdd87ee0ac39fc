"""Read events from NDJSON, CSV or Parquet files for import, a chunk at a time.

Each row becomes the seed's event JSON (bytes), which then goes through the one ingestion path
(:func:`avila.ingest.validation.validate_events`): an import is validated and deduplicated
exactly like the API. Two row shapes are understood:

- the seed's event (``event_type`` is an object ``{"type", "data"}``), as NDJSON lines;
- a flat row as our exports write it (``event_type`` a name, ``timestamp``, ``data``,
  ``metadata`` and ``context`` as JSON text or objects), from any of the three formats. When
  ``data``/``context`` are missing, they are rebuilt from the flat columns (``url``,
  ``product_id``, ``browser`` ...), so a hand-made CSV with the documented columns imports too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from avila.errors import ValidationFailed
from avila.export.query import EXPORT_COLUMNS, EXPORT_JSON_COLUMNS, EXPORT_TIMESTAMPS
from avila.storage.schema import EVENT_TYPES

IMPORT_FORMATS = ("ndjson", "csv", "parquet")
_EXTENSIONS = {".ndjson": "ndjson", ".jsonl": "ndjson", ".csv": "csv", ".parquet": "parquet"}
_PASCAL = {snake: pascal for pascal, snake in EVENT_TYPES.items()}

#: Flat column -> field of ``event_type.data``, per event type (the inverse of the stored
#: flattening in :mod:`avila.ingest.validation`).
DATA_FIELDS: dict[str, dict[str, str]] = {
    "PageView": {"url": "url", "title": "title"},
    "Click": {"url": "url"},
    "Search": {"search_query": "query"},
    "ProductView": {"product_id": "product_id", "quantity": "quantity", "price": "price"},
    "AddToCart": {"product_id": "product_id", "quantity": "quantity", "price": "price"},
    "RemoveFromCart": {"product_id": "product_id", "quantity": "quantity", "price": "price"},
    "Purchase": {"order_id": "order_id", "revenue": "revenue", "currency": "currency"},
    "Checkout": {"revenue": "cart_value", "currency": "currency"},
    "Custom": {"event_name": "name"},
}
_DEVICE = ("device_type", "os", "browser")
_LOCATION = ("country", "city")

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode


@dataclass
class Chunk:
    """Events of consecutive rows; ``rows[i]`` is the 1-based row (NDJSON: line) of
    ``events[i]``. ``progress`` is how far the file has been read (bytes; Parquet: rows)."""

    events: list[bytes] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    progress: int = 0
    #: ``(row, message)`` of rows that could not even be turned into an event (bad JSON line).
    unreadable: list[tuple[int, str]] = field(default_factory=list)


def detect_format(path: Path, explicit: str | None = None) -> str:
    """``ndjson`` | ``csv`` | ``parquet`` from ``explicit`` or the file's extension."""
    if explicit:
        if explicit not in IMPORT_FORMATS:
            raise ValidationFailed(f"unknown import format {explicit!r}", code="unknown_format")
        return explicit
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise ValidationFailed(
            f"cannot tell the format of {path.name}: use .ndjson/.jsonl, .csv or .parquet, or "
            "--format (a JSON array file is not supported: export as ndjson)",
            code="unknown_format",
        )
    return fmt


def progress_total(path: Path, fmt: str) -> int:
    """The ``progress`` value at the end of the file (bytes; Parquet: rows)."""
    if fmt == "parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    return path.stat().st_size


def _time_text(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.isoformat() + "Z"
        return value.isoformat()
    if isinstance(value, str) and len(value) > 10 and value[10] == " ":
        return value[:10] + "T" + value[11:]  # "2025-11-26 10:00:00Z" (pandas, DuckDB) -> RFC 3339
    return value


#: What a flat column's NaN or infinity becomes in the event: JSON has no such number (msgspec
#: would write ``null``, silently dropping the value); ``1e999`` is the one way JSON can say it,
#: and the API refuses it ("Number out of range") at the field's path, as it refuses it sent.
_NOT_FINITE = msgspec.Raw(b"1e999")


def _flat_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return _NOT_FINITE
    return value


def _json_part(value: Any) -> Any:
    """A JSON column's value: text embedded as is (validation parses it), objects kept."""
    if isinstance(value, str):
        return msgspec.Raw(value) if value.strip() else None
    return value


def row_to_event(row: dict[str, Any]) -> bytes:
    """The seed's event JSON for a flat (exported) row or a seed-shaped object."""
    event_type = row.get("event_type")
    if isinstance(event_type, dict):
        return _encode(row)
    type_name = _PASCAL.get(event_type, event_type) if isinstance(event_type, str) else event_type
    data = _json_part(row.get("data"))
    if data is None:
        data = {
            name: _flat_value(row[column])
            for column, name in DATA_FIELDS.get(str(type_name), {}).items()
            if row.get(column) is not None
        }
        if type_name == "Custom" and row.get("properties") is not None:
            data["properties"] = _json_part(row["properties"])
    context = _json_part(row.get("context"))
    if context is None:
        device = {k: _flat_value(row[k]) for k in _DEVICE if row.get(k) is not None}
        location = {k: _flat_value(row[k]) for k in _LOCATION if row.get(k) is not None}
        context = {
            k: v
            for k, v in (
                ("device", device or None),
                ("location", location or None),
                ("referrer", _flat_value(row.get("referrer"))),
                ("user_agent", _flat_value(row.get("user_agent"))),
            )
            if v is not None
        }
    event: dict[str, Any] = {
        "user_id": row.get("user_id"),
        "event_type": {"type": type_name, "data": data},
        "context": context,
    }
    for name in ("event_id", "session_id"):
        if row.get(name) is not None:
            event[name] = row[name]
    timestamp = row.get("timestamp", row.get("ts"))
    if timestamp is not None:
        event["timestamp"] = _time_text(timestamp)
    metadata = _json_part(row.get("metadata"))
    if metadata is not None:
        event["metadata"] = metadata
    return _encode(event)


#: A UTF-8 byte-order mark, which Windows tools put at the start of a text file.
BOM = b"\xef\xbb\xbf"


def _read_ndjson(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    chunk = Chunk()
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            chunk.progress += len(line)
            if number == 1 and line.startswith(BOM):
                line = line[len(BOM) :]
            line = line.rstrip(b"\r\n")  # the line without its end, as the bulk reader has it
            if not line.strip():
                continue
            try:
                row = _decode(line)
            except msgspec.DecodeError as exc:
                chunk.unreadable.append((number, f"line is not valid JSON: {exc}"))
                continue
            if not isinstance(row, dict):
                chunk.unreadable.append((number, "line is not a JSON object"))
                continue
            # Seed-shaped lines go through byte for byte (their unknown fields included).
            chunk.events.append(
                line if isinstance(row.get("event_type"), dict) else row_to_event(row)
            )
            chunk.rows.append(number)
            if len(chunk.events) >= chunk_rows:
                yield chunk
                chunk = Chunk(progress=chunk.progress)
    yield chunk


def ndjson_batches(path: Path, batch_rows: int) -> Iterator[tuple[list[bytes], list[int], int]]:
    """``(lines, line numbers, bytes read)`` of at most ``batch_rows`` non-blank lines each
    (without their newline), read in large blocks rather than line by line."""
    lines: list[bytes] = []
    numbers: list[int] = []
    number = 0
    read = 0
    rest = b""
    with open(path, "rb") as f:
        while True:
            block = f.read(_NDJSON_BLOCK)
            read += len(block)
            if not read - len(block) and block.startswith(BOM):
                block = block[len(BOM) :]
            parts = (rest + block).split(b"\n")
            rest = parts.pop() if block else b""
            kept = [(i, part) for i, part in enumerate(parts, start=number + 1) if part.strip()]
            number += len(parts)
            numbers.extend(i for i, _ in kept)
            lines.extend(part for _, part in kept)
            while len(lines) >= batch_rows or (not block and lines):
                yield lines[:batch_rows], numbers[:batch_rows], read
                del lines[:batch_rows], numbers[:batch_rows]
            if not block:
                return


_NDJSON_BLOCK = 16 << 20


class CountingReader:
    """A binary file that remembers how many bytes were read (CSV progress)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.count = 0
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


# Our own columns keep their types (ids stay text even when they look like numbers).
_CSV_TYPES = {
    name: (pa.string() if name in EXPORT_TIMESTAMPS or name in EXPORT_JSON_COLUMNS else dtype)
    for name, _, dtype, _ in EXPORT_COLUMNS
}
_CSV_TYPES["ts"] = pa.string()
_CSV_TYPES["properties"] = pa.string()  # a Custom event's properties (JSON text)

#: CSV as our exports write it (RFC 4180): a quoted value may hold line breaks. Without this
#: the reader splits the file into blocks at the last line break it finds, and a block ending
#: inside a quoted value stopped the import ("CSV parser got out of sync with chunker"). It
#: costs the reader next to nothing (500,000 export rows: 0.50 against 0.44-0.55 CPU s).
CSV_PARSE = pa_csv.ParseOptions(newlines_in_values=True)
#: Only an empty unquoted field is null (how our exports write null); pyarrow's default also
#: reads unquoted ``NA``, ``N/A``, ``null``, ``None``, ``NaN`` ... as null, which turned a user
#: "NA" or the country NA (Namibia) into a missing value.
CSV_NULLS = [""]


def csv_columns(path: Path) -> list[str]:
    """The header's column names (only the file's first block is read)."""
    reader = pa_csv.open_csv(
        path, read_options=pa_csv.ReadOptions(block_size=1 << 20), parse_options=CSV_PARSE
    )
    try:
        return list(reader.schema.names)
    finally:
        reader.close()


def flat_rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """The batch's rows as dicts, typed timestamps as RFC 3339 UTC text: a Python datetime
    cannot hold every Arrow timestamp (one before year 1 made ``to_pylist`` raise and stopped
    the import), while the text goes to the API's validator, which judges it."""
    columns = []
    for field_, column in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_timestamp(field_.type):
            naive = column.cast(pa.timestamp(field_.type.unit))  # tz-aware: its UTC value
            column = pc.binary_join_element_wise(
                pc.strftime(naive, format="%Y-%m-%dT%H:%M:%S"), "Z", ""
            )
        columns.append(column)
    rows: list[dict[str, Any]] = pa.RecordBatch.from_arrays(
        columns, names=batch.schema.names
    ).to_pylist()
    return rows


def _batches_to_chunks(
    batches: Iterator[pa.RecordBatch], position: Any, first_row: int = 1
) -> Iterator[Chunk]:
    row_number = first_row
    for batch in batches:
        events = [row_to_event(row) for row in flat_rows(batch)]
        rows = list(range(row_number, row_number + len(events)))
        row_number += len(events)
        yield Chunk(events=events, rows=rows, progress=position())


def open_event_csv(source: Any, path: Path, *, block_size: int) -> pa_csv.CSVStreamingReader:
    """A streaming CSV reader (of ``source``, the file ``path``) with the flat event columns'
    types (empty strings stay strings, only empty unquoted fields are NULL) and only the
    columns an event is made of: another column's type would be guessed from the first block,
    and a later value that does not fit it stopped the import."""
    used = [name for name in csv_columns(path) if name in _CSV_TYPES]
    return pa_csv.open_csv(
        source,
        read_options=pa_csv.ReadOptions(block_size=block_size),
        parse_options=CSV_PARSE,
        convert_options=pa_csv.ConvertOptions(
            column_types=_CSV_TYPES,
            include_columns=used,
            null_values=CSV_NULLS,
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )


def _read_csv(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    with open(path, "rb") as raw:
        counting = CountingReader(raw)
        reader = open_event_csv(counting, path, block_size=1 << 20)
        batches = (b for big in reader for b in pa.Table.from_batches([big]).to_batches(chunk_rows))
        yield from _batches_to_chunks(batches, lambda: counting.count)


def _read_parquet(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    file = pq.ParquetFile(path)
    done = 0

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal done
        for batch in file.iter_batches(batch_size=chunk_rows):
            done += batch.num_rows
            yield batch

    yield from _batches_to_chunks(batches(), lambda: done)


def read_chunks(path: Path, fmt: str, chunk_rows: int = 2000) -> Iterator[Chunk]:
    """Chunks of at most ``chunk_rows`` events from ``path`` (constant memory)."""
    readers = {"ndjson": _read_ndjson, "csv": _read_csv, "parquet": _read_parquet}
    return readers[fmt](path, chunk_rows)
