"""Heavy queries are bounded: past ``AVILA_QUERY_TIMEOUT`` a query is cancelled in the store
process with a 504 ``query_timeout``; the server stays healthy and later queries are right.

Data: 3,000,000 generated events written straight into the DuckDB file before the server
starts. The heavy query is an unordered funnel filtered by a regular expression over a metadata
property and broken down by it: it reads and parses every row's JSON (no rollup or index can
answer it) and the regex keeps half the tags, so the funnel and its ~50,000-value breakdown run
over 1.5 M rows: 2.5-3.7 s with no limit on a quiet 2-core machine (2026-12-01), 5x the 0.5 s
limit. (The limit was 0.1 s until the light query, a profile scanning the 3 M rows for one
user, kept passing it ten times in a row while the suite ran two files at once.) (A regex keeping a few tags, used before, took only 0.34 s once funnels got faster.) The light query afterwards is one user's
profile, checked against the generated rows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from tests.conftest import TEST_KEY

from avila.config import Settings
from avila.errors import ConfigError, QueryTimeout
from avila.storage import open_store
from avila.storage.duckdb.store import DuckDBStore, resolve_memory_limit
from avila.storage.schema import EVENT_SCHEMA
from avila.testing.server import ServerProcess

ROWS = 3_000_000
USERS = 50_000
BASE_US = 1_761_955_200_000_000  # 2025-11-01T00:00:00Z
LIMIT_S = 0.5
#: On a loaded machine even the light query can pass the limit; it must answer right within a
#: few tries (a 504 in between is the limit doing its job, not an unhealthy server).
LIGHT_TRIES = 10


def _same(value: str) -> pa.Array:
    """ROWS copies of ``value`` (a string column built in Arrow, not from 3 M Python objects)."""
    return pa.repeat(pa.scalar(value, pa.string()), ROWS)


def _generate(path: Path) -> dict[str, int]:
    """Write the events; returns the event count per user."""
    rng = np.random.default_rng(13)
    users = rng.integers(0, USERS, ROWS)
    ts = BASE_US + np.sort(rng.integers(0, 28 * 86_400_000_000, ROWS))
    types = pa.array(["page_view", "add_to_cart", "purchase"])
    columns = {
        "project_id": _same("default"),
        "event_id": pc.binary_join_element_wise(
            "q-", pa.array(np.arange(ROWS)).cast(pa.string()), ""
        ),
        "user_id": pc.binary_join_element_wise("u-", pa.array(users).cast(pa.string()), ""),
        "ts": pa.array(ts).cast(pa.timestamp("us")),
        "received_at": pa.array(ts + 1_000).cast(pa.timestamp("us")),
        "event_type": pc.take(types, pa.array(rng.integers(0, 3, ROWS))),
        "data": _same('{"url":"/"}'),
        "metadata": pc.binary_join_element_wise(
            '{"tag":"t-', pa.array(rng.integers(0, 100_000, ROWS)).cast(pa.string()), '"}', ""
        ),
        "context": _same("{}"),
    }
    arrays = [
        columns[f.name] if f.name in columns else pa.nulls(ROWS, f.type) for f in EVENT_SCHEMA
    ]
    store = DuckDBStore(path)
    try:
        store.append_events(pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA))
    finally:
        store.close()
    counts = np.bincount(users, minlength=USERS)
    return {f"u-{u}": int(counts[u]) for u in (0, 1, 2)}


HEAVY = {
    "steps": [
        {"condition_type": kind, "condition_value": ""}
        for kind in ("page_view", "add_to_cart", "purchase")
    ],
    "mode": "unordered",
    "filters": [{"property": "metadata.tag", "operator": "regex", "value": "^t-[0-9]*[13579]$"}],
    "breakdown": "metadata.tag",
    "start_time": "2025-11-01T00:00:00Z",
    "end_time": "2025-12-01T00:00:00Z",
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    directory = tmp_path_factory.mktemp("heavy")
    return directory, _generate(directory / "avila.duckdb")


def test_a_query_past_the_limit_gets_504_and_the_server_stays_healthy(
    data_dir: tuple[Path, dict[str, int]], make_server: Callable[..., ServerProcess]
) -> None:
    directory, counts = data_dir
    server = make_server(directory, AVILA_QUERY_TIMEOUT=str(LIMIT_S))
    with httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}, timeout=60) as c:
        heavy = c.post("/api/v1/analytics/funnel", json=HEAVY)
        assert heavy.status_code == 504, heavy.text + server.log()[-3000:]
        error: dict[str, Any] = heavy.json()["error"]
        assert error["code"] == "query_timeout"
        assert f"{LIMIT_S:g} s" in error["message"]
        assert "AVILA_QUERY_TIMEOUT" in error["message"]

        health = c.get("/health")
        assert health.status_code == 200, health.text
        for user, expected in counts.items():
            for _ in range(LIGHT_TRIES):
                profile = c.get(f"/api/v1/users/{user}")
                if profile.status_code != 504:
                    break
            assert profile.status_code == 200, profile.text
            assert _event_count(profile.json()) == expected
        # The read channels serve again: more heavy queries (warm caches may let one finish in
        # time), health stays up.
        for _ in range(3):
            again = c.post("/api/v1/analytics/funnel", json=HEAVY)
            assert again.status_code in (200, 504), again.text
        assert c.get("/health").status_code == 200


def test_without_a_limit_the_heavy_query_answers(
    data_dir: tuple[Path, dict[str, int]], make_server: Callable[..., ServerProcess]
) -> None:
    """The control: the same query is valid and completes when the limit is off (0)."""
    directory, _ = data_dir
    server = make_server(directory, AVILA_QUERY_TIMEOUT="0")
    with httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}, timeout=300) as c:
        answer = c.post("/api/v1/analytics/funnel", json=HEAVY)
        assert answer.status_code == 200, answer.text


def _event_count(profile: dict[str, Any]) -> int:
    return int(profile["total_events"])


def test_the_store_cancels_a_query_past_its_limit_and_the_cursor_works_after(
    tmp_path: Path,
) -> None:
    store = DuckDBStore(tmp_path / "t.duckdb", query_timeout=0.2)
    try:
        with pytest.raises(QueryTimeout) as caught:
            store.query("SELECT sum(hash(i)) FROM range(100000000000) t(i)")
        assert caught.value.status == 504 and "0.2 s" in caught.value.message
        assert store.query("SELECT 42") == [(42,)]
        assert store.query_arrow("SELECT 7 AS x").column("x").to_pylist() == [7]
    finally:
        store.close()


def test_embedded_clickhouse_cancels_a_read_past_its_limit_with_the_same_error(
    tmp_path: Path,
) -> None:
    """The chdb backend gets the limit from the same setting (through ``open_store``) and the
    engine cancels the read (``max_execution_time``); the store answers after it."""
    store = open_store(f"chdb:///{tmp_path / 'ch'}", query_timeout=0.2)
    try:
        for read in (store.query, store.query_arrow):
            with pytest.raises(QueryTimeout) as caught:
                read("SELECT sum(cityHash64(number)) FROM numbers(100000000000)")
            assert caught.value.status == 504 and "0.2 s" in caught.value.message
            assert "AVILA_QUERY_TIMEOUT" in caught.value.message
        assert store.query("SELECT 42") == [(42,)]
        assert store.query_arrow("SELECT 7 AS x").column("x").to_pylist() == [7]
    finally:
        store.close()
    unlimited = open_store(f"chdb:///{tmp_path / 'ch'}", query_timeout=0)
    try:  # no limit: a read of a few seconds' work completes
        assert unlimited.query("SELECT count() FROM numbers(300000000) WHERE number % 7 = 0")
    finally:
        unlimited.close()


def test_memory_limit_setting_takes_a_share_of_ram() -> None:
    assert Settings.from_env(environ={}).duckdb_memory_limit == "50%"
    assert resolve_memory_limit("4GB") == "4GB"
    total_mb = (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) >> 20
    assert abs(int(resolve_memory_limit("25%")[:-2]) - total_mb // 4) <= 1
    with pytest.raises(ConfigError):
        Settings.from_env(environ={"AVILA_DUCKDB_MEMORY_LIMIT": "150%"})
    with pytest.raises(ConfigError):
        Settings.from_env(environ={"AVILA_QUERY_TIMEOUT": "-1"})
    assert Settings.from_env(environ={"AVILA_QUERY_TIMEOUT": "0"}).query_timeout == 0
