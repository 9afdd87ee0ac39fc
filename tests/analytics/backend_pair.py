"""The same data on DuckDB and embedded ClickHouse (chdb), for tests that hold the two to one
answer."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from avila.storage.base import Store
from avila.testing.backends import open_backend


def both_stores(
    tmp_path_factory: pytest.TempPathFactory, fill: Callable[[Store], None]
) -> Iterator[dict[str, Store]]:
    """``{"duckdb": store, "chdb": store}``, each filled by ``fill``; closed afterwards."""
    opened = {b: open_backend(b, tmp_path_factory.mktemp(b)) for b in ("duckdb", "chdb")}
    try:
        for store in opened.values():
            fill(store)
        yield opened
    finally:
        for store in opened.values():
            store.close()


def normal(value: Any) -> Any:
    """An answer comparable across engines: floats to 9 significant digits, NaN as None."""
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.9g}")
    if isinstance(value, dict):
        return {str(k): normal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normal(v) for v in value]
    return value
