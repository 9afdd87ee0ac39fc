"""Bulk import's duplicate rule, case by case, in every format and with batches of two rows (so
every pair of rows sharing an id spans batches): the first *accepted* row of an id wins, a row
whose id the project stored inside the dedup window is a duplicate, one stored before the
window is not, rows without an id get distinct UUIDs. The first pass only finds candidates
(ids occurring twice in the file or stored in the window, rejected rows included); these tests
pin that the candidates are then judged exactly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from avila.export.bulk import _rebatched, bulk_import
from avila.export.csvrows import BadRow, CsvBlock
from avila.storage.duckdb.store import DuckDBStore
from avila.storage.schema import EVENT_SCHEMA

PROJECT = "dups"
NOW = datetime.now(UTC).replace(tzinfo=None)
FUTURE = (NOW + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(
    event_id: str | None, title: str, user: str = "u-1", ts: str | None = None
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "user_id": user,
        "timestamp": ts or "2025-11-26T10:00:00+02:00",
        "event_type": "page_view",
        "data": json.dumps({"url": "/p", "title": title}, ensure_ascii=False),
    }


ROWS = [
    _row("a", "rejected first", user=""),  # 1: rejected: does not claim "a"
    _row("a", "a wins ☕"),  # 2: the first accepted "a"
    _row("b", "b wins"),  # 3
    _row("b", "b again"),  # 4: duplicate within the file
    _row("stored-in-window", "dup of stored"),  # 5: duplicate of a stored id
    _row("stored-long-ago", "accepted again"),  # 6: stored before the window: accepted
    _row(None, "no id 1"),  # 7: fresh UUID
    _row(None, "no id 2"),  # 8: another fresh UUID
    _row("e", "future", ts=FUTURE),  # 9: rejected (timestamp in the future)
    _row("e", "e wins 東京"),  # 10
    _row("b", "b third"),  # 11: duplicate, two batches after the first
]


def _write(fmt: str, path: Path) -> dict[int, int]:
    """Write ROWS; returns row index (1-based) -> the row number the import reports."""
    table = pa.table({k: pa.array([r[k] for r in ROWS], pa.string()) for k in ROWS[0]})
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "csv":
        pa_csv.write_csv(table, path)
    else:  # flat NDJSON lines with a blank line after row 3 (line numbers shift by one)
        with open(path, "w", encoding="utf-8") as f:
            for i, row in enumerate(ROWS, start=1):
                f.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")
                if i == 3:
                    f.write("\n")
        return {i: i + (1 if i > 3 else 0) for i in range(1, len(ROWS) + 1)}
    return {i: i for i in range(1, len(ROWS) + 1)}


def _store_existing(store: DuckDBStore) -> None:
    stamps = [NOW - timedelta(hours=2), NOW - timedelta(days=5)]
    columns: dict[str, Any] = {name: [None] * 2 for name in EVENT_SCHEMA.names}
    columns.update(
        project_id=[PROJECT] * 2, event_id=["stored-in-window", "stored-long-ago"],
        user_id=["old"] * 2, ts=stamps, received_at=stamps, event_type=["login"] * 2,
        data=["{}"] * 2, metadata=["{}"] * 2, context=["{}"] * 2,
    )  # fmt: skip
    store.append_events(pa.table(columns, schema=EVENT_SCHEMA))


@pytest.mark.parametrize("fmt", ["parquet", "csv", "ndjson"])
def test_first_accepted_row_of_an_id_wins(tmp_path: Path, fmt: str) -> None:
    numbers = _write(fmt, tmp_path / f"rows.{fmt}")
    store = DuckDBStore(tmp_path / "db.duckdb")
    try:
        _store_existing(store)
        summary = bulk_import(tmp_path / f"rows.{fmt}", fmt, store, PROJECT, batch_rows=2)
        got = store.query(
            "SELECT event_id, title, ts FROM events WHERE project_id = ? AND user_id <> 'old'",
            [PROJECT],
        )
        rolled = store.query(
            "SELECT sum(events) FROM rollup_daily WHERE project_id = ? AND kind = 'type'",
            [PROJECT],
        )
        again = bulk_import(tmp_path / f"rows.{fmt}", fmt, store, PROJECT, batch_rows=3)
        total = store.query("SELECT count(*) FROM events WHERE project_id = ?", [PROJECT])
    finally:
        store.close()
    assert [r.row for r in summary.rejections] == [numbers[1], numbers[9]]
    assert [r.path for r in summary.rejections] == ["user_id", "timestamp"]
    assert (summary.rows, summary.accepted, summary.duplicates) == (11, 6, 3)
    titles = {event_id: title for event_id, title, _ in got}
    with_ids = {k: v for k, v in titles.items() if k in {"a", "b", "e", "stored-long-ago"}}
    assert with_ids == {
        "a": "a wins ☕", "b": "b wins", "e": "e wins 東京", "stored-long-ago": "accepted again",
    }  # fmt: skip
    fresh = sorted(title for event_id, title in titles.items() if event_id not in with_ids)
    assert fresh == ["no id 1", "no id 2"]  # two distinct UUIDs
    assert len(got) == 6
    assert {ts for _, _, ts in got} == {datetime(2025, 11, 26, 8, 0)}  # +02:00 made UTC
    assert rolled == [(6 + 2,)]  # the import's rows plus the two stored ones
    # The same file again inside the window: everything with an id is a duplicate now.
    assert (again.accepted, again.duplicates) == (2, 7)
    assert total == [(2 + 6 + 2,)]


def test_ids_of_another_type_are_rejected_not_lost(tmp_path: Path) -> None:
    """Integer event ids (the API wants text) are cast for the first pass; every row is
    rejected at event_id, and a repeated integer does not break the pass."""
    path = tmp_path / "ints.parquet"
    pq.write_table(
        pa.table(
            {
                "event_id": pa.array([1, 2, 2], pa.int64()),
                "user_id": ["u", "u", "u"],
                "event_type": ["login"] * 3,
                "data": ["{}"] * 3,
            }
        ),
        path,
    )
    store = DuckDBStore(tmp_path / "db.duckdb")
    try:
        summary = bulk_import(path, "parquet", store, PROJECT)
    finally:
        store.close()
    assert summary.accepted == 0
    assert [(r.row, r.path) for r in summary.rejections] == [(i, "event_id") for i in (1, 2, 3)]


def test_csv_blocks_are_rebatched_to_whole_batches() -> None:
    """Row numbers travel with their rows; a row the parser rejected goes with the batch its
    number falls in (row 6, skipped between blocks, with the first batch; rows 30 and 31, after
    the last row read, with the last batch)."""
    schema = pa.schema([pa.field("x", pa.int64())])

    def block(start: int, n: int, bad: list[int]) -> CsvBlock:
        rows = np.arange(start, start + n) + 1
        rows[rows > 5] += 1  # row 6 was skipped
        batch = pa.RecordBatch.from_arrays([pa.array(range(start, start + n))], schema=schema)
        return CsvBlock(batch, rows, [BadRow(r, "bad") for r in bad], progress=start + n)

    blocks = [block(0, 5, []), block(5, 7, [6]), block(12, 3, []), block(15, 10, [30, 31])]
    out = list(_rebatched(iter(blocks), 8))
    assert [b.num_rows for b, _, _, _ in out] == [8, 8, 8, 1]
    assert [v for b, _, _, _ in out for v in b.column(0).to_pylist()] == list(range(25))
    numbers = [n for _, rows, _, _ in out for n in rows.tolist()]
    assert numbers == [*range(1, 6), *range(7, 27)]
    assert [[r.row for r in bad] for _, _, bad, _ in out] == [[6], [], [], [30, 31]]
    assert [b.column_names for b, _, _, _ in out] == [["x"]] * 4
