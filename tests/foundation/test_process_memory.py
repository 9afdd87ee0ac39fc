"""How the query workers hold numpy's memory (``avila.process_memory``): on plain pages, with
freed blocks kept for the next report, unless the user chose otherwise; the server and its store
process as numpy and glibc have it. Checked in fresh interpreters (the settings are
process-wide), in a real query worker, and on a real server's processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from avila.analytics.workers import QueryWorkers
from avila.process_memory import HUGE_PAGES, KEEP_FREED
from avila.storage.base import Store
from avila.storage.duckdb.process import ProcessStore
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


def memory_in_worker(store: Store) -> dict[str, Any]:
    """Run in a query worker: its settings, numpy's page switch, and whether a freed 256 MB
    array stays with the process."""
    import numpy
    from numpy._core.multiarray import _set_madvise_hugepage

    huge = _set_madvise_hugepage(False)  # (returns the state it replaces)

    def rss_mb() -> int:
        with open("/proc/self/status") as status:
            return next(int(x.split()[1]) // 1024 for x in status if x.startswith("VmRSS"))

    before = rss_mb()
    block = numpy.ones(256 << 17)
    del block
    return {
        "env": {name: os.environ.get(name) for name in OURS},
        "huge": huge,
        "kept": rss_mb() - before > 200,
    }


def test_a_query_worker_runs_reports_with_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in OURS:
        monkeypatch.delenv(name, raising=False)
    store = ProcessStore(tmp_path / "store.duckdb")
    pool = QueryWorkers(store, 1)
    try:
        got = asyncio.run(pool.run(memory_in_worker, store))
    finally:
        pool.close()
        store.close()
    # mallopt, not the environment: the variables stay the user's (here: unset)
    unset = dict.fromkeys(KEEP_FREED)
    assert got == {"env": {HUGE_PAGES: "0", **unset}, "huge": False, "kept": True}


def test_the_server_and_its_store_process_keep_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings cost single-event ingest while heavy reports ran (avila.process_memory):
    the processes that acknowledge and load events run without them."""
    for name in OURS:
        monkeypatch.delenv(name, raising=False)
    server = ServerProcess(tmp_path).start()
    try:
        assert server.proc is not None
        for pid in (server.proc.pid, *server.store_pids()):
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert not [e for e in environ if e.split(b"=")[0].decode() in OURS]
    finally:
        assert server.stop() == 0
