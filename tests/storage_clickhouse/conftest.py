"""Stores for the ClickHouse backend tests.

``store`` runs each test on a fresh embedded chdb directory, and, when ``CLICKHOUSE_URL`` is set
(``clickhouse://user:pass@host:8123/db``), again on that server: the issue's optional live
suite. Without ``CLICKHOUSE_URL`` the live variant is not generated at all (it is optional, not
a required service that is missing), so nothing is skipped silently.

chdb admits one data directory per process at a time: every fixture closes its store.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from avila.storage.clickhouse.store import ClickHouseStore
from avila.storage.clickhouse.target import ClickHouseOptions, parse_url

BACKENDS = ["chdb"] + (["live"] if os.environ.get("CLICKHOUSE_URL") else [])


def open_clickhouse(kind: str, tmp_path: Path) -> ClickHouseStore:
    if kind == "chdb":
        return ClickHouseStore(parse_url(f"chdb://{tmp_path / 'chdb'}"), ClickHouseOptions())
    # A fresh database per test on the live server, dropped afterwards.
    base = parse_url(os.environ["CLICKHOUSE_URL"])
    from dataclasses import replace

    target = replace(base, database=f"avila_test_{uuid.uuid4().hex[:12]}")
    return ClickHouseStore(target, ClickHouseOptions())


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClickHouseStore]:
    s = open_clickhouse(request.param, tmp_path)
    try:
        yield s
    finally:
        if not s.target.is_embedded:
            s.execute(f"DROP DATABASE IF EXISTS `{s.target.database}`")
        s.close()
