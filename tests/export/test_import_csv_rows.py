"""``avila import`` of CSV files that are broken row by row: a number column holding text, a
row with too many or too few fields, a quote left open at the end of the file. Each bad row is
rejected by itself (row number, code, message, field path) and every other row is stored; the
file is not one "cannot read" error any more. Real files, a real DuckDB (or embedded ClickHouse)
store or a real server, the real CLI; the API's own answer is the oracle for the number cases."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from tests.conftest import TEST_KEY
from tests.export import export_data as d
from tests.export.test_export_import_edge_cases import _exported, _import, _report
from tests.export.test_import_cli import use_store

_TS = "2025-11-26T10:00:00Z"
_NUMBERS_HEADER = (
    "event_id,user_id,timestamp,event_type,url,product_id,order_id,quantity,price,revenue"
)

#: ``(id suffix, event type, quantity, price, revenue)`` as written in the CSV (raw field text;
#: ``None``: the field is left empty, unquoted). The first and the last rows are bad.
_NUMBER_ROWS: list[tuple[str, str, str | None, str | None, str | None]] = [
    ("two", "add_to_cart", "two", "9.5", None),  # row 1: a word in quantity
    ("ok", "add_to_cart", "2", "9.5", None),
    ("comma", "product_view", "1", '"9,99"', None),  # a decimal comma in price
    ("quoted-empty", "add_to_cart", "1", '""', None),  # quoted empty: no price
    ("empty", "add_to_cart", None, "3.25", None),  # empty: no quantity (optional)
    ("spaces", "add_to_cart", " 3 ", " 4.5 ", None),  # the CSV reader trimmed numbers
    ("huge", "add_to_cart", "99999999999999999999", "1", None),  # beyond int64
    ("fraction", "add_to_cart", "1.5", "1", None),  # not a count
    ("huge-price", "add_to_cart", "1", "1e16", None),  # a number, over the API's bound
    ("unicode", "add_to_cart", "1", "九", None),
    ("revenue", "purchase", None, None, "abc"),
    ("no-revenue", "purchase", None, None, None),  # missing required number
    ("cart", "checkout", None, None, "€12"),  # Checkout's revenue is its cart_value
    ("page", "page_view", "two", "x", "y"),  # not numbers, but no part of a page view
    ("last", "add_to_cart", "três", "1", None),  # the last row
]


def _api_value(text: str | None) -> Any:
    """What a client sends for the CSV field: the number it spells, else the text."""
    if text is not None and text.startswith('"'):
        text = text[1:-1].replace('""', '"')  # a quoted field
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float) else text


def _number_event(prefix: str, row: tuple[str, str, str | None, str | None, str | None]) -> Any:
    suffix, kind, quantity, price, revenue = row
    data: dict[str, Any] = {
        "add_to_cart": {"product_id": "p1", "quantity": quantity, "price": price},
        "product_view": {"product_id": "p1", "quantity": quantity, "price": price},
        "purchase": {"order_id": "o1", "revenue": revenue},
        "checkout": {"cart_value": revenue},
        "page_view": {},
    }[kind]
    data = {k: _api_value(v.strip() if v else v) for k, v in data.items()}
    data = {k: v for k, v in data.items() if v is not None}
    pascal = "".join(part.title() for part in kind.split("_"))
    return {
        "event_id": f"{prefix}-{suffix}",
        "user_id": "u1",
        "timestamp": _TS,
        "event_type": {"type": pascal, "data": {"url": "/p"} if kind == "page_view" else data},
    }


def _numbers_csv(path: Path, prefix: str) -> Path:
    lines = [_NUMBERS_HEADER]
    for suffix, kind, quantity, price, revenue in _NUMBER_ROWS:
        url = "/p" if kind == "page_view" else ""
        product = "p1" if kind in ("add_to_cart", "product_view") else ""
        order = "o1" if kind == "purchase" else ""
        fields = [f"{prefix}-{suffix}", "u1", _TS, kind, url, product, order]
        fields += [v if v is not None else "" for v in (quantity, price, revenue)]
        lines.append(",".join(fields))
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def _stored_by_server(client: httpx.Client, user_id: str) -> dict[str, dict[str, Any]]:
    response = client.post(
        "/api/v1/export", json={"format": "parquet", "filters": {"user_ids": [user_id]}}
    )
    assert response.status_code == 200, response.text
    rows = pq.read_table(io.BytesIO(response.content)).to_pylist()
    return {row["event_id"]: row for row in rows}


@pytest.mark.parametrize(
    ("via", "batch"),
    [("duckdb", None), ("duckdb", "4"), ("duckdb", "1"), ("chdb", None), ("server", None)],
)
def test_text_in_a_number_column_rejects_its_row_as_the_api_does(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    server: Any,
    client: httpx.Client,
    capsys: pytest.CaptureFixture[str],
    via: str,
    batch: str | None,
) -> None:
    """A word, a decimal comma, a fraction in a count, a number beyond 64 bits, unicode digits:
    each used to stop the whole import ("CSV conversion error to int64: invalid value 'two'").
    Now the row's event gets the field as written (a number when it spells one, else text) and
    the API's rules judge it: same code, message and field path as the batch endpoint gives.
    An empty field (quoted or not) is a missing number; a page view's number columns are no
    part of its event, whatever they hold."""
    monkeypatch.chdir(tmp_path)
    use_store(monkeypatch, tmp_path / "data", "chdb" if via == "chdb" else "duckdb")
    prefix = d.unique_prefix()
    source = _numbers_csv(tmp_path / "numbers.csv", prefix)
    # The API's verdict on the same events (other ids: the server is the import's store too).
    events = [_number_event(f"api-{prefix}", row) for row in _NUMBER_ROWS]
    response = client.post("/api/v1/events/batch", json={"events": events})
    api = {
        item["index"] + 1: (
            item["code"],
            item["path"].split("]", 1)[1].lstrip("."),
            item["message"],
        )
        for item in response.json()["rejected"]
    }
    assert {row: path for row, (_, path, _) in api.items()} == {
        1: "event_type.data.quantity",
        3: "event_type.data.price",
        7: "event_type.data.quantity",
        8: "event_type.data.quantity",
        9: "event_type.data.price",
        10: "event_type.data.price",
        11: "event_type.data.revenue",
        12: "event_type.data.revenue",
        13: "event_type.data.cart_value",
        15: "event_type.data.quantity",
    }, api
    if via == "server":
        extra = ["--url", server.url, "--api-key", TEST_KEY]
    else:
        extra = ["--batch-size", batch] if batch else []
    code, err = _import(source, capsys, *extra)
    assert code == 1, err
    assert "15 rows: 5 accepted, 0 duplicates, 10 rejected" in err, err
    assert _report(err) == {row: (c, path) for row, (c, path, _) in api.items()}, err
    for row, (c, path, message) in api.items():
        assert f"  row {row}: {c}: {message} at {path}" in err, err
    good = {f"{prefix}-{s}" for s in ("ok", "quoted-empty", "empty", "spaces", "page")}
    stored = _stored_by_server(client, "u1") if via == "server" else _exported(tmp_path)
    stored = {k: v for k, v in stored.items() if k.startswith(prefix)}
    assert set(stored) == good
    assert (stored[f"{prefix}-ok"]["quantity"], stored[f"{prefix}-ok"]["price"]) == (2, 9.5)
    assert stored[f"{prefix}-quoted-empty"]["price"] is None
    assert stored[f"{prefix}-empty"]["quantity"] is None
    assert (stored[f"{prefix}-spaces"]["quantity"], stored[f"{prefix}-spaces"]["price"]) == (3, 4.5)
    assert stored[f"{prefix}-page"]["quantity"] is None


# --- rows with the wrong number of fields ----------------------------------------------------

_HEADER = "event_id,user_id,timestamp,event_type,url,title"


def _row(event_id: str, user: str = "u1", title: str = "Home") -> str:
    return f"{event_id},{user},{_TS},page_view,/p,{title}"


def _field_count_rows(prefix: str) -> tuple[list[str], dict[int, str]]:
    """Rows and the expected ``row -> message`` of the bad ones: too many fields in the first
    row, too few, a quoted multi-line value with one field too many, a bad user after skipped
    rows (its number must not move), a rejected row's id reused by a later good row, and too
    few fields in the last row."""
    rows = [
        _row(f"{prefix}-1") + ",surplus",  # 1: seven fields
        _row(f"{prefix}-2"),
        f"{prefix}-3,u1,{_TS},page_view",  # 3: four fields
        _row(f"{prefix}-4", title='"two\nlines"') + ",x",  # 4: a two-line row, seven fields
        _row(f"{prefix}-5", user='""'),  # 5: the API's own rejection (user_id too short)
        _row(f"{prefix}-6", title='"two\nlines, fine"'),
        _row(f"{prefix}-1"),  # 7: the id of rejected row 1, stored
        f"{prefix}-8",  # 8: one field
    ]
    bad = {
        1: "row has 7 fields, the header has 6",
        3: "row has 4 fields, the header has 6",
        4: "row has 7 fields, the header has 6 (the row spans 2 lines)",
        8: "row has 1 field, the header has 6",
    }
    return rows, bad


@pytest.mark.parametrize(
    ("via", "batch"),
    [("duckdb", None), ("duckdb", "2"), ("duckdb", "1"), ("chdb", None), ("server", None)],
)
def test_a_row_with_the_wrong_number_of_fields_is_rejected_by_itself(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    server: Any,
    client: httpx.Client,
    capsys: pytest.CaptureFixture[str],
    via: str,
    batch: str | None,
) -> None:
    """Used to stop the import: "CSV parse error: Expected 6 columns, got 7"."""
    monkeypatch.chdir(tmp_path)
    use_store(monkeypatch, tmp_path / "data", "chdb" if via == "chdb" else "duckdb")
    prefix = d.unique_prefix()
    rows, bad = _field_count_rows(prefix)
    source = tmp_path / "fields.csv"
    source.write_text("\r\n".join([_HEADER, *rows]) + "\r\n", "utf-8")
    if via == "server":
        extra = ["--url", server.url, "--api-key", TEST_KEY]
    else:
        extra = ["--batch-size", batch] if batch else []
    code, err = _import(source, capsys, *extra)
    assert code == 1, err
    assert "8 rows: 3 accepted, 0 duplicates, 5 rejected" in err, err
    assert _report(err) == {
        **dict.fromkeys(bad, ("malformed_csv", "")),
        5: ("invalid_event", "user_id"),
    }, err
    for row, message in bad.items():
        assert f"  row {row}: malformed_csv: {message}\n" in err, err
    stored = _stored_by_server(client, "u1") if via == "server" else _exported(tmp_path)
    stored = {k: v for k, v in stored.items() if k.startswith(prefix)}
    assert set(stored) == {f"{prefix}-2", f"{prefix}-6", f"{prefix}-1"}
    assert stored[f"{prefix}-6"]["title"] == "two\nlines, fine"


def test_bad_rows_across_csv_blocks_keep_their_row_numbers(
    store_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file over one block of the reader (16 MB) with bad rows of both kinds scattered
    through it, around the first block's end included: every row number is the file's."""
    n = 60_000
    pad = "p" * 300
    bad_fields = {1, 2, 29_000, 29_001, 29_500, 30_000, 45_000, n}
    bad_numbers = {3, 29_002, 30_001, n - 1}
    source = tmp_path / "big.csv"
    with open(source, "w", encoding="utf-8") as f:
        f.write("event_id,user_id,event_type,product_id,quantity,notes\n")
        for i in range(1, n + 1):
            quantity = "many" if i in bad_numbers else str(i % 5)
            extra = ",surplus" if i in bad_fields else ""
            f.write(f"blk-{i},u,add_to_cart,p,{quantity},{pad}{extra}\n")
    assert source.stat().st_size > 17 << 20
    code, err = _import(source, capsys)
    assert code == 1, err
    rejected = len(bad_fields) + len(bad_numbers)
    assert f"{n} rows: {n - rejected} accepted, 0 duplicates, {rejected} rejected" in err, err
    expected = dict.fromkeys(bad_fields, ("malformed_csv", ""))
    expected |= dict.fromkeys(bad_numbers, ("invalid_event", "event_type.data.quantity"))
    assert _report(err) == expected, err
    stored = _exported(tmp_path)
    assert len(stored) == n - rejected
    assert stored["blk-29003"]["quantity"] == 29_003 % 5  # values stay with their own rows
    assert stored["blk-59998"]["quantity"] == 59_998 % 5


