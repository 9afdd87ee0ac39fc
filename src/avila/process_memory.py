"""How the processes of ``avila`` hold numpy's memory: on plain pages, and freed blocks kept
for the next report.

**Plain pages.** numpy asks the kernel for transparent huge pages (``madvise``) for every array
of 4 MB and more, unless ``NUMPY_MADVISE_HUGEPAGE=0``. The reports that allocate the most numpy
memory (the funnel: per-user levels over millions of candidate rows) paid for it when asked at a
human pace: at 100 M events the funnel's first call after start took 5.2-5.4 s with huge pages
and 4.0-4.9 s without, later calls 5 s apart 2.6-2.9 s against 2.3-2.4 s, the other reports no
slower (benchmarks/RESULTS.md, "numpy's huge pages off for the server"). The likely cause is
the virtual machine: freed 2 MB blocks are handed back to the host and faulted in again.

**Freed memory kept.** glibc gives every allocation of 128 KB and more its own ``mmap`` and
hands it back to the kernel when freed, so each report's large arrays are faulted in and zeroed
anew (~150,000-240,000 page faults per 100 M-event funnel). With ``MALLOC_MMAP_MAX_=0`` they
come from the heap, and ``MALLOC_TRIM_THRESHOLD_`` lets the heap keep up to :data:`KEEP_BYTES`
of freed memory for the next report: the 100 M funnel 2.46/2.49 -> 2.03/2.10 s back to back,
the process's peak memory +0.24/0.28 GB, the other reports 1-4 % slower in sum
(benchmarks/RESULTS.md, "glibc keeps freed memory for the next report").

Where: the query workers (:mod:`avila.analytics.workers`: reports and model training) apply
both (:func:`apply`) when they start, unless the user set the variables themselves. Not the
server process nor the store process: with both settings in every ``avila`` process, the
single-event ingest p99 while heavy reports ran at 100 M events was 1.97 x worse in an A/B
(medians of six rounds, 146.7 against 74.4 ms; benchmarks/RESULTS.md, "The memory settings
in every process: the heavy-query phase"). With ``AVILA_QUERY_WORKERS=0`` reports run in the
server process, without them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import os
import sys

#: numpy's own setting (read when numpy is imported): "0" plain pages, "1" huge pages.
HUGE_PAGES = "NUMPY_MADVISE_HUGEPAGE"
#: The most freed memory glibc's heap keeps for later (bytes; mallopt takes a C int).
KEEP_BYTES = (1 << 31) - 1
#: glibc's variables for the same (read when a process starts; a user's value wins).
KEEP_FREED = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(KEEP_BYTES)}
#: mallopt's parameter numbers for them (malloc.h)
_M_MMAP_MAX = -4
_M_TRIM_THRESHOLD = -1


def apply() -> None:
    """:func:`use_plain_pages` and :func:`keep_freed_memory`."""
    use_plain_pages()
    keep_freed_memory()


def use_plain_pages() -> bool:
    """Plain pages for numpy in this process, unless the user set :data:`HUGE_PAGES`; whether
    this call chose them. numpy reads the variable when it is
    imported; if it is loaded already (a query worker), its switch is turned too."""
    if HUGE_PAGES in os.environ:
        return False
    os.environ[HUGE_PAGES] = "0"  # read by numpy at import, here and in child processes
    if "numpy" in sys.modules:
        multiarray = importlib.import_module("numpy._core.multiarray")
        switch = getattr(multiarray, "_set_madvise_hugepage", None)
        if switch is not None:  # (numpy's switch is not public: without it, children only)
            switch(False)
    return True


def keep_freed_memory() -> bool:
    """glibc's heap in this process keeps up to :data:`KEEP_BYTES` of freed memory
    (``mallopt``, as :data:`KEEP_FREED` would at start); whether this call set it. Left alone
    when the user set either variable (glibc read it when the process started), or on a C
    library other than glibc (musl)."""
    if any(name in os.environ for name in KEEP_FREED) or not _glibc():
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES)
    return True


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):  # not a glibc system
        return False
