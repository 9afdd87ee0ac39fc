"""An import's CSV rows, with the file's own breakage rejected row by row.

Arrow's CSV reader stops at the first problem of the whole file; an import must instead keep
every good row and reject each bad one by itself (row number, code, message, field path).
The three kinds of breakage a CSV reader meets, and what happens to them:

- **A number column holding something else** (``quantity`` = ``two``, a price ``9,99``):
  number columns are read as text and converted here, with Arrow's own number parsing (the
  reader's: surrounding spaces allowed), one cast per column and batch. Only when that cast
  fails does a bisection find the values it cannot read: each goes into its row's event as
  written (a JSON number when it spells one, such as ``1.5`` or a 25-digit count; text
  otherwise), so the API's validator judges the row exactly as it judges that event sent to
  it ("Expected `int | null`, got `str`" at ``event_type.data.quantity``). An empty field,
  quoted or not, is a missing number.
- **A row with too many or too few fields**: skipped by the parser (``invalid_row_handler``)
  and rejected as ``malformed_csv``; the rows after it keep their numbers.
- **A quote that is never closed**: RFC 4180 lets a quoted value hold line breaks (our exports
  write them), so a quote left open makes the rest of the file one value. The file's last row
  is checked: when its value runs from an opening quote to the very end of the file, that row
  is rejected (naming the column), and the lines after its first line are read again as rows.

Row numbers are 1-based data rows, as everywhere in the import: the header is not a row, a
blank line is skipped and not counted, a quoted value spanning lines is one row.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from avila.export.query import EXPORT_COLUMNS, EXPORT_JSON_COLUMNS, EXPORT_TIMESTAMPS
from avila.export.reader import (
    COLUMN_PATHS,
    CSV_CHECK_UTF8,
    CSV_NULLS,
    CSV_PARSE,
    csv_columns,
    read_guarded,
    reading,
)

#: The code of a row the CSV parser could not read as a row (wrong field count, open quote).
MALFORMED_CSV = "malformed_csv"

#: Columns an event is made of -> their type. Ids stay text even when they look like numbers.
CSV_TYPES: dict[str, pa.DataType] = {
    name: (pa.string() if name in EXPORT_TIMESTAMPS or name in EXPORT_JSON_COLUMNS else dtype)
    for name, _, dtype, _ in EXPORT_COLUMNS
}
CSV_TYPES["ts"] = pa.string()
CSV_TYPES["properties"] = pa.string()  # a Custom event's properties (JSON text)
#: The number columns: read as text, converted by :func:`parse_numbers`.
NUMBER_TYPES = {name: t for name, t in CSV_TYPES.items() if not pa.types.is_string(t)}

_STRING = pa.string()
#: A cast that fails on a slice this short tests each value by itself.
_SINGLES = 8


@dataclass(frozen=True)
class BadRow:
    """A row the parser could not make a row of."""

    row: int
    message: str
    path: str = ""


@dataclass
class CsvBlock:
    """One read step: ``batch`` holds the wanted columns (numbers still as text), ``rows`` the
    1-based row number of each of its rows, ``bad`` the rows rejected since the previous step."""

    batch: pa.RecordBatch
    rows: np.ndarray
    bad: list[BadRow] = field(default_factory=list)
    #: Bytes of the file read so far.
    progress: int = 0


class _Counting:
    """A binary file from ``start`` on that counts the bytes read."""

    def __init__(self, raw: BinaryIO, start: int) -> None:
        raw.seek(start)
        self.raw = raw
        self.start = start
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


@dataclass
class _Invalid:
    row: int  # within the segment, 1-based
    expected: int
    actual: int
    text: str


class CsvRows:
    """The rows of ``path`` a block at a time: ``columns`` (the event columns when None) of
    every row the parser can read, the others as :class:`BadRow`. Iterate once.

    ``check_quotes=False`` leaves out the check for a quote that never closes (and so reads
    only ``columns``, not every column): the bulk import's first pass, which reads the ids
    only; the rows it then does not see (those read again after such a quote) are all held
    back as possible duplicates by the second pass. Every other row has the same number in
    both."""

    def __init__(
        self,
        path: Path,
        *,
        block_size: int,
        columns: Collection[str] | None = None,
        check_quotes: bool = True,
    ) -> None:
        self.path = path
        self.block_size = block_size
        self.check_quotes = check_quotes
        self.names = csv_columns(path)
        wanted = CSV_TYPES if columns is None else columns
        self.used = [name for name in dict.fromkeys(self.names) if name in wanted]
        self.size = path.stat().st_size
        self._progress = 0

    # -- reading ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[CsvBlock]:
        start, base, header = 0, 0, True
        with open(self.path, "rb") as raw:
            while True:
                source = _Counting(raw, start)
                segment = _Segment(self, source, base, header)
                yield from segment.blocks()
                if segment.resume is None:
                    return
                start, base = segment.resume
                header = False

    def _reader(self, source: _Counting, header: bool, invalid: Any) -> Any:
        # Every column as text (a column the event does not use too: the open-quote check
        # looks at the last row's every value); the unused ones are dropped per block.
        include = [] if self.check_quotes else self.used
        with reading(self.path, "csv"):
            return pa_csv.open_csv(
                source,
                read_options=pa_csv.ReadOptions(
                    block_size=self.block_size,
                    # Serial parsing: only then does the invalid-row handler get row numbers
                    # (no CPU cost: the streaming reader parses one block at a time anyway).
                    use_threads=False,
                    column_names=None if header else self.names,
                ),
                parse_options=pa_csv.ParseOptions(
                    delimiter=CSV_PARSE.delimiter,
                    quote_char=CSV_PARSE.quote_char,
                    newlines_in_values=CSV_PARSE.newlines_in_values,
                    invalid_row_handler=invalid,
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict.fromkeys(self.names, _STRING),
                    null_values=CSV_NULLS,
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                    check_utf8=CSV_CHECK_UTF8,
                    include_columns=include,
                ),
            )


class _Segment:
    """One reader over the file from a byte offset (the whole file, or the lines after a row
    whose quote never closed). ``resume`` is set when another segment must follow:
    ``(byte offset, row number before its first row)``."""

    def __init__(self, rows: CsvRows, source: _Counting, base: int, header: bool) -> None:
        self.rows = rows
        self.source = source
        self.base = base
        self.invalid: list[_Invalid] = []
        self.reported = 0  # invalid rows already handed out
        self.emitted = 0  # rows the reader gave, this segment
        self.resume: tuple[int, int] | None = None
        self.reader = rows._reader(source, header, self._on_invalid)
        self.keep = [self.reader.schema.names.index(name) for name in rows.used]

    def _on_invalid(self, row: Any) -> str:
        if row.number is None:  # not serial after all: the whole file fails, as it did
            return "error"
        number = row.number - (1 if self.source.start == 0 else 0)  # the header is line 1
        try:
            text = str(row.text)
        except Exception:  # text that is not UTF-8: the message does without it
            text = ""
        self.invalid.append(_Invalid(number, row.expected_columns, row.actual_columns, text))
        return "skip"

    def _numbers(self, n: int) -> np.ndarray:
        """Segment row numbers of the next ``n`` rows the reader gives."""
        given = np.arange(self.emitted + 1, self.emitted + n + 1, dtype=np.int64)
        self.emitted += n
        if self.invalid:
            skipped = np.fromiter((i.row for i in self.invalid), dtype=np.int64)
            skipped.sort()
            # The k-th skipped row moves every row given after it one on.
            given += np.searchsorted(skipped - np.arange(len(skipped)), given, side="right")
        return given

    def _bad(self, before: int | None) -> list[BadRow]:
        """The invalid rows numbered below ``before`` (all when None) not handed out yet
        (the parser reports them in row order)."""
        out = []
        while self.reported < len(self.invalid) and (
            before is None or self.invalid[self.reported].row < before
        ):
            found = self.invalid[self.reported]
            out.append(BadRow(self.base + found.row, _count_message(found)))
            self.reported += 1
        return out

    def _block(self, batch: pa.RecordBatch, rows: np.ndarray, bad: list[BadRow]) -> CsvBlock:
        progress = max(self.rows._progress, self.source.start + self.source.count)
        self.rows._progress = progress
        return CsvBlock(batch.select(self.keep), rows + self.base, bad, progress)

    def blocks(self) -> Iterator[CsvBlock]:
        held: tuple[pa.RecordBatch, np.ndarray] | None = None
        for batch in read_guarded(self.rows.path, "csv", self.reader):
            if batch.num_rows == 0:
                continue
            numbers = self._numbers(batch.num_rows)
            if held is not None:  # the file's last row is checked before it goes out
                yield self._block(*held, self._bad(int(held[1][-1])))
            held = (batch, numbers)
        if held is None:
            schema = self.reader.schema
            empty = [pa.array([], f.type) for f in schema]
            held = (pa.RecordBatch.from_arrays(empty, schema=schema), np.empty(0, np.int64))
        batch, numbers = held
        last_given = int(numbers[-1]) if len(numbers) else 0
        opened = None
        if not self.rows.check_quotes:
            pass
        elif self.invalid and self.invalid[-1].row > last_given:  # the last row is invalid
            opened = self._open_record(self.invalid[-1])
            if opened is not None:
                self.invalid.pop()
        elif batch.num_rows:
            opened = self._open_value(batch, last_given)
            if opened is not None:
                batch, numbers = batch.slice(0, batch.num_rows - 1), numbers[:-1]
        bad = self._bad(None) + ([opened] if opened is not None else [])
        if batch.num_rows or bad:
            yield self._block(batch, numbers, bad)

    # -- a quote that never closes ----------------------------------------------------------

    def _tail(self, length: int) -> bytes:
        with open(self.rows.path, "rb") as f:
            f.seek(max(self.source.start, self.rows.size - length))
            return f.read()

    def _open_value(self, batch: pa.RecordBatch, row: int) -> BadRow | None:
        """The file's last row (segment row ``row``) when one of its values runs from an
        opening quote (at a field's start) to the very end of the file, its line break
        included: the quote never closed. A closed quoted value is followed by its closing
        quote, so it cannot end the file."""
        n = batch.num_rows
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            value = column.slice(n - 1, 1).view(pa.binary())[0].as_py()
            if value is None:
                continue
            written = b'"' + value.replace(b'"', b'""')
            tail = self._tail(len(written) + 1)
            if not tail.endswith(written):
                continue
            before = tail[: len(tail) - len(written)]
            at = self.rows.size - len(written)
            if before[-1:] not in (b",", b"\n", b"\r") and at != self.source.start:
                continue  # the quote is inside an unquoted value: a character like any other
            return self._reopen(self.base + row, name, at)
        return None

    def _open_record(self, last: _Invalid) -> BadRow | None:
        """The same for a last row with the wrong field count: its text (as Arrow gives it,
        without the final line break) ends the file and holds an odd number of quotes."""
        text = last.text.encode("utf-8", "surrogateescape")
        if not text or text.count(b'"') % 2 == 0:
            return None
        tail = self._tail(len(text) + 2)
        end = tail.rstrip(b"\r\n")
        if not end.endswith(text):
            return None
        opened = _opening_quote(text)
        if opened is None:
            return None
        at, column = opened
        name = self.rows.names[column] if column < len(self.rows.names) else ""
        start = self.rows.size - (len(tail) - len(end)) - len(text)
        return self._reopen(self.base + last.row, name, start + at)

    def _reopen(self, row: int, name: str, quote_at: int) -> BadRow:
        """Reject ``row`` for the quote at byte ``quote_at`` and read the lines after that
        quote's line again (a next segment), when there are any."""
        line_end, lines = _lines_after(self.rows.path, quote_at)
        if line_end is not None and lines:
            self.resume = (line_end + 1, row)
        again = (
            f"; the {lines} line{'s' if lines != 1 else ''} after this row's line were read "
            "again as rows"
            if lines
            else ""
        )
        message = f"the quote opened in this row is never closed{again}"
        return BadRow(row, message, COLUMN_PATHS.get(name, name))


def _lines_after(path: Path, offset: int) -> tuple[int | None, int]:
    """(byte offset of the first line break from ``offset`` on, number of lines after it)."""
    line_end: int | None = None
    lines = 0
    last = b"\n"
    with open(path, "rb") as f:
        f.seek(offset)
        position = offset
        while chunk := f.read(1 << 20):
            if line_end is None:
                found = chunk.find(b"\n")
                if found >= 0:
                    line_end = position + found
                    lines = chunk.count(b"\n", found + 1)
                    last = chunk[-1:]
            else:
                lines += chunk.count(b"\n")
                last = chunk[-1:]
            position += len(chunk)
    if line_end is not None and position > line_end + 1 and last != b"\n":
        lines += 1  # a last line without a line break
    return line_end, lines


def _opening_quote(text: bytes) -> tuple[int, int] | None:
    """Where the value left open in one row's ``text`` starts: ``(byte offset of its quote,
    column index)``. RFC 4180 reading: quotes pair up, a doubled quote inside a value is one
    quote character; the open value's quote is the last one at a field's start that leaves an
    odd count of quotes from there on."""
    data = np.frombuffer(text, dtype=np.uint8)
    quotes = np.flatnonzero(data == ord('"'))
    for k in range(len(quotes) - 1, -1, -2):  # odd count from quote k on
        at = int(quotes[k])
        if at == 0 or text[at - 1 : at] in (b",", b"\n", b"\r"):
            inside = np.zeros(len(data) + 1, dtype=np.int64)
            inside[quotes + 1] = 1
            quoted = np.cumsum(inside)[:-1] % 2 == 1  # inside a quoted value
            commas = np.flatnonzero((data[:at] == ord(",")) & ~quoted[:at])
            return at, len(commas)
    return None


def _count_message(row: _Invalid) -> str:
    fields = f"{row.actual} field{'s' if row.actual != 1 else ''}"
    message = f"row has {fields}, the header has {row.expected}"
    lines = len(re.findall(r"\r\n|\r|\n", row.text)) + 1
    if lines > 1:
        message += f" (the row spans {lines} lines)"
    return message


# -- numbers ---------------------------------------------------------------------------------


def parse_numbers(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, dict[int, dict[str, Any]]]:
    """``batch`` with its number columns converted from text, and the values that are not
    numbers: ``{position: {column: value for the event}}`` (their cells are null in the
    batch). One cast per column when every value is a number."""
    unparsed: dict[int, dict[str, Any]] = {}
    arrays = list(batch.columns)
    changed = False
    for i, name in enumerate(batch.schema.names):
        dtype = NUMBER_TYPES.get(name)
        if dtype is None or not pa.types.is_string(arrays[i].type):
            continue
        changed = True
        text = arrays[i]
        try:
            arrays[i] = text.cast(dtype)
            continue
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        # The reader allowed spaces around a number; an empty value is a missing one.
        trimmed = pc.ascii_trim(text, characters=" \t")
        trimmed = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, _STRING), trimmed)
        bad = _failing(trimmed, dtype, 0)
        if bad:
            mask = np.zeros(len(trimmed), dtype=bool)
            mask[bad] = True
            raw = text.take(pa.array(bad)).view(pa.binary()).to_pylist()
            for position, value in zip(bad, raw, strict=True):
                unparsed.setdefault(position, {})[name] = _as_written(value)
            trimmed = pc.if_else(pa.array(mask), pa.scalar(None, _STRING), trimmed)
        arrays[i] = trimmed.cast(dtype)
    if not changed:
        return batch, unparsed
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names), unparsed


def _failing(values: pa.Array, dtype: pa.DataType, offset: int) -> list[int]:
    """Positions (plus ``offset``) of the values that do not cast to ``dtype``: halves until
    the casts pass, so a few bad values cost a few casts of short slices."""
    try:
        values.cast(dtype)
        return []
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    if len(values) <= _SINGLES:
        found = []
        for i in range(len(values)):
            try:
                values.slice(i, 1).cast(dtype)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                found.append(offset + i)
        return found
    half = len(values) // 2
    return _failing(values.slice(0, half), dtype, offset) + _failing(
        values.slice(half), dtype, offset + half
    )


def _as_written(value: bytes) -> Any:
    """A value that is not a number Arrow reads, for the event: the JSON number it spells
    (``1.5`` in a count, a count of 25 digits; the API's rules judge it), else its text."""
    stripped = value.strip()
    try:
        number = msgspec.json.decode(stripped)
    except msgspec.DecodeError:
        number = None
    if isinstance(number, int | float) and not isinstance(number, bool):
        return msgspec.Raw(stripped)
    return value.decode("utf-8", "replace")
