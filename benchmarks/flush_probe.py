"""How long the disk takes to make 4 KB durable: the floor under every acknowledgement.

A 202 waits for one ``fdatasync`` of the ingest log (docs/ingestion.md). When the device's
flush stalls, every request that arrives meanwhile waits with it, whatever the server does.
:func:`probe` measures that floor beside a benchmark: every ``every`` seconds it appends 4 KB
to a file of its own and ``fdatasync``s it, as the log's writer does, and records how long the
pair took. It adds ~400 KB/s and ~100 flushes/s to the device (the server issues one flush per
group commit, at most one per request): a light load, stated wherever its figures are quoted.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

BLOCK = b"\0" * 4096
#: Rotate the probe's file past this size, so a long probe does not fill the disk.
MAX_BYTES = 64 << 20


def probe(
    directory: Path,
    stop: threading.Event,
    latencies: list[float],
    every: float = 0.01,
    ended: list[float] | None = None,
) -> None:
    """Append + ``fdatasync`` in ``directory`` every ``every`` s until ``stop`` is set; each
    pair's seconds go to ``latencies`` (and, with ``ended``, its ``time.monotonic()`` end
    there). The file is deleted at the end."""
    path = directory / f"flush-probe-{os.getpid()}-{threading.get_ident()}.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    written = 0
    try:
        while not stop.is_set():
            started = time.perf_counter()
            os.write(fd, BLOCK)
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - started)
            if ended is not None:
                ended.append(time.monotonic())
            written += len(BLOCK)
            if written >= MAX_BYTES:
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                written = 0
            stop.wait(every)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def summary(latencies: list[float]) -> dict[str, float]:
    """p50/p99/max in ms and how many flushes took over 10 ms (the ingest p99's target)."""
    if not latencies:
        nan = float("nan")
        return {"flush p50 (ms)": nan, "flush p99 (ms)": nan, "flush max (ms)": nan,
                "flushes over 10 ms": nan}  # fmt: skip
    ordered = sorted(latencies)
    return {
        "flush p50 (ms)": ordered[len(ordered) // 2] * 1000,
        "flush p99 (ms)": ordered[int(0.99 * (len(ordered) - 1))] * 1000,
        "flush max (ms)": ordered[-1] * 1000,
        "flushes over 10 ms": float(sum(1 for x in ordered if x > 0.010)),
    }
