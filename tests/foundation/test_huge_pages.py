"""numpy's large arrays on plain pages in every ``avila`` process (``avila.huge_pages``),
unless the user chose otherwise: checked in fresh interpreters and on a real server's store
process, whose environment is where the spawned children learn it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from avila.huge_pages import VARIABLE
from avila.testing import ServerProcess

#: Prints whether numpy was using huge pages when the script ended (numpy's switch returns
#: its previous state), after ``use_plain_pages()`` when the first argument says so.
PROBE = """
import sys
import numpy
from numpy._core.multiarray import _set_madvise_hugepage
if sys.argv[1] == "call":
    from avila.huge_pages import use_plain_pages
    print("chose" if use_plain_pages() else "left")
print("huge" if _set_madvise_hugepage(True) else "plain")
"""


def _probe(call: bool, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k != VARIABLE}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "call" if call else "no"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def test_numpy_loaded_first_is_switched_to_plain_pages() -> None:
    assert _probe(call=False) == ["huge"]  # numpy's own default on this kernel
    assert _probe(call=True) == ["chose", "plain"]


def test_a_users_own_setting_is_left_alone() -> None:
    assert _probe(call=True, **{VARIABLE: "1"}) == ["left", "huge"]
    assert _probe(call=True, **{VARIABLE: "0"}) == ["left", "plain"]


@pytest.mark.parametrize(("given", "expected"), [(None, "0"), ("1", "1")])
def test_the_servers_store_process_runs_with_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str | None, expected: str
) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    server = ServerProcess(tmp_path, env={VARIABLE: given} if given else None).start()
    try:
        (store,) = server.store_pids()
        environ = Path(f"/proc/{store}/environ").read_bytes().split(b"\0")
        assert f"{VARIABLE}={expected}".encode() in environ
    finally:
        assert server.stop() == 0
