"""An NDJSON export imported again keeps ``data``, ``metadata`` and ``context`` byte for byte:
the export embeds the stored JSON texts as they are, and the import stores those bytes (not a
compact re-encoding of the decoded objects), as the API stores the client's JSON as sent."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from avila.cli import main
from tests.export.test_import_cli import use_store

# Spaces, a key order that is not sorted, \u escapes, a float with a trailing zero,
# a long integer, nested empty containers: a decode and compact re-encode changes each.
_LINES = [
    b'{"event_id": "jb-1", "user_id": "u1", "timestamp": "2025-11-26T10:00:00Z",'
    b' "event_type": {"type": "PageView", "data": { "url" : "/caf\\u00e9",  "title": "T\\u00edtulo",'
    b' "duration_ms": 1000 }}, "metadata": {"z": 1.0, "a": [ ], "big": 12345678901234567890},'
    b' "context": { "device": {"browser": "Firefox"}, "extra": {} , "referrer": null }}',
    b'{"event_id":"jb-2","user_id":"u2","timestamp":"2025-11-26T10:01:00Z",'
    b'"event_type":{"type":"Custom","data":{"name":"plan","properties":{"p":"pr\\u00f3","n":2.50}}},'
    b'"context":{"location":{"city":"S\\u00e3o Paulo"}}}',
]


def _stored(tmp_path: Path, name: str) -> dict[str, tuple[str, str, str]]:
    """``event_id -> (data, metadata, context)`` texts as stored (a Parquet export)."""
    out = tmp_path / f"{name}.parquet"
    assert main(["export", "-o", str(out)]) == 0
    table = pq.read_table(out, columns=["event_id", "data", "metadata", "context"]).to_pylist()
    return {row["event_id"]: (row["data"], row["metadata"], row["context"]) for row in table}


@pytest.mark.parametrize("backend", ["duckdb", "chdb"])
def test_ndjson_export_imports_with_the_same_json_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    monkeypatch.chdir(tmp_path)
    seed = tmp_path / "seed.ndjson"
    seed.write_bytes(b"\n".join(_LINES) + b"\n")
    use_store(monkeypatch, tmp_path / "first", backend)
    assert main(["import", str(seed), "-q"]) == 0
    original = _stored(tmp_path, "first")
    assert (
        original["jb-1"][0]
        == '{ "url" : "/caf\\u00e9",  "title": "T\\u00edtulo", "duration_ms": 1000 }'
    )
    exported = tmp_path / "export.ndjson"
    assert main(["export", "-o", str(exported)]) == 0

    use_store(monkeypatch, tmp_path / "second", backend)
    assert main(["import", str(exported), "-q"]) == 0
    assert _stored(tmp_path, "second") == original
