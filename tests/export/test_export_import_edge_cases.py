"""Exports and imports at their edges, each through the real CLI, a real DuckDB file or a real
server: times at the ends of the calendar, CSV values that span lines or read like nulls,
non-finite numbers, a byte-order mark, events too large for one HTTP batch, and CSV columns
the import does not use. Each case is compared with what the API itself answers or with the
file read back independently (pyarrow)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from avila.cli import main
from tests.conftest import TEST_KEY
from tests.export import export_data as d
from tests.export.test_import_cli import use_store

_REPORT = re.compile(r"^  row (\d+): (\w+): (.*?)(?: at (\S+))?$")


def _import(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["import", str(path), "-q", *extra])
    return code, capsys.readouterr().err


def _report(err: str) -> dict[int, tuple[str, str]]:
    """``row -> (code, path)`` of the rejected rows the import printed."""
    found = {}
    for line in err.splitlines():
        match = _REPORT.match(line)
        if match:
            found[int(match[1])] = (match[2], match[4] or "")
    return found


def _exported(tmp_path: Path, *extra: str) -> dict[str, dict[str, Any]]:
    """The store's rows (``avila export`` as NDJSON, read with json) by event id."""
    out = tmp_path / f"check-{len(list(tmp_path.iterdir()))}.ndjson"
    assert main(["export", "-o", str(out), *extra]) == 0
    return {row["event_id"]: row for row in d.read_ndjson(out.read_bytes())}


def _api_rejections(client: httpx.Client, events: list[dict[str, Any]]) -> dict[int, Any]:
    """``index -> (code, path without the events[i] prefix)`` as the batch endpoint answers."""
    response = client.post("/api/v1/events/batch", json={"events": events})
    assert response.status_code == 202, response.text
    out = {}
    for item in response.json()["rejected"]:
        path = item["path"].split("]", 1)[1].lstrip(".")
        out[item["index"]] = (item["code"], path)
    return out


# --- times before 0001-01-01 UTC: the API refuses them, so must the import ----------------


def _seed(event_id: str, timestamp: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "user_id": "early",
        "timestamp": timestamp,
        "event_type": {"type": "Login", "data": {}},
    }


EARLY = [
    ("year-0-z", "0000-12-31T23:00:00Z"),  # year 0: no such date
    ("year-0-naive", "0000-06-01 12:00:00"),
    ("year-1-offset", "0001-01-01T00:00:00+05:45"),  # year 0 once converted to UTC
    ("year-1-ok", "0001-01-01T06:00:00+05:45"),  # 0001-01-01T00:15Z: the earliest kind allowed
    ("year-1-z", "0001-01-01T00:00:00Z"),
    ("before-1970", "1969-12-31T23:59:59.999999Z"),
]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "ndjson"])
def test_import_refuses_times_before_year_one_as_the_api_does(
    store_dir: Path,
    tmp_path: Path,
    client: httpx.Client,
    capsys: pytest.CaptureFixture[str],
    fmt: str,
) -> None:
    prefix = d.unique_prefix()
    events = [_seed(f"{prefix}-{name}", ts) for name, ts in EARLY]
    api = _api_rejections(client, events)
    assert set(api) == {0, 1, 2}, api  # the API's verdict, the oracle below
    rows = [
        {"event_id": e["event_id"], "user_id": "early", "timestamp": e["timestamp"]}
        | {"event_type": "login", "data": "{}"}
        for e in events
    ]
    source = tmp_path / f"early.{fmt}"
    if fmt == "ndjson":
        source.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    else:
        table = pa.table({k: pa.array([r[k] for r in rows], pa.string()) for k in rows[0]})
        if fmt == "csv":
            pa_csv.write_csv(table, source)
        else:
            pq.write_table(table, source)
    code, err = _import(source, capsys)
    assert code == 1, err
    assert _report(err) == {i + 1: api[i] for i in api}, err
    stored = _exported(tmp_path)
    assert set(stored) == {e["event_id"] for i, e in enumerate(events) if i not in api}
    assert stored[f"{prefix}-year-1-ok"]["timestamp"] == "0001-01-01T00:15:00.000000Z"


