"""How every ``avila`` process holds numpy's memory (``avila.process_memory``): on plain pages,
with freed blocks kept for the next report, unless the user chose otherwise. Checked in fresh
interpreters (the settings are process-wide) and on a real server's store process, whose
environment is where the spawned children learn them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from avila.process_memory import HUGE_PAGES, KEEP_FREED
from avila.testing import ServerProcess

#: Prints whether numpy was using huge pages when the script ended (numpy's switch returns
#: its previous state), after ``use_plain_pages()`` when the first argument says so.
PAGES_PROBE = """
import sys
import numpy
from numpy._core.multiarray import _set_madvise_hugepage
if sys.argv[1] == "call":
    from avila.process_memory import use_plain_pages
    print("chose" if use_plain_pages() else "left")
print("huge" if _set_madvise_hugepage(True) else "plain")
"""

#: Prints how many MB of a freed 256 MB array the process still holds, after
#: ``keep_freed_memory()`` when the first argument says so.
FREED_PROBE = """
import sys
import numpy
if sys.argv[1] == "call":
    from avila.process_memory import keep_freed_memory
    print("chose" if keep_freed_memory() else "left")
def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) // 1024 for l in status if l.startswith("VmRSS"))
before = rss_mb()
block = numpy.ones(256 << 17)  # 256 MB of float64, every page touched
del block
print("kept" if rss_mb() - before > 200 else "returned")
"""

OURS = (HUGE_PAGES, *KEEP_FREED)


def _probe(script: str, call: bool, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in OURS}
    done = subprocess.run(
        [sys.executable, "-c", script, "call" if call else "no"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def test_numpy_loaded_first_is_switched_to_plain_pages() -> None:
    assert _probe(PAGES_PROBE, call=False) == ["huge"]  # numpy's own default on this kernel
    assert _probe(PAGES_PROBE, call=True) == ["chose", "plain"]


def test_a_users_own_page_setting_is_left_alone() -> None:
    assert _probe(PAGES_PROBE, call=True, **{HUGE_PAGES: "1"}) == ["left", "huge"]
    assert _probe(PAGES_PROBE, call=True, **{HUGE_PAGES: "0"}) == ["left", "plain"]


def test_a_freed_large_array_stays_with_the_process() -> None:
    assert _probe(FREED_PROBE, call=False) == ["returned"]  # glibc's default: munmap
    assert _probe(FREED_PROBE, call=True) == ["chose", "kept"]


def test_a_users_own_malloc_setting_is_left_alone() -> None:
    assert _probe(FREED_PROBE, call=True, MALLOC_TRIM_THRESHOLD_="131072") == ["left", "returned"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, {HUGE_PAGES: "0", **KEEP_FREED}),
        (
            {HUGE_PAGES: "1", "MALLOC_MMAP_MAX_": "65536"},
            {HUGE_PAGES: "1", "MALLOC_MMAP_MAX_": "65536"},
        ),
    ],
)
def test_the_servers_store_process_runs_with_the_settings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    given: dict[str, str],
    expected: dict[str, str],
) -> None:
    for name in OURS:
        monkeypatch.delenv(name, raising=False)
    server = ServerProcess(tmp_path, env=given or None).start()
    try:
        (store,) = server.store_pids()
        environ = Path(f"/proc/{store}/environ").read_bytes().split(b"\0")
        for name, value in expected.items():
            assert f"{name}={value}".encode() in environ
        if "MALLOC_MMAP_MAX_" in given:  # the user's malloc choice: ours not added beside it
            assert not any(e.startswith(b"MALLOC_TRIM_THRESHOLD_=") for e in environ)
    finally:
        assert server.stop() == 0
