"""``avila import`` of files that are not what they claim: rows with bytes that are not UTF-8
(rejected one by one, the rest imported) and files that cannot be read at all (one line naming
the file, exit 2). Real files, a real DuckDB (or embedded ClickHouse) store, the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from avila.cli import main
from tests.export import export_data as d
from tests.export.test_export_import_edge_cases import _report
from tests.export.test_import_cli import _Terminal, use_store

_HEADER = (
    b"event_id,user_id,session_id,timestamp,event_type,url,title,data,metadata,context,browser"
)
_CONTEXT = b'"{""device"":{""browser"":""Firefox""},""location"":{""city"":""Porto""}}"'


def _csv_row(
    event_id: bytes,
    user_id: bytes = b"u1",
    title: bytes = b"Home",
    data: bytes = b'"{""url"":""/p"",""title"":""Home""}"',
    metadata: bytes = b'"{""k"":1}"',
    context: bytes = _CONTEXT,
) -> bytes:
    return b",".join(
        [
            event_id,
            user_id,
            b"s1",
            b"2025-11-26T10:00:00Z",
            b"page_view",
            b"/p",
            title,
            data,
            metadata,
            context,
            b"Firefox",
        ]
    )


#: Row number (1-based, after the header) -> field path of its bytes that are not UTF-8.
_BAD = {
    3: "event_type.data.title",
    5: "user_id",
    6: "metadata",
    7: "context",
    8: "event_id",
    11: "event_type.data",
}


def _mixed_csv(path: Path) -> Path:
    """14 rows; the rows of :data:`_BAD` hold invalid UTF-8 (Latin-1 text, a lone byte), row
    12 reuses the id of rejected row 3 (a rejected row does not claim its id)."""
    rows = [_HEADER]
    for n in range(1, 15):
        event_id = b"bad-%d" % n if n != 12 else b"bad-3"
        row = {
            3: _csv_row(event_id, title=b"Caf\xe9"),
            5: _csv_row(event_id, user_id=b"u\xff"),
            6: _csv_row(event_id, metadata=b'"{""k"":""\xc3\x28""}"'),
            7: _csv_row(event_id, context=b'"{""device"":{""browser"":""Fire\x80fox""}}"'),
            8: _csv_row(b"bad-\xfe8"),
            11: _csv_row(event_id, data=b'"{""url"":""/\xf0\x28\x8c\x28""}"'),
        }.get(n, _csv_row(event_id))
        rows.append(row)
    path.write_bytes(b"\r\n".join(rows) + b"\r\n")
    return path


def _stored_ids(tmp_path: Path) -> set[str]:
    out = tmp_path / f"check-{len(list(tmp_path.iterdir()))}.ndjson"
    assert main(["export", "-o", str(out)]) == 0
    return {row["event_id"] for row in d.read_ndjson(out.read_bytes())}


@pytest.mark.parametrize("backend", ["duckdb", "chdb"])
@pytest.mark.parametrize("batch", [None, "4", "1"])
def test_csv_rows_with_invalid_utf8_are_rejected_and_the_rest_imported(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    backend: str,
    batch: str | None,
) -> None:
    """Batches of 4: rows 5-8 are a batch of bad rows only; of 1, every batch is one row."""
    monkeypatch.chdir(tmp_path)
    use_store(monkeypatch, tmp_path / "data", backend)
    source = _mixed_csv(tmp_path / "mixed.csv")
    extra = ["--batch-size", batch] if batch else []

    assert main(["import", str(source), "-q", *extra]) == 1
    err = capsys.readouterr().err
    assert "14 rows: 8 accepted, 0 duplicates, 6 rejected" in err
    report = _report(err)
    assert report == {row: ("invalid_event", path) for row, path in _BAD.items()}
    assert err.count("Invalid UTF-8 encoded string") == len(_BAD)
    good = {f"bad-{n}" for n in range(1, 15) if n not in _BAD and n != 12} | {"bad-3"}
    assert _stored_ids(tmp_path) == good

    # Again: every stored row is a duplicate now, the bad rows are rejected again.
    assert main(["import", str(source), "-q", *extra]) == 1
    assert "14 rows: 0 accepted, 8 duplicates, 6 rejected" in capsys.readouterr().err


def test_invalid_utf8_csv_keeps_the_progress_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    use_store(monkeypatch, tmp_path / "data", "duckdb")
    source = _mixed_csv(tmp_path / "mixed.csv")
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main(["import", str(source), "--batch-size", "4"]) == 1
    bars = [line for line in terminal.text.split("\r") if "import mixed.csv" in line]
    assert "100%" in bars[-1] and "14 rows" in bars[-1]
    assert "14 rows: 8 accepted, 0 duplicates, 6 rejected" in terminal.text


def test_parquet_rows_with_invalid_utf8_are_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Parquet writers that do not check UTF-8 can store such bytes in a string column; DuckDB
    refused the whole append ("Invalid unicode")."""
    monkeypatch.chdir(tmp_path)
    use_store(monkeypatch, tmp_path / "data", "duckdb")
    users = pa.array([b"u1", b"u\xff", b"u3", b"u4"], pa.binary()).view(pa.string())
    cities = pa.array([b"Porto", b"Porto", b"S\xe3o Paulo", None], pa.binary()).view(pa.string())
    cities = cities.dictionary_encode()  # read back as a dictionary column: its values checked
    table = pa.table(
        {
            "event_id": ["pq-1", "pq-2", "pq-3", "pq-4"],
            "user_id": users,
            "timestamp": ["2025-11-26T10:00:00Z"] * 4,
            "event_type": ["page_view"] * 4,
            "url": ["/a", "/b", "/c", "/d"],
            "city": cities,
        }
    )
    source = tmp_path / "mixed.parquet"
    pq.write_table(table, source)
    assert main(["import", str(source), "-q"]) == 1
    err = capsys.readouterr().err
    assert "4 rows: 2 accepted, 0 duplicates, 2 rejected" in err
    assert _report(err) == {
        2: ("invalid_event", "user_id"),
        3: ("invalid_event", "context.location.city"),
    }
    assert _stored_ids(tmp_path) == {"pq-1", "pq-4"}


