"""POST /api/v1/export against a real server: every format read back by pandas, pyarrow and
DuckDB equals what was ingested (types, unicode, nulls, millisecond timestamps). Every test runs
on a DuckDB-backed server and on one backed by embedded ClickHouse (chdb)."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from avila.testing import ServerProcess
from tests.conftest import TEST_KEY
from tests.export import export_data as d
from tests.industry40.test_i40_mqtt import wait_for


@pytest.fixture(scope="module", params=["duckdb", "chdb"])
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp(f"export-{request.param}")
    env = {"API_KEYS": TEST_KEY, "RATE_LIMIT_PER_MINUTE": "0"}
    if request.param == "chdb":
        env["AVILA_STORAGE_URL"] = f"chdb://{data.resolve() / 'avila.chdb'}"
    proc = ServerProcess(data, env=env).start()
    yield proc
    proc.stop()


READERS: dict[str, list[Callable[..., list[dict[str, Any]]]]] = {
    "csv": [d.read_csv_pandas, d.read_csv_arrow],
    "json": [d.read_json],
    "ndjson": [d.read_ndjson, d.read_ndjson_pandas],
    "parquet": [d.read_parquet_pandas, d.read_parquet_arrow, d.read_parquet_duckdb],
}
MEDIA = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}


def _read(reader: Callable[..., list[dict[str, Any]]], content: bytes, tmp: Path) -> Any:
    return reader(content, tmp) if reader is d.read_parquet_duckdb else reader(content)


@pytest.fixture(scope="module")
def ingested(server: Any) -> tuple[str, list[dict[str, Any]]]:
    prefix = d.unique_prefix()
    events = d.make_events(prefix)
    with httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}) as c:
        response = c.post("/api/v1/events/batch", json={"events": events})
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(events)
    return prefix, events


def _users(prefix: str) -> list[str]:
    return [f"{prefix}-u{i}" for i in range(4)]


@pytest.mark.parametrize("fmt", sorted(READERS))
def test_export_round_trip(
    client: httpx.Client, ingested: tuple[str, list[dict[str, Any]]], fmt: str, tmp_path: Path
) -> None:
    prefix, events = ingested
    response = client.post(
        "/api/v1/export", json={"format": fmt, "filters": {"user_ids": _users(prefix)}}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == MEDIA[fmt]
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="avila-default-')
    assert disposition.endswith(f'.{fmt}"')
    expected = d.expected_rows(events)
    for reader in READERS[fmt]:
        assert d.normalise(_read(reader, response.content, tmp_path)) == expected, reader.__name__


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        ({"event_types": ["purchase", "Custom"]}, lambda i: i % 5 in (3, 4)),
        (
            {"start_time": "2025-11-26T10:06:10.193Z", "end_time": "2025-11-26T10:12:13.263Z"},
            lambda i: 10 <= i < 20,
        ),
        ({"properties": {"context.device.browser": "Safari"}}, lambda i: i % 4 != 3),
        (
            {"properties": [{"property": "url", "operator": "prefix", "value": "/p/"}]},
            lambda i: i % 5 == 0,
        ),
        ({"properties": {"event_type.data.properties.plan": "pró"}}, lambda i: i % 5 == 4),
    ],
)
def test_export_filters(
    client: httpx.Client, ingested: tuple[str, list[dict[str, Any]]], filters: Any, keep: Any
) -> None:
    prefix, events = ingested
    body = {"format": "ndjson", "filters": {"user_ids": _users(prefix), **filters}}
    response = client.post("/api/v1/export", json=body)
    assert response.status_code == 200, response.text
    got = sorted(row["event_id"] for row in d.read_ndjson(response.content))
    assert got == sorted(f"{prefix}-e{i}" for i in range(len(events)) if keep(i))


@pytest.mark.parametrize("fmt", sorted(READERS))
def test_empty_export_is_a_valid_file(client: httpx.Client, fmt: str, tmp_path: Path) -> None:
    nobody = "nobody-" + d.unique_prefix()
    response = client.post(
        "/api/v1/export", json={"format": fmt, "filters": {"user_ids": [nobody]}}
    )
    assert response.status_code == 200
    for reader in READERS[fmt]:
        assert _read(reader, response.content, tmp_path) == []
    if fmt == "csv":
        assert response.content.startswith(b'"event_id","user_id"')


def _range(start: str, end: str) -> dict[str, Any]:
    return {"format": "csv", "filters": {"start_time": start, "end_time": end}}


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        ({"format": "xml"}, "validation_failed", "format"),
        ({"filters": {}}, "validation_failed", "format"),
        ({"format": "csv", "filters": {"users": ["a"]}}, "validation_failed", "filters"),
        (
            {"format": "csv", "filters": {"event_types": ["Teleport"]}},
            "unknown_event_type",
            "filters.event_types[0]",
        ),
        ({"format": "csv", "filters": {"properties": {"secret": "x"}}}, "unknown_property", None),
        (
            {"format": "csv", "filters": {"start_time": "yesterday"}},
            "validation_failed",
            "filters.start_time",
        ),
        (
            _range("2025-01-02T00:00:00Z", "2025-01-01T00:00:00Z"),
            "invalid_time_range",
            "filters.end_time",
        ),
    ],
)
def test_export_rejects_bad_requests(
    client: httpx.Client, body: Any, code: str, path: str | None
) -> None:
    response = client.post("/api/v1/export", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code
    if path is not None:
        assert error["details"][0]["path"] == path


def test_export_needs_a_key(server: Any) -> None:
    response = httpx.post(server.url + "/api/v1/export", json={"format": "csv"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"


def test_malformed_body_is_400(client: httpx.Client) -> None:
    response = client.post(
        "/api/v1/export", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


def test_seed_curl_body_works(client: httpx.Client) -> None:
    body = {
        "format": "csv",
        "filters": {
            "user_ids": ["user_001", "user_002"],
            "start_time": "2025-11-01T00:00:00Z",
            "end_time": "2025-11-30T23:59:59Z",
        },
    }
    response = client.post("/api/v1/export", json=body)
    assert response.status_code == 200
    assert response.content.splitlines()[0].startswith(b'"event_id"')


def test_export_is_in_openapi(client: httpx.Client) -> None:
    assert "post" in client.get("/openapi.json").json()["paths"]["/api/v1/export"]


@pytest.fixture(scope="module")
def user_with_40_000_events(server: ServerProcess) -> str:
    """The prefix of user ``<prefix>-u0``, who has 40,000 events; built once per server (the
    tests only read them)."""
    with httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}, timeout=30) as c:
        return _one_user_with_40_000_events(c)


def test_client_leaving_mid_export_leaves_the_store_clean(
    server: Any, client: httpx.Client, user_with_40_000_events: str
) -> None:
    prefix = user_with_40_000_events
    body = {"format": "csv", "filters": {"user_ids": [f"{prefix}-u0"]}}
    for _ in range(3):  # abandon a few exports half-way
        with client.stream("POST", "/api/v1/export", json=body) as response:
            assert response.status_code == 200
            next(response.iter_bytes())
    # Every store read channel is used again afterwards and answers correctly.
    for _ in range(6):
        response = client.post("/api/v1/export", json={**body, "format": "ndjson"})
        assert len(response.content.splitlines()) == 40_000
        assert client.get("/health").json()["storage"] == "ok"


def test_an_export_runs_in_a_process_of_its_own_that_a_leaving_client_stops(
    server: ServerProcess, client: httpx.Client, user_with_40_000_events: str
) -> None:
    """With the DuckDB store process each export is encoded in a process of its own, started
    one export ahead (the server only relays its bytes, benchmarks/RESULTS.md "Ingest while an
    export streams"); a client that leaves mid-way has it stopped, and the next one is ready.
    With chdb (no store process) exports run in a server thread: no process at all."""
    prefix = user_with_40_000_events
    on_duckdb = bool(server.store_pids())
    # an export (of nothing) leaves one process started for the next export
    assert client.post("/api/v1/export", json={"format": "csv", "filters": {"user_ids": ["-"]}})
    ready = _eventually_one_process(server) if on_duckdb else set()
    assert set(server.query_worker_pids()) == ready

    body = {"format": "json", "filters": {"user_ids": [f"{prefix}-u0"]}}
    with _stalled_export(server, body):
        # the client reads nothing more: the export cannot have finished (see _stalled_export)
        assert ready <= set(server.query_worker_pids())
    # liveness, not speed: the process is killed at once
    wait_for(lambda: not ready & set(server.query_worker_pids()), timeout=60)
    if on_duckdb:
        assert _eventually_one_process(server) != ready  # a new one waits for the next export
    full = client.post("/api/v1/export", json=body)  # and a whole export still works
    assert len(full.json()) == 40_000


@contextlib.contextmanager
def _stalled_export(server: ServerProcess, body: dict[str, Any]) -> Iterator[None]:
    """Start an export and stop reading after its first bytes, then leave on exit. The client's
    receive buffer is made small: Linux lets an idle loopback socket's buffer grow to
    ``net.ipv4.tcp_rmem``'s maximum (32 MB here), which holds a whole 16 MB export, and then the
    export is over before the test looks (a CI run saw just that). Now at most the server's send
    buffer (``tcp_wmem``, 4 MB), its 64 KB write buffer and the pipe's are in flight."""
    payload = json.dumps(body).encode()
    head = (
        f"POST /api/v1/export HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {TEST_KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)  # before connect
        sock.settimeout(60)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(head + payload)
        received = b""
        while b"\r\n\r\n" not in received or len(received) < 1000:
            more = sock.recv(4096)
            assert more, received
            received += more
        assert received.startswith(b"HTTP/1.1 200"), received[:300]
        yield


def _eventually_one_process(server: ServerProcess) -> set[int]:
    def one() -> set[int] | None:
        pids = set(server.query_worker_pids())
        return pids if len(pids) == 1 else None

    found: set[int] = wait_for(one, timeout=60)
    return found


def _one_user_with_40_000_events(client: httpx.Client) -> str:
    """Ingest 40,000 events of user ``<prefix>-u0``; returns the prefix."""
    prefix = d.unique_prefix()
    template = d.make_events(prefix, n=5)
    for start in range(0, 40_000, 5000):
        events = [
            {**template[i % 5], "event_id": f"{prefix}-e-{i}", "user_id": f"{prefix}-u0"}
            for i in range(start, start + 5000)
        ]
        assert client.post("/api/v1/events/batch", json={"events": events}).status_code == 202
    return prefix