def test_parquet_timestamp_column_before_year_one_is_rejected_not_fatal(
    store_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typed Parquet timestamp (an Arrow int) may hold a time no RFC 3339 text names."""
    year_one_us = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
    table = pa.table(
        {
            "event_id": ["typed-early", "typed-ok"],
            "user_id": ["u", "u"],
            "timestamp": pa.array([year_one_us - 3_600_000_000, year_one_us], pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "event_type": ["login", "login"],
            "data": ["{}", "{}"],
        }
    )
    source = tmp_path / "typed.parquet"
    pq.write_table(table, source)
    code, err = _import(source, capsys)
    assert code == 1, err
    assert _report(err) == {1: ("invalid_event", "timestamp")}, err
    assert set(_exported(tmp_path)) == {"typed-ok"}


# --- export filters at the ends of the calendar ---------------------------------------------


@pytest.mark.parametrize(
    "filters",
    [
        {"start_time": "0001-01-01T00:00:00+01:00"},  # before year 1 in UTC: no lower bound
        {"end_time": "9999-12-31T23:59:59-01:00"},  # after 9999 in UTC: no upper bound
        {"start_time": "0001-01-01T00:00:00+01:00", "end_time": "9999-12-31T23:00:00-02:00"},
    ],
)
def test_export_time_range_past_the_calendar_selects_everything(
    client: httpx.Client, filters: dict[str, str]
) -> None:
    prefix = d.unique_prefix()
    events = d.make_events(prefix, n=5)
    assert client.post("/api/v1/events/batch", json={"events": events}).status_code == 202
    users = sorted({e["user_id"] for e in events})
    body = {"format": "ndjson", "filters": {"user_ids": users, **filters}}
    response = client.post("/api/v1/export", json=body)
    assert response.status_code == 200, response.text
    assert sorted(r["event_id"] for r in d.read_ndjson(response.content)) == sorted(
        e["event_id"] for e in events
    )


def test_export_time_range_entirely_before_year_one_is_empty(client: httpx.Client) -> None:
    body = {"format": "csv", "filters": {"end_time": "0001-01-01T00:30:00+01:00"}}
    response = client.post("/api/v1/export", json=body)
    assert response.status_code == 200, response.text
    assert d.read_csv_arrow(response.content) == []


# --- CSV: values spanning lines, values that read like nulls, columns not used --------------


def test_csv_export_with_multiline_values_imports_back_whole(
    store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export's CSV quotes values holding newlines (titles, user agents). Where the CSV
    reader's block (16 MB direct, 1 MB through a server) ended inside such a value, the import
    stopped with "CSV parser got out of sync with chunker". Where a block ends depends on the
    bytes before it: the first event's long url puts this file's first block end at one such
    place (found by trying: urls of 570 to 630 z's do)."""
    n = 6000
    pad = "é" * 700
    events = [
        {
            "event_id": f"ml-{i:05d}",
            "user_id": f"ml-u{i % 7}",
            "timestamp": f"2025-11-26T10:{i % 60:02d}:00.{i:06d}Z",
            "event_type": {
                "type": "PageView",
                "data": {"url": f"/p/{i}" if i else "/p/" + "z" * 600, "title": f"a\nb\r\n{i}"},
            },
            "context": {"user_agent": f'line one\nline two "{i}",{pad}'},
        }
        for i in range(n)
    ]
    seed = tmp_path / "seed.ndjson"
    seed.write_text("\n".join(json.dumps(e, ensure_ascii=False) for e in events) + "\n")
    assert main(["import", str(seed), "-q"]) == 0
    first = tmp_path / "first.csv"
    assert main(["export", "-o", str(first)]) == 0
    assert first.stat().st_size > 17 << 20  # more than one block of the import's reader

    use_store(monkeypatch, tmp_path / "copy", "duckdb")
    assert main(["import", str(first), "-q"]) == 0
    second = tmp_path / "second.csv"
    assert main(["export", "-o", str(second)]) == 0

    def rows(path: Path) -> list[dict[str, Any]]:
        table = pa_csv.read_csv(
            path,
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                strings_can_be_null=True, quoted_strings_can_be_null=False
            ),
        )
        return sorted(table.drop_columns(["received_at"]).to_pylist(), key=lambda r: r["event_id"])

    original = rows(first)
    assert len(original) == n and original[5]["title"] == "a\nb\r\n5"
    assert rows(second) == original