def _cli(path: Path, data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The installed command in a child process, as a user runs it."""
    env = {**os.environ, "AVILA_DATA_DIR": str(data_dir)}
    env.pop("AVILA_STORAGE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "avila.cli", "import", str(path), "-q", *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "not-parquet.parquet": b"this is not a parquet file at all\n",
        # A file with no header at all. (A row with the wrong field count or a quote that never
        # closes is rejected by itself: tests/export/test_import_csv_rows.py.)
        "empty.csv": b"",
        "truncated.parquet": b"",
    }
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.table({"event_id": ["t1"] * 1000, "user_id": ["u1"] * 1000}), buffer)
    whole = buffer.getvalue().to_pybytes()
    files["truncated.parquet"] = whole[: len(whole) // 2] + whole[-8:]  # footer, no body
    out = {}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        out[name] = tmp_path / name
    return out


@pytest.mark.parametrize("name", ["not-parquet.parquet", "truncated.parquet", "empty.csv"])
def test_an_unreadable_file_is_one_line_naming_it(tmp_path: Path, name: str) -> None:
    path = _files(tmp_path)[name]
    done = _cli(path, tmp_path / "data")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"avila: cannot read {path}"), lines[0]
    assert "Traceback" not in done.stderr


def test_an_unreadable_file_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    files = _files(tmp_path)
    good = tmp_path / "good.ndjson"
    good.write_text("\n".join(json.dumps(e) for e in d.make_events("keep", n=5)) + "\n")
    data_dir = tmp_path / "data"
    assert _cli(good, data_dir).returncode == 0
    assert _cli(files["truncated.parquet"], data_dir).returncode == 2
    again = _cli(good, data_dir)
    assert "5 rows: 0 accepted, 5 duplicates, 0 rejected" in again.stderr


def test_a_file_that_breaks_midway_stores_nothing_and_leaves_no_held_rows(
    tmp_path: Path,
) -> None:
    """The second row group's ``data`` pages are garbage: the first batch was read, validated
    and streamed into the store before the read fails, so the failure comes from inside the
    store's INSERT; it still reads as one line naming the file, the transaction stores nothing,
    and the held-back rows' spill file (the file repeats an id) is gone."""
    n, group = 260_000, 130_000
    ids = [f"mid-{i}" for i in range(n)]
    ids[7] = ids[3]  # a repeated id: held back, spilled to a file beside the store
    table = pa.table(
        {
            "event_id": ids,
            "user_id": [f"u{i % 977}" for i in range(n)],
            "event_type": ["page_view"] * n,
            "timestamp": ["2025-11-26T10:00:00Z"] * n,
            "data": [json.dumps({"url": f"/p/{i}", "title": f"T{i}"}) for i in range(n)],
        }
    )
    whole = tmp_path / "whole.parquet"
    pq.write_table(table, whole, row_group_size=group)
    chunk = pq.ParquetFile(whole).metadata.row_group(1).column(4)
    assert chunk.path_in_schema == "data"
    content = bytearray(whole.read_bytes())
    start = chunk.data_page_offset + 40
    content[start : start + 2000] = b"\xab" * 2000
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(bytes(content))
    data_dir = tmp_path / "data"

    done = _cli(broken, data_dir)

    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"avila: cannot read {broken}"), done.stderr
    assert not list(data_dir.glob("avila.duckdb.import-held-*"))
    again = _cli(whole, data_dir)  # nothing of the broken file was stored
    assert f"{n} rows: {n - 1} accepted, 1 duplicates, 0 rejected" in again.stderr, again.stderr
