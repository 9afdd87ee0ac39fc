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

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from avila.errors import ValidationFailed
from avila.export.flat_events import row_to_event, with_json_bytes

IMPORT_FORMATS = ("ndjson", "csv", "parquet")
_EXTENSIONS = {".ndjson": "ndjson", ".jsonl": "ndjson", ".csv": "csv", ".parquet": "parquet"}
_decode = msgspec.json.decode


class Unreadable(NamedTuple):
    """A row that could not even be turned into an event: a line that is not JSON, text that
    is not UTF-8 (code and field path as the API gives them)."""

    row: int
    message: str
    code: str = "malformed_json"
    path: str = ""


@dataclass
class Chunk:
    """Events of consecutive rows; ``rows[i]`` is the 1-based row (NDJSON: line) of
    ``events[i]``. ``progress`` is how far the file has been read (bytes; Parquet: rows)."""

    events: list[bytes] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    progress: int = 0
    #: Rows that could not even be turned into an event (bad JSON line, invalid UTF-8).
    unreadable: list[Unreadable] = field(default_factory=list)


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
        with reading(path, fmt):
            return int(pq.ParquetFile(path).metadata.num_rows)
    return path.stat().st_size


# -- files that cannot be read -------------------------------------------------------------

#: Longest library message quoted in an unreadable file's error (a CSV parse error quotes the
#: offending row, which may be long or span lines).
_DETAIL_CHARS = 300


def unreadable_file(path: Path, fmt: str, exc: BaseException) -> ValidationFailed:
    """The one-line error for a file the reader cannot parse (not Parquet, a broken CSV
    quote, a truncated file ...), naming the file: the CLI prints it and exits 2."""
    detail = str(exc).replace("\r", "\\r").replace("\n", "\\n").strip() or type(exc).__name__
    if len(detail) > _DETAIL_CHARS:
        detail = detail[:_DETAIL_CHARS] + " ..."
    return ValidationFailed(f"cannot read {path} as {fmt}: {detail}", code="unreadable_file")


#: What Arrow raises for a file it cannot parse (OSError: Arrow's I/O errors, such as a
#: truncated Parquet file, are plain OSError).
_FILE_ERRORS = (pa.ArrowException, OSError)


@contextmanager
def reading(path: Path, fmt: str) -> Iterator[None]:
    """Turn a library's file-format error raised inside into :func:`unreadable_file`. Only
    around reads of the input: an Arrow error elsewhere is a bug and keeps its traceback."""
    try:
        yield
    except _FILE_ERRORS as exc:
        raise unreadable_file(path, fmt, exc) from exc


_T = TypeVar("_T")


def read_guarded(path: Path, fmt: str, items: Iterable[_T]) -> Iterator[_T]:
    """``items`` (a reader's batches), each read inside :func:`reading`; the caller's work
    between reads is not."""
    with reading(path, fmt):
        iterator = iter(items)
    while True:
        with reading(path, fmt):
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item


# -- text that is not UTF-8 ------------------------------------------------------------------

#: The API's message for bytes that are not UTF-8 (:func:`avila.ingest.validation.validate_events`).
INVALID_UTF8 = "Invalid UTF-8 encoded string"

#: Where a flat column's text goes in the event: the field path of a row rejected for it.
COLUMN_PATHS: dict[str, str] = {
    "ts": "timestamp",
    "event_type": "event_type.type",
    "data": "event_type.data",
    "properties": "event_type.data.properties",
    "event_name": "event_type.data.name",
    "search_query": "event_type.data.query",
    **{name: f"event_type.data.{name}" for name in ("url", "title", "product_id", "order_id")},
    "currency": "event_type.data.currency",
    **{name: f"context.device.{name}" for name in ("device_type", "os", "browser")},
    **{name: f"context.location.{name}" for name in ("country", "city")},
    "referrer": "context.referrer",
    "user_agent": "context.user_agent",
}

#: Values per validation when a column is known to hold bytes that are not UTF-8: slices that
#: pass are not looked at value by value.
_UTF8_SLICE = 1024


def _bad_text(array: pa.Array) -> np.ndarray | None:
    """Positions of ``array``'s values (a string column) that are not UTF-8; None when all
    are. One full validation of the column, as Arrow's CSV reader does with ``check_utf8``
    (which stopped the whole import at the first bad value); the slow search only when it
    fails."""
    if pa.types.is_dictionary(array.type):
        bad_values = _bad_text(array.dictionary)
        if bad_values is None:
            return None
        hit = pc.is_in(array.indices, value_set=pa.array(bad_values, array.indices.type))
        rows = np.flatnonzero(pc.fill_null(hit, False).to_numpy(zero_copy_only=False))
        return rows if len(rows) else None
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return None
    try:
        array.validate(full=True)
        return None
    except pa.ArrowInvalid:
        pass
    found: list[int] = []
    for start in range(0, len(array), _UTF8_SLICE):
        part = array.slice(start, _UTF8_SLICE)
        try:
            part.validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        binary = pa.large_binary() if pa.types.is_large_string(array.type) else pa.binary()
        for i, value in enumerate(part.view(binary).to_pylist()):
            if value is None:
                continue
            try:
                value.decode()
            except UnicodeDecodeError:
                found.append(start + i)
    return np.asarray(found, dtype=np.int64)