def test_csv_import_keeps_text_that_reads_like_a_null(
    store_dir: Path, tmp_path: Path, client: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only an empty unquoted field is null (docs/export.md); "NA" is Namibia, "None" a title."""
    source = tmp_path / "hand.csv"
    source.write_text(
        "event_id,user_id,timestamp,event_type,url,title,search_query,country,city,browser\n"
        "na-1,NA,2025-11-26T10:00:00Z,PageView,/a,None,,NA,N/A,null\n"
        "na-2,null,2025-11-26T10:00:01Z,Search,,,NaN,,#N/A,\n"
        "na-3,u3,2025-11-26T10:00:02Z,PageView,/c,,,,,\n",
        encoding="utf-8",
    )
    code, err = _import(source, capsys)
    assert code == 0, err
    rows = _exported(tmp_path)
    assert rows["na-1"]["user_id"] == "NA"
    assert rows["na-1"]["data"] == {"url": "/a", "title": "None"}
    assert rows["na-1"]["context"] == {
        "device": {"browser": "null"},
        "location": {"country": "NA", "city": "N/A"},
    }
    assert rows["na-2"]["user_id"] == "null"
    assert rows["na-2"]["data"] == {"query": "NaN"}
    assert rows["na-2"]["context"] == {"location": {"city": "#N/A"}}
    assert rows["na-3"]["title"] is None and rows["na-3"]["context"] == {}


def test_csv_column_the_import_does_not_use_cannot_fail_it(
    store_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An extra column that looks numeric in the first 16 MB and holds text later used to
    stop the import with an Arrow conversion error."""
    n = 60_000
    source = tmp_path / "extra.csv"
    with open(source, "w", encoding="utf-8") as f:
        f.write("event_id,user_id,event_type,data,notes,padding\n")
        for i in range(n):
            note = i if i < n - 3 else "see ticket"
            f.write(f'x-{i},u,login,"{{}}",{note},{"p" * 300}\n')
    assert source.stat().st_size > 17 << 20
    code, err = _import(source, capsys)
    assert code == 0, err
    assert f"{n} rows: {n} accepted, 0 duplicates, 0 rejected" in err


# --- numbers no JSON can carry ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_non_finite_flat_numbers_are_rejected_not_dropped(
    store_dir: Path,
    tmp_path: Path,
    client: httpx.Client,
    capsys: pytest.CaptureFixture[str],
    fmt: str,
) -> None:
    """Rows without ``data`` are rebuilt from the flat columns; a NaN or infinite price used
    to become ``null`` (stored without its price), where the API refuses non-finite numbers."""
    # The API's answer to an infinite price (1e999 is the only way JSON can say it).
    raw = (
        b'{"events":[{"user_id":"u","event_type":{"type":"AddToCart",'
        b'"data":{"product_id":"p","price":1e999}}}]}'
    )
    response = client.post(
        "/api/v1/events/batch", content=raw, headers={"content-type": "application/json"}
    )
    api = response.json()["rejected"][0]
    assert (api["code"], api["path"]) == ("invalid_event", "events[0].event_type.data.price")

    ids = ["nan-price", "inf-price", "neg-inf-revenue", "zero-price", "negative-zero-price"]
    types = ["add_to_cart", "add_to_cart", "checkout", "add_to_cart", "add_to_cart"]
    prices = [float("nan"), float("inf"), None, 0.0, -0.0]
    revenues = [None, None, float("-inf"), None, None]
    table = pa.table(
        {
            "event_id": ids,
            "user_id": ["u"] * 5,
            "timestamp": ["2025-11-26T10:00:00Z"] * 5,
            "event_type": types,
            "product_id": ["p", "p", None, "p", "p"],
            "price": pa.array(prices, pa.float64()),
            "revenue": pa.array(revenues, pa.float64()),
        }
    )
    source = tmp_path / f"numbers.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, source)
    else:
        pa_csv.write_csv(table, source)  # writes nan, inf, -inf as such
    code, err = _import(source, capsys)
    assert code == 1, err
    assert _report(err) == {
        1: ("invalid_event", "event_type.data.price"),
        2: ("invalid_event", "event_type.data.price"),
        3: ("invalid_event", "event_type.data.cart_value"),
    }, err
    stored = _exported(tmp_path)
    assert set(stored) == {"zero-price", "negative-zero-price"}
    assert repr(stored["negative-zero-price"]["price"]) == "-0.0"


