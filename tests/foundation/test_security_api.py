"""Keys, scopes, project isolation, rate limits and CORS against real server processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from avila.security.keys import KeyStore
from avila.testing import ServerProcess
from tests.conftest import TEST_KEY, server_for
from tests.foundation.helpers import assert_error, page_view


def test_missing_and_unknown_keys_are_401(server) -> None:  # noqa: ANN001
    event = {"event": page_view()}
    assert_error(httpx.post(server.url + "/api/v1/events", json=event), 401, "missing_api_key")
    response = httpx.post(server.url + "/api/v1/events", json=event, headers={"x-api-key": "nope"})
    assert_error(response, 401, "invalid_api_key")


def test_scope_enforcement_and_project_isolation(make_server, tmp_path: Path) -> None:  # noqa: ANN001
    data = tmp_path / "data"
    keys = KeyStore(data / "keys.sqlite")
    read_only, _ = keys.create("alpha", ["read"])
    ingest_a, _ = keys.create("alpha", ["ingest"])
    ingest_b, _ = keys.create("beta", ["ingest", "read"])
    server = make_server(data_dir=data)
    event = {"event": page_view(event_id="shared-id")}

    denied = httpx.post(server.url + "/api/v1/events", json=event, headers={"x-api-key": read_only})
    error = assert_error(denied, 403, "missing_scope")
    assert error["details"][0]["required_scope"] == "ingest"

    first = httpx.post(
        server.url + "/api/v1/events", json=event, headers={"x-api-key": ingest_a}
    ).json()
    other = httpx.post(
        server.url + "/api/v1/events", json=event, headers={"x-api-key": ingest_b}
    ).json()
    # The same event_id in another project is a different event, not a duplicate.
    assert first["accepted"] == 1 and other["accepted"] == 1
    again = httpx.post(
        server.url + "/api/v1/events", json=event, headers={"x-api-key": ingest_b}
    ).json()
    assert again["duplicates"] == 1

    server.stop()
    import duckdb

    with duckdb.connect(str(data / "avila.duckdb"), read_only=True) as conn:
        rows = conn.execute(
            "SELECT project_id, count(*) FROM events GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert rows == [("alpha", 1), ("beta", 1)]


def test_keys_cli_and_revocation_take_effect_on_a_running_server(server) -> None:  # noqa: ANN001
    # The shared server: the key is new (project gamma, random secret) and revoked at the end.
    data = server.data_dir
    env = {"AVILA_DATA_DIR": str(data), "PATH": ""}
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "avila.cli",
            "keys",
            "create",
            "--project",
            "gamma",
            "--scopes",
            "ingest",
            "--name",
            "web",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    fields = dict(line.split(":", 1) for line in created.splitlines() if ":" in line)
    key, key_id = fields["key"].strip(), fields["key_id"].strip()
    assert key.startswith("ak_")
    headers = {"x-api-key": key}
    assert (
        httpx.post(
            server.url + "/api/v1/events", json={"event": page_view()}, headers=headers
        ).status_code
        == 202
    )

    listing = subprocess.run(
        [sys.executable, "-m", "avila.cli", "keys", "list"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert key_id in listing and key not in listing  # the secret is never shown again
    assert (data / "keys.sqlite").read_bytes().find(key.encode()) == -1  # only its hash is stored

    subprocess.run(
        [sys.executable, "-m", "avila.cli", "keys", "revoke", key_id],
        env=env,
        check=True,
        capture_output=True,
    )
    deadline = time.monotonic() + 10
    status = 202
    while status != 401 and time.monotonic() < deadline:
        status = httpx.post(
            server.url + "/api/v1/events", json={"event": page_view()}, headers=headers
        ).status_code
    assert status == 401


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A rate limit of 3 a minute per key, CORS off (the default): the limit test counts the
    bootstrap key's requests, the CORS test sends with a key of its own."""
    yield from server_for(
        tmp_path_factory, "limited-server", RATE_LIMIT_PER_MINUTE="3", ENABLE_CORS="false"
    )


def test_rate_limit_headers_and_429(limited_server: ServerProcess) -> None:
    server = limited_server
    headers = {"x-api-key": TEST_KEY}
    responses = [
        httpx.post(server.url + "/api/v1/events", json={"event": page_view()}, headers=headers)
        for _ in range(4)
    ]
    assert [r.status_code for r in responses] == [202, 202, 202, 429]
    for r in responses:
        assert r.headers["RateLimit-Limit"] == "3"
        assert int(r.headers["RateLimit-Reset"]) >= 0
    assert [r.headers["RateLimit-Remaining"] for r in responses[:3]] == ["2", "1", "0"]
    limited = assert_error(responses[3], 429, "rate_limited")
    assert limited["message"]
    assert int(responses[3].headers["Retry-After"]) >= 1
    # /health is never limited or authenticated.
    assert httpx.get(server.url + "/health").status_code == 200


def test_cors_preflight_and_headers(server) -> None:  # noqa: ANN001
    preflight = httpx.options(
        server.url + "/api/v1/events/batch",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key",
        },
    )
    assert preflight.status_code in (200, 204)
    assert preflight.headers["access-control-allow-origin"] in ("*", "https://shop.example")
    assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
    actual = httpx.post(
        server.url + "/api/v1/events",
        json={"event": page_view()},
        headers={"Origin": "https://shop.example", "x-api-key": TEST_KEY},
    )
    assert actual.status_code == 202
    assert actual.headers["access-control-allow-origin"] in ("*", "https://shop.example")


def test_cors_disabled_sends_no_cors_headers(limited_server: ServerProcess) -> None:
    server = limited_server
    # A key of its own: the bootstrap key's budget belongs to the rate limit test.
    key, _ = KeyStore(server.data_dir / "keys.sqlite").create("default", ["ingest"], "cors")
    response = httpx.post(
        server.url + "/api/v1/events",
        json={"event": page_view()},
        headers={"Origin": "https://shop.example", "x-api-key": key},
    )
    assert response.status_code == 202 and "access-control-allow-origin" not in response.headers