# --- a quote left open at the end of the file ------------------------------------------------

_SHORT_HEADER = "event_id,user_id,timestamp,event_type,url"


def _short(event_id: str, url: str = "/p") -> str:
    return f"{event_id},u1,{_TS},page_view,{url}"


@pytest.mark.parametrize("via", ["duckdb", "chdb", "server"])
def test_a_quote_left_open_rejects_its_row_and_the_lines_after_it_are_read_again(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    server: Any,
    client: httpx.Client,
    capsys: pytest.CaptureFixture[str],
    via: str,
) -> None:
    """A quote that never closes made the rest of the file one value: with the quote in the
    timestamp the row had too few fields and the import stopped; with it in the last column
    the following lines were silently stored as the url of one event. Now that row is rejected
    (it names the column) and the lines after its line are read as rows again."""
    monkeypatch.chdir(tmp_path)
    use_store(monkeypatch, tmp_path / "data", "chdb" if via == "chdb" else "duckdb")
    prefix = d.unique_prefix()
    files = {
        # The quote in a middle column: the merged row has three fields, not five.
        "middle.csv": [
            _short(f"{prefix}-m1"),
            f'{prefix}-m2,u1,"{_TS},page_view,/p',
            _short(f"{prefix}-m3"),
            _short(f"{prefix}-m4", url="/a"),
        ],
        # The quote in the last column: the merged row has five fields.
        "last.csv": [
            _short(f"{prefix}-l1"),
            _short(f"{prefix}-l2", url='"/p'),
            _short(f"{prefix}-l3"),
            _short(f"{prefix}-l4"),
        ],
    }
    extra = ["--url", server.url, "--api-key", TEST_KEY] if via == "server" else []
    found = {}
    for name, rows in files.items():
        source = tmp_path / name
        source.write_text("\n".join([_SHORT_HEADER, *rows]) + "\n", "utf-8")
        code, err = _import(source, capsys, *extra)
        assert code == 1, err
        assert "4 rows: 3 accepted, 0 duplicates, 1 rejected" in err, err
        found[name] = err
    column = {"middle.csv": "timestamp", "last.csv": "event_type.data.url"}
    for name, err in found.items():
        assert _report(err) == {2: ("malformed_csv", column[name])}, err
        assert "the quote opened in this row is never closed" in err, err
        assert "the 2 lines after this row's line were read again as rows" in err, err
    stored = _stored_by_server(client, "u1") if via == "server" else _exported(tmp_path)
    stored = {k: v for k, v in stored.items() if k.startswith(prefix)}
    assert set(stored) == {f"{prefix}-{s}" for s in ("m1", "m3", "m4", "l1", "l3", "l4")}
    assert stored[f"{prefix}-m4"]["url"] == "/a"
    assert stored[f"{prefix}-l4"]["url"] == "/p"


