"""The first pass of a bulk import: which rows *may* be duplicates.

A row is a duplicate (the API's rule) when an earlier accepted row of the file has its event id,
or the project stored that id with a ``received_at`` inside the dedup window. Rather than keep
a set of every id seen while importing (a probe into a structure of millions per row: measured
~1 CPU µs per row on this machine, and growing with the file), the import first reads only the
event-id column and lets DuckDB find, with one hash aggregate and one semi-join, the rows whose
raw id occurs more than once in the file or is stored in the window. Those *candidates* are
held back by the second pass and judged exactly at the end (:func:`avila.export.bulk.
_store_candidates`); every other row's id is unique, so it goes straight in.

The candidates are a superset of the duplicates: a raw id shared with a row that is rejected
later still makes both candidates, which only costs them the exact check. Rows without an id
get a fresh UUID and are never candidates.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from avila.export.csvrows import CsvRows
from avila.export.reader import invalid_utf8, ndjson_batches, reading

#: Rows per batch of ids read from CSV and NDJSON files.
_ID_BATCH_ROWS = 1 << 18


class _IdOnly(msgspec.Struct):
    """The one field of an NDJSON line (seed-shaped or flat) that the first pass needs."""

    event_id: Any = None


_ID_LIST = msgspec.json.Decoder(list[_IdOnly])
_ID_ONE = msgspec.json.Decoder(_IdOnly)

# Rows whose id occurs twice in the file, or is stored in the project inside the window.
_CANDIDATES_SQL = """
SELECT row FROM {ids} WHERE id IS NOT NULL AND (
  id IN (SELECT id FROM {ids} WHERE id IS NOT NULL GROUP BY id HAVING count(*) > 1)
  OR id IN (SELECT event_id FROM events WHERE project_id = $project AND received_at >= $since))
ORDER BY row
"""


@dataclass(frozen=True)
class Candidates:
    """The rows that may be duplicates: ``rows`` (sorted 1-based row numbers; NDJSON: line
    numbers) and, for CSV, every row numbered above ``after``: rows this pass did not see (read
    again after a quote that never closes, :mod:`avila.export.csvrows`)."""

    rows: np.ndarray
    after: int | None = None


def candidate_rows(
    path: Path, fmt: str, cursor: Any, project_id: str, since: datetime
) -> Candidates:
    """The rows that may be duplicates."""
    if fmt == "csv":
        seen = _Seen()
        found = _candidates(
            pa.Table.from_batches(list(_csv_ids(path, seen)), _IDS_SCHEMA),
            cursor,
            project_id,
            since,
        )
        return Candidates(found, seen.last if seen.any_ids else None)
    return Candidates(_rows(path, fmt, cursor, project_id, since))


def _rows(path: Path, fmt: str, cursor: Any, project_id: str, since: datetime) -> np.ndarray:
    params = {"project": project_id, "since": since}
    if fmt == "parquet":
        with reading(path, fmt):
            names = pq.read_schema(path).names
        if "event_id" not in names:
            return np.empty(0, dtype=np.int64)
        # DuckDB reads the one column itself; the cast makes ids of any type comparable text
        # (equal values, equal text: the superset the second pass needs).
        ids = (
            "(SELECT CAST(event_id AS VARCHAR) AS id, file_row_number + 1 AS row"
            " FROM read_parquet($path, file_row_number = true))"
        )
        try:
            found = cursor.sql(
                _CANDIDATES_SQL.format(ids=ids), params={**params, "path": str(path)}
            ).fetchnumpy()["row"]
        except Exception:  # an id column DuckDB cannot cast: every row with an id is checked
            with reading(path, fmt):
                column = pq.read_table(path, columns=["event_id"]).column(0)
            present = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
            return np.flatnonzero(present).astype(np.int64) + 1
        return np.asarray(found, dtype=np.int64)
    table = pa.Table.from_batches(list(_ndjson_ids(path)), schema=_IDS_SCHEMA)
    return _candidates(table, cursor, project_id, since)


def _candidates(table: pa.Table, cursor: Any, project_id: str, since: datetime) -> np.ndarray:
    params = {"project": project_id, "since": since}
    cursor.register("_import_ids", table)
    try:
        found = cursor.sql(_CANDIDATES_SQL.format(ids="_import_ids"), params=params).fetchnumpy()
    finally:
        cursor.unregister("_import_ids")
    return np.asarray(found["row"], dtype=np.int64)


_IDS_SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field("row", pa.int64())])


@dataclass
class _Seen:
    any_ids: bool = False
    last: int = 0  # the last row number read


def _csv_ids(path: Path, seen: _Seen) -> Iterator[pa.RecordBatch]:
    # The second pass's parser and row numbers (rows it rejects are not given), so row i here
    # is row i there; only the check for a quote that never closes is left to the second pass
    # (it needs every column, and the rows read again after one are all candidates).
    rows = CsvRows(path, block_size=16 << 20, columns=("event_id",), check_quotes=False)
    if not rows.used:
        return  # no ids: every row gets a fresh one, none is a duplicate
    seen.any_ids = True
    for block in rows:
        if not block.batch.num_rows:
            continue
        seen.last = int(block.rows[-1])
        ids = block.batch.column(0).cast(pa.string())
        bad = invalid_utf8(block.batch)
        if bad is not None:  # such a row is rejected in the second pass: never a candidate
            ids = pc.if_else(pa.array(bad[0]), pa.scalar(None, pa.string()), ids)
        yield pa.RecordBatch.from_arrays([ids, pa.array(block.rows, pa.int64())], ["id", "row"])


def _ndjson_ids(path: Path) -> Iterator[pa.RecordBatch]:
    for lines, numbers, _ in ndjson_batches(path, _ID_BATCH_ROWS):
        yield _line_ids(lines, numbers)


def _line_ids(lines: list[bytes], numbers: list[int]) -> pa.RecordBatch:
    try:
        found = _ID_LIST.decode(b"[" + b",".join(lines) + b"]")
        if len(found) != len(lines):
            raise msgspec.DecodeError
        ids = [_id_text(item.event_id) for item in found]
    except (msgspec.ValidationError, msgspec.DecodeError):
        ids = []
        for line in lines:
            try:
                ids.append(_id_text(_ID_ONE.decode(line).event_id))
            except (msgspec.ValidationError, msgspec.DecodeError):
                ids.append(None)  # not a JSON object: rejected as malformed, never stored
    return pa.RecordBatch.from_arrays(
        [pa.array(ids, pa.string()), pa.array(numbers, pa.int64())], ["id", "row"]
    )


def _id_text(value: Any) -> str | None:
    """An id as comparable text: strings as they are, other values (which the API rejects,
    but the check must not miss) encoded as JSON."""
    if value is None or isinstance(value, str):
        return value
    return "\x00" + msgspec.json.encode(value).decode()
