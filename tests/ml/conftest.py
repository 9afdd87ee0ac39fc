"""Data-set fixtures for the ML tests.

CDNOW and MovieLens-100K are read straight out of wheels downloaded by
``scripts/fetch_test_data.py`` (``make test-data``) into ``.cache/wheels/``; they are never
copied into the repository (MovieLens' licence forbids redistribution). A missing wheel is a
test *failure*, not a skip, so a green run always means the published figures were checked.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from avila.testing import ServerProcess
from tests.built_once import built_once

ROOT = Path(__file__).resolve().parents[2]
WHEEL_DIR = Path(os.environ.get("AVILA_TEST_WHEELS", ROOT / ".cache" / "wheels"))


def _read_from_wheel(wheel: str, member: str) -> bytes:
    path = WHEEL_DIR / wheel
    if not path.is_file():
        pytest.fail(
            f"test data wheel {path} is missing: run `make test-data` "
            "(python scripts/fetch_test_data.py) first",
            pytrace=False,
        )
    with zipfile.ZipFile(path) as zf:
        return zf.read(member)


@pytest.fixture(scope="session")
def cdnow_summary() -> pd.DataFrame:
    """CDNOW calibration summary, 2,357 customers, weeks: ID, x, t_x, T, zbar (mean repeat spend)."""
    raw = _read_from_wheel(
        "Lifetimes-0.11.3-py3-none-any.whl",
        "lifetimes/datasets/cdnow_customers_summary_with_transactions.csv",
    )
    return pd.read_csv(io.BytesIO(raw))


@pytest.fixture(scope="session")
def ml100k() -> pd.DataFrame:
    """MovieLens-100K ratings: user_id, item_id, rating, timestamp (100,000 rows)."""
    raw = _read_from_wheel(
        "recbole-1.2.1-py3-none-any.whl", "recbole/dataset_example/ml-100k/ml-100k.inter"
    )
    frame = pd.read_csv(io.BytesIO(raw), sep="\t")
    frame.columns = ["user_id", "item_id", "rating", "timestamp"]
    return frame


DEMO_END = "2025-03-01T00:00:00+00:00"


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DuckDB file holding the e-commerce demo (1,500 users, 90 days, planted churn),
    written through the ingestion path into project ``default``. Copy it before writing.

    The workers of one run share it (:func:`tests.built_once.built_once`)."""
    return built_once(tmp_path_factory, "ml-demo", _write_demo_db) / "avila.duckdb"


def _write_demo_db(directory: Path) -> None:
    from datetime import datetime

    from avila.demo.ecommerce import generate_user_events
    from avila.storage import open_store

    path = directory / "avila.duckdb"
    events = [
        e
        for user in generate_user_events(7, 1500, 90, datetime.fromisoformat(DEMO_END))
        for e in user
    ]
    store = open_store(f"duckdb:///{path}")
    try:
        ingest_events(store, events)
    finally:
        store.close()


def ingest_events(store: Any, events: list[bytes]) -> None:
    """Write seed-format events (JSON bytes) through the ingestion path into ``default``."""
    import asyncio

    from avila.ingest.service import IngestService

    async def write() -> None:
        service = IngestService(store)
        await service.start()
        try:
            for start in range(0, len(events), 10_000):
                result = await service.ingest(events[start : start + 10_000], "default")
                assert not result.rejected, result.rejected[:3]
        finally:
            await service.close()

    asyncio.run(write())


@pytest.fixture(scope="session")
def cdnow_transactions() -> pd.DataFrame:
    """CDNOW 1/10th sample (2,357 customers, Jan 1997 – Jun 1998): customer_id, date, cds,
    dollars — one row per transaction, as in the lifetimes wheel's ``CDNOW_sample.txt``."""
    raw = _read_from_wheel(
        "Lifetimes-0.11.3-py3-none-any.whl", "lifetimes/datasets/CDNOW_sample.txt"
    )
    frame = pd.read_csv(
        io.BytesIO(raw), sep=r"\s+", header=None,
        names=["customer_id", "customer_id_master", "date", "cds", "dollars"],
    )  # fmt: skip
    frame["date"] = pd.to_datetime(frame["date"].astype(str), format="%Y%m%d")
    return frame


@pytest.fixture(scope="session")
def empty_ml_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server on an empty data directory, for requests it must refuse (a bad training
    option, training an empty project): they store nothing, so the tests share it."""
    from tests.conftest import server_for

    yield from server_for(tmp_path_factory, "ml-empty-server")


@pytest.fixture(autouse=True)
def _one_native_thread() -> Iterator[None]:
    """One BLAS/OpenMP thread per test, as training itself uses: on a shared machine,
    spinning OpenMP threads make gradient boosting many times slower."""
    with threadpool_limits(limits=1):
        yield
