"""Every HTTP example of README.md and docs/*.md runs against ``make run``'s server.

Each example's status is the documented one (``# 202 ...`` under the command, else any 2xx)
and its answer is data, not zeros. Examples marked ``<!-- example: skip (reason) -->`` are
skipped and counted. Examples that erase data (DELETE) run after all others.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from avila.testing import ServerProcess
from tests.api.docs_examples import Example, all_examples, doc_files, has_data, runnable

EXAMPLES = all_examples()
RUN = sorted((e for e in EXAMPLES if e.skip_reason is None), key=lambda e: e.method == "DELETE")
SKIPPED = [e for e in EXAMPLES if e.skip_reason is not None]


def test_examples_are_found_in_every_doc() -> None:
    """The extraction sees the README's ingest and funnel calls and the docs' pages."""
    files = {e.file for e in EXAMPLES}
    assert {"README.md", "docs/analytics.md", "docs/users.md"} <= files
    assert len(doc_files()) >= 10
    assert len(RUN) >= 25, [e.id for e in EXAMPLES]
    for example in SKIPPED:
        assert example.skip_reason.strip(), f"{example.id}: a skip needs its reason"
    print(f"\n{len(RUN)} examples run, {len(SKIPPED)} skipped:")
    for example in SKIPPED:
        print(f"  skipped {example.id}: {example.skip_reason}")


@pytest.mark.parametrize("example", RUN, ids=[e.id for e in RUN])
def test_example_runs(example: Example, demo_server: ServerProcess, tmp_path: Path) -> None:
    body_file = tmp_path / "body"
    result = subprocess.run(
        ["bash", "-c", runnable(example.command, demo_server.url, str(body_file))],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"{example.id}: curl failed: {result.stderr}"
    status = int(result.stdout.strip()[-3:])
    body = body_file.read_bytes() if body_file.exists() else b""
    expected = example.status
    if expected is None:
        assert 200 <= status < 300, f"{example.id}: {status} {body[:500]!r}"
    else:
        assert status == expected, f"{example.id}: {status} {body[:500]!r}"
    try:
        parsed = json.loads(body)
    except ValueError:
        lines = [line for line in body.decode(errors="replace").splitlines() if line.strip()]
        assert len(lines) >= 2, f"{example.id}: no data rows in {body[:300]!r}"
        return
    assert has_data(parsed), f"{example.id}: the answer holds only zeros/empties: {body[:800]!r}"


@pytest.mark.parametrize(
    ("answer", "is_data"),
    [
        ({"rules": []}, False),
        ({"now": "2026-11-30T00:00:00Z", "events_last_minute": 0, "top_pages": []}, False),
        ({"funnel_name": "", "steps": [{"name": "Home", "count": 0}]}, False),
        ({"steps": [{"name": "Home", "count": 3}]}, True),
        ({"key": "checkout", "user_id": "u", "variant": "one-page"}, True),
        ({"key": "checkout", "user_id": "", "variant": ""}, True),
        ({"devices": [{"device_id": "L1-M1"}]}, True),
        ({}, False),
    ],
)
def test_data_is_told_from_zeros(answer: object, is_data: bool) -> None:
    assert has_data(answer) is is_data
