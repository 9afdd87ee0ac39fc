"""The test harness itself: a server that never turns healthy is not left running."""

from __future__ import annotations

from pathlib import Path

import pytest

from avila.testing import ServerProcess


def test_a_start_that_times_out_kills_the_child(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path)
    with pytest.raises(RuntimeError, match="not healthy"):
        proc.start(timeout=0)
    assert proc.proc is not None
    assert proc.proc.poll() is not None, "the child outlived a failed start"
