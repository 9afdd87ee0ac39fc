"""docs/export.md lists every exported column, in order, with its Parquet type."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from avila.export.query import EXPORT_COLUMNS, EXPORT_TIMESTAMPS

DOC = Path(__file__).resolve().parents[2] / "docs" / "export.md"
_TYPES = {pa.string(): "string", pa.float64(): "float64", pa.int64(): "int64"}


def test_column_table_matches_the_export_schema() -> None:
    text = DOC.read_text()
    section = text[text.index("### Columns") : text.index("Value conventions")]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, re.MULTILINE)
    expected = [
        (name, "timestamp[us, UTC]" if name in EXPORT_TIMESTAMPS else _TYPES[dtype])
        for name, _, dtype, _ in EXPORT_COLUMNS
    ]
    assert [(name, kind.strip()) for name, kind in rows] == expected
