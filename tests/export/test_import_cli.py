"""``avila import`` and ``avila export``: direct store access and through a running server,
with round trips export -> import -> export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from avila.cli import main
from tests.conftest import TEST_KEY
from tests.export import export_data as d


def use_store(monkeypatch: pytest.MonkeyPatch, directory: Path, backend: str) -> None:
    """Point the settings at a store of ``backend`` under ``directory``."""
    monkeypatch.setenv("AVILA_DATA_DIR", str(directory))
    if backend == "chdb":
        monkeypatch.setenv("AVILA_STORAGE_URL", f"chdb://{directory.resolve() / 'avila.chdb'}")
    else:
        monkeypatch.delenv("AVILA_STORAGE_URL", raising=False)


@pytest.fixture(params=["duckdb", "chdb"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str) -> Path:
    """A fresh store (DuckDB, or embedded ClickHouse) for direct (no server) commands."""
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / "data"
    use_store(monkeypatch, directory, backend)
    return directory


def _ndjson(path: Path, lines: list[Any]) -> Path:
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines)
        + "\n",
        encoding="utf-8",
    )
    return path


def _export(tmp_path: Path, fmt: str, *extra: str) -> dict[str, dict[str, Any]]:
    out = tmp_path / f"export-{len(list(tmp_path.iterdir()))}.{fmt}"
    assert main(["export", "-o", str(out), *extra]) == 0
    readers = {"parquet": d.read_parquet_arrow, "csv": d.read_csv_arrow, "ndjson": d.read_ndjson}
    return d.normalise(readers[fmt](out.read_bytes()))


def test_direct_import_validates_dedups_and_reports(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = d.make_events("imp")
    bad = {"event_id": "imp-bad", "event_type": {"type": "PageView", "data": {"url": "/"}}}
    lines = [*events[:10], "{not json", "", bad, *events[10:]]
    source = _ndjson(tmp_path / "events.ndjson", lines)

    assert main(["import", str(source), "-q"]) == 1
    err = capsys.readouterr().err
    assert f"{len(events) + 2} rows: {len(events)} accepted, 0 duplicates, 2 rejected" in err
    assert "row 11: malformed_json" in err
    assert "row 13: invalid_event" in err and "user_id" in err

    assert main(["import", str(source), "-q"]) == 1
    assert f"0 accepted, {len(events)} duplicates, 2 rejected" in capsys.readouterr().err

    assert _export(tmp_path, "parquet") == d.expected_rows(events)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "ndjson"])
def test_export_import_round_trip(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, backend: str
) -> None:
    events = d.make_events("rt")
    assert main(["import", str(_ndjson(tmp_path / "seed.ndjson", events)), "-q"]) == 0
    exported = tmp_path / f"all.{fmt}"
    assert main(["export", "-o", str(exported)]) == 0

    use_store(monkeypatch, tmp_path / "copy", backend)
    assert main(["import", str(exported), "-q"]) == 0
    assert _export(tmp_path, "ndjson") == d.expected_rows(events)


def test_flat_csv_without_json_columns_imports(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "hand.csv"
    source.write_text(
        "event_id,user_id,timestamp,event_type,url,title,product_id,quantity,price,browser,city\n"
        "h1,u1,2025-11-26 10:00:00.5,PageView,/home,Início,,,,Firefox,Porto\n"
        "h2,u1,2025-11-26T10:01:00Z,add_to_cart,,,sku-1,2,9.5,,\n"
        "h3,,2025-11-26T10:02:00Z,Login,,,,,,,\n",
        encoding="utf-8",
    )
    assert main(["import", str(source), "-q"]) == 1
    assert "row 3: invalid_event" in capsys.readouterr().err
    rows = _export(tmp_path, "ndjson")
    assert rows["h1"]["data"] == {"url": "/home", "title": "Início"}
    assert rows["h1"]["context"] == {
        "device": {"browser": "Firefox"},
        "location": {"city": "Porto"},
    }
    assert rows["h1"]["timestamp"].isoformat() == "2025-11-26T10:00:00.500000+00:00"
    assert rows["h2"]["data"] == {"product_id": "sku-1", "quantity": 2, "price": 9.5}
    assert set(rows) == {"h1", "h2"}


def test_direct_mode_refuses_a_store_held_by_a_server(
    server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AVILA_DATA_DIR", str(server.data_dir))
    assert main(["export", "-o", str(tmp_path / "x.csv")]) == 2
    assert "--url" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_import_and_export_through_a_server(
    server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    prefix = d.unique_prefix()
    events = d.make_events(prefix, n=25)
    source = _ndjson(tmp_path / "events.ndjson", events)
    args = ["--url", server.url, "--api-key", TEST_KEY]
    assert main(["import", str(source), "-q", "--batch-size", "10", *args]) == 0
    assert "25 accepted, 0 duplicates, 0 rejected" in capsys.readouterr().err
    assert main(["import", str(source), "-q", *args]) == 0
    assert "0 accepted, 25 duplicates" in capsys.readouterr().err

    users = [a for i in range(4) for a in ("--user-id", f"{prefix}-u{i}")]
    assert _export(tmp_path, "csv", *args, *users) == d.expected_rows(events)
    assert main(["import", str(tmp_path / "events.json"), *args]) == 2  # no such file


def test_json_array_files_are_refused(data_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "events.json"
    source.write_text("[]")
    assert main(["import", str(source)]) == 2


class _Terminal:
    """stderr as a terminal (tqdm draws its bar only there), keeping what was written."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


def test_direct_import_shows_rows_per_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CSV and NDJSON progress is counted in bytes; the bar carries the rows and rows/s."""
    use_store(monkeypatch, tmp_path / "data", "duckdb")
    events = [{**e, "event_id": f"rate-{i}"} for i, e in enumerate(d.make_events("rate"))]
    source = _ndjson(tmp_path / "rate.ndjson", events)
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main(["import", str(source), "--batch-size", "2"]) == 0
    last_bar = [line for line in terminal.text.split("\r") if "import rate.ndjson" in line][-1]
    assert f"{len(events):,} rows" in last_bar and "rows/s" in last_bar