def test_a_quote_left_open_on_the_last_line_rejects_that_row(
    store_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No line break at the end: nothing is swallowed, but the row's value is not closed."""
    source = tmp_path / "end.csv"
    source.write_text(
        "\n".join([_SHORT_HEADER, _short("end-1"), _short("end-2", url='"/p')]), "utf-8"
    )
    code, err = _import(source, capsys)
    assert code == 1, err
    assert "2 rows: 1 accepted, 0 duplicates, 1 rejected" in err, err
    assert _report(err) == {2: ("malformed_csv", "event_type.data.url")}, err
    assert "the quote opened in this row is never closed" in err, err
    assert set(_exported(tmp_path)) == {"end-1"}


@pytest.mark.parametrize("end", ["\n", ""])
def test_a_closed_multiline_value_at_the_end_is_not_taken_for_an_open_quote(
    store_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], end: str
) -> None:
    """Quotes inside the value, a line break at its end, an empty quoted value and a value of
    quotes only: all closed, all stored as written."""
    source = tmp_path / "closed.csv"
    rows = [
        _short("c-1", url='""'),
        _short("c-2", url='""""'),
        _short("c-3", url='"a ""b""\nc\n"'),
    ]
    source.write_text("\n".join([_SHORT_HEADER, *rows]) + end, "utf-8")
    code, err = _import(source, capsys)
    assert code == 0, err
    assert "3 rows: 3 accepted, 0 duplicates, 0 rejected" in err, err
    stored = _exported(tmp_path)
    assert stored["c-1"]["url"] == ""
    assert stored["c-2"]["url"] == '"'
    assert stored["c-3"]["url"] == 'a "b"\nc\n'