def invalid_utf8(batch: pa.RecordBatch) -> tuple[np.ndarray, list[str]] | None:
    """The rows of ``batch`` that hold text that is not UTF-8: a mask of them and, for each in
    order, the field path of its first such column; None when every text is UTF-8 (the usual
    case: one validation per column)."""
    paths: dict[int, str] = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        bad = _bad_text(column)
        if bad is None:
            continue
        for position in bad.tolist():
            paths.setdefault(position, COLUMN_PATHS.get(name, name))
    if not paths:
        return None
    mask = np.zeros(batch.num_rows, dtype=bool)
    order = sorted(paths)
    mask[order] = True
    return mask, [paths[p] for p in order]


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
                chunk.unreadable.append(Unreadable(number, f"line is not valid JSON: {exc}"))
                continue
            if not isinstance(row, dict):
                chunk.unreadable.append(Unreadable(number, "line is not a JSON object"))
                continue
            # Seed-shaped lines go through byte for byte (their unknown fields included).
            chunk.events.append(
                line
                if isinstance(row.get("event_type"), dict)
                else row_to_event(with_json_bytes(line, row))
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
    with reading(path, "csv"):
        reader = pa_csv.open_csv(
            path,
            read_options=pa_csv.ReadOptions(block_size=1 << 20),
            # A bad row in the first block is the import's to reject, not a reason to stop.
            parse_options=pa_csv.ParseOptions(
                newlines_in_values=CSV_PARSE.newlines_in_values,
                invalid_row_handler=lambda row: "skip",
            ),
            convert_options=pa_csv.ConvertOptions(check_utf8=False),
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


def _chunk(
    batch: pa.RecordBatch,
    rows: list[int],
    progress: int,
    unreadable: list[Unreadable] | None = None,
    unparsed: dict[int, dict[str, Any]] | None = None,
) -> Chunk:
    """The events of ``batch`` (``rows[i]`` is row i's number); rows with text that is not
    UTF-8 are rejected here (the API's validator never sees such text). ``unparsed``: values of
    CSV number columns that are not numbers, by position, put into the events as written."""
    unreadable = list(unreadable or [])
    bad = invalid_utf8(batch)
    positions = list(range(batch.num_rows))
    if bad is not None:
        mask, paths = bad
        unreadable += [
            Unreadable(rows[i], INVALID_UTF8, "invalid_event", path)
            for i, path in zip(np.flatnonzero(mask).tolist(), paths, strict=True)
        ]
        positions = np.flatnonzero(~mask).tolist()
        rows = [rows[i] for i in positions]
        batch = batch.filter(pa.array(~mask))
    flat = flat_rows(batch)
    if unparsed:
        for position, row in zip(positions, flat, strict=True):
            row.update(unparsed.get(position, ()))
    unreadable.sort(key=lambda u: u.row)
    events = [row_to_event(row) for row in flat]
    return Chunk(events=events, rows=rows, progress=progress, unreadable=unreadable)


#: Text columns are read without Arrow's UTF-8 check (with it, one bad value stopped the whole
#: import); :func:`invalid_utf8` checks every batch instead and its rows are rejected one by
#: one. The reader's own check also cost more CPU than one validation per column afterwards.
CSV_CHECK_UTF8 = False


def _read_csv(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    from avila.export.csvrows import MALFORMED_CSV, CsvRows, parse_numbers

    for block in CsvRows(path, block_size=1 << 20):
        bad = [Unreadable(b.row, b.message, MALFORMED_CSV, b.path) for b in block.bad]
        for start in range(0, max(block.batch.num_rows, 1), chunk_rows):
            batch, unparsed = parse_numbers(block.batch.slice(start, chunk_rows))
            rows = block.rows[start : start + chunk_rows].tolist()
            yield _chunk(batch, rows, block.progress, bad, unparsed)
            bad = []


def _read_parquet(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    with reading(path, "parquet"):
        file = pq.ParquetFile(path)
    done = 0
    for batch in read_guarded(path, "parquet", file.iter_batches(batch_size=chunk_rows)):
        rows = list(range(done + 1, done + batch.num_rows + 1))
        done += batch.num_rows
        yield _chunk(batch, rows, done)


def read_chunks(path: Path, fmt: str, chunk_rows: int = 2000) -> Iterator[Chunk]:
    """Chunks of at most ``chunk_rows`` events from ``path`` (constant memory)."""
    readers = {"ndjson": _read_ndjson, "csv": _read_csv, "parquet": _read_parquet}
    return readers[fmt](path, chunk_rows)