# --- NDJSON with a byte-order mark and CRLF line ends --------------------------------------


@pytest.mark.parametrize("via", ["direct", "server"])
def test_ndjson_with_byte_order_mark_and_crlf_imports_every_line(
    store_dir: Path,
    tmp_path: Path,
    server: Any,
    client: httpx.Client,
    capsys: pytest.CaptureFixture[str],
    via: str,
) -> None:
    """Windows tools (PowerShell's Out-File, Excel's "UTF-8 CSV") start a file with a BOM;
    the first line used to be rejected as malformed JSON."""
    prefix = d.unique_prefix()
    seed = _seed(f"{prefix}-first", "2025-11-26T10:00:00Z")
    flat = {"event_id": f"{prefix}-flat", "user_id": "u", "event_type": "Logout"}
    source = tmp_path / "bom.ndjson"
    source.write_bytes(
        b"\xef\xbb\xbf" + (json.dumps(seed) + "\r\n" + json.dumps(flat) + "\r\n").encode()
    )
    extra = ("--url", server.url, "--api-key", TEST_KEY) if via == "server" else ()
    code, err = _import(source, capsys, *extra)
    assert code == 0, err
    assert "2 rows: 2 accepted, 0 duplicates, 0 rejected" in err
    if via == "direct":
        assert set(_exported(tmp_path)) == {f"{prefix}-first", f"{prefix}-flat"}


# --- through a server: a file of large events ---------------------------------------------


def test_import_through_a_server_keeps_each_request_under_the_batch_limit(
    server: Any,
    client: httpx.Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """2,000 events of 6 KB are 12 MB: one batch request over the endpoint's 10 MB limit,
    which the server refuses (the import stopped with "cannot reach"). An event over the
    32 KB limit is rejected as the API rejects it, by itself."""
    monkeypatch.chdir(tmp_path)
    prefix = d.unique_prefix()
    title = "✓" * 2000  # 6,000 bytes of UTF-8
    events = [
        {
            "event_id": f"{prefix}-{i}",
            "user_id": f"{prefix}-u",
            "event_type": {"type": "PageView", "data": {"url": "/", "title": title}},
        }
        for i in range(2000)
    ]
    huge = {**events[0], "event_id": f"{prefix}-huge"}
    huge["event_type"] = {"type": "PageView", "data": {"url": "/", "title": "y" * 40_000}}
    api = _api_rejections(client, [huge])
    assert api == {0: ("event_too_large", "")}
    source = tmp_path / "large.ndjson"
    lines = [json.dumps(e, ensure_ascii=False) for e in events]
    lines.insert(1000, json.dumps(huge))
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, err = _import(source, capsys, "--url", server.url, "--api-key", TEST_KEY)
    assert code == 1, err
    assert "2001 rows: 2000 accepted, 0 duplicates, 1 rejected" in err
    assert _report(err) == {1001: ("event_too_large", "")}, err
    response = client.post(
        "/api/v1/export", json={"format": "parquet", "filters": {"user_ids": [f"{prefix}-u"]}}
    )
    assert pq.read_table(io.BytesIO(response.content)).num_rows == 2000