def test_every_row_bad_stores_nothing_and_reports_each(
    store_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "bad.csv"
    rows = [_short("b-1") + ",x", "b-2", _short("b-3") + ",y,z"]
    source.write_text("\n".join([_SHORT_HEADER, *rows]) + "\n", "utf-8")
    code, err = _import(source, capsys)
    assert code == 1, err
    assert "3 rows: 0 accepted, 0 duplicates, 3 rejected" in err, err
    assert _report(err) == {
        1: ("malformed_csv", ""),
        2: ("malformed_csv", ""),
        3: ("malformed_csv", ""),
    }


def test_rows_read_again_after_an_open_quote_are_deduplicated(
    store_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first pass (ids only) does not look for open quotes; the rows read again after one
    are held back and judged exactly: an id seen before them, or twice among them, is a
    duplicate."""
    source = tmp_path / "again.csv"
    rows = [
        _short("d-1"),
        _short("d-2", url='"/p'),
        _short("d-3"),
        _short("d-1", url="/again"),
        _short("d-3", url="/again"),
    ]
    source.write_text("\n".join([_SHORT_HEADER, *rows]) + "\n", "utf-8")
    code, err = _import(source, capsys)
    assert code == 1, err
    assert "5 rows: 2 accepted, 2 duplicates, 1 rejected" in err, err
    stored = _exported(tmp_path)
    assert set(stored) == {"d-1", "d-3"}
    assert stored["d-1"]["url"] == "/p" and stored["d-3"]["url"] == "/p"
