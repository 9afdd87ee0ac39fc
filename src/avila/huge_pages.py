"""numpy's large arrays on plain pages rather than transparent huge pages.

numpy asks the kernel for transparent huge pages (``madvise``) for every array of 4 MB and
more, unless ``NUMPY_MADVISE_HUGEPAGE=0``. The reports that allocate the most numpy memory (the
funnel: its per-user levels over millions of candidate rows) paid for it when asked at a
human pace: at 100 M events the funnel's first call after start took 5.2-5.4 s with huge pages
and 4.0-4.9 s without, later calls 5 s apart 2.6-2.9 s and 2.3-2.4 s, the other reports no
slower (benchmarks/RESULTS.md, "numpy's huge pages off for the server"). The likely cause is the
virtual machine: freed 2 MB blocks are handed back to the host and faulted in again.

So every ``avila`` command runs with plain pages, and so do the processes it starts (the store
process, query workers), unless the user set ``NUMPY_MADVISE_HUGEPAGE`` themselves.
"""

from __future__ import annotations

import importlib
import os
import sys

#: numpy's own setting (read when numpy is imported): "0" plain pages, "1" huge pages.
VARIABLE = "NUMPY_MADVISE_HUGEPAGE"


def use_plain_pages() -> bool:
    """Plain pages for numpy in this process and the processes it starts, unless the user set
    :data:`VARIABLE`; whether this call chose them. Call it before numpy is imported where
    possible (the command line does); if numpy is loaded already, its switch is turned too."""
    if VARIABLE in os.environ:
        return False
    os.environ[VARIABLE] = "0"  # read by numpy at import, here and in child processes
    if "numpy" in sys.modules:
        multiarray = importlib.import_module("numpy._core.multiarray")
        switch = getattr(multiarray, "_set_madvise_hugepage", None)
        if switch is not None:  # (numpy's switch is not public: without it, children only)
            switch(False)
    return True
