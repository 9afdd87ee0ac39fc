"""Ingest log candidates side by side: a plain segment file vs SQLite in WAL mode.

    python benchmarks/bench_log.py [--seconds 5] [--rounds 3] [--no-write]

What an acknowledgement costs in each, on this disk, with the same frames (realistic event
payloads: one event ~700 B, a 100-event batch ~60 KB) and the same group commit (one writer
thread; ``--clients`` producer threads each append one frame and wait for it to be durable, so
groups form by themselves). Both are durable on return:

- segment file: ``pwritev`` of the group's frames (length + crc32 header) and ``fdatasync``;
- SQLite: ``INSERT`` of each frame into ``log(position INTEGER PRIMARY KEY, payload BLOB)`` in
  one transaction, ``journal_mode=WAL``, ``synchronous=FULL`` (NORMAL would not be durable on
  power loss), ``wal_autocheckpoint`` at its default.

Reports acknowledged frames/s, MB/s, and p50/p99 wait of one append, medians of rounds.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from events import EVENT  # noqa: E402
from results import stamp, write_section  # noqa: E402

from avila.storage.log_segments import HEADER  # noqa: E402


class SegmentLog:
    def __init__(self, path: Path) -> None:
        self.fd = os.open(path / "00000000000000000000.seg", os.O_WRONLY | os.O_CREAT, 0o644)
        self.size = 0

    def write_group(self, payloads: list[bytes]) -> None:
        buffers: list[bytes] = []
        for p in payloads:
            buffers += [HEADER.pack(len(p), zlib.crc32(p)), p]
        self.size += os.pwritev(self.fd, buffers, self.size)
        os.fdatasync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class SqliteLog:
    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path / "log.sqlite", check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("CREATE TABLE log (position INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        self.conn.commit()

    def write_group(self, payloads: list[bytes]) -> None:
        with self.conn:
            self.conn.executemany("INSERT INTO log (payload) VALUES (?)", [(p,) for p in payloads])

    def close(self) -> None:
        self.conn.close()


def run(
    kind: str, directory: Path, payload: bytes, clients: int, seconds: float
) -> dict[str, float]:
    log = SegmentLog(directory) if kind == "segment" else SqliteLog(directory)
    cond = threading.Condition()
    pending: list[tuple[bytes, threading.Event]] = []
    stop = threading.Event()
    waits: list[float] = []
    acked = 0

    def writer() -> None:
        while True:
            with cond:
                while not pending and not stop.is_set():
                    cond.wait()
                if not pending:
                    return
                group = pending[:]
                pending.clear()
            log.write_group([p for p, _ in group])
            for _, done in group:
                done.set()

    def client() -> None:
        nonlocal acked
        while not stop.is_set():
            done = threading.Event()
            started = time.perf_counter()
            with cond:
                pending.append((payload, done))
                cond.notify()
            done.wait()
            waits.append(time.perf_counter() - started)
            acked += 1

    w = threading.Thread(target=writer)
    w.start()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    with cond:
        cond.notify()
    w.join()
    log.close()
    waits.sort()
    return {
        "frames_per_s": acked / elapsed,
        "mb_per_s": acked * len(payload) / elapsed / 1e6,
        "p50_ms": waits[len(waits) // 2] * 1000,
        "p99_ms": waits[int(len(waits) * 0.99)] * 1000,
    }


SCENARIOS = {
    "single event (~0.7 KB), 1 client": (1, 1),
    "single events, 16 clients": (1, 16),
    "100-event batches (~70 KB), 16 clients": (100, 16),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    figures: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in range(args.rounds):
        for name, (events, clients) in SCENARIOS.items():
            payload = b"\x01" + b",".join(
                EVENT.replace(b"@ID@", f"{r}-{i}".encode()).replace(b"@U@", b"1")
                for i in range(events)
            )
            for kind in ("segment", "sqlite"):
                with tempfile.TemporaryDirectory(prefix="avila-bench-log-", dir=".") as tmp:
                    result = run(kind, Path(tmp), payload, clients, args.seconds)
                figures.setdefault((name, kind), []).append(result)
                print(
                    f"round {r + 1} {name} {kind}: "
                    + ", ".join(f"{k}={v:,.2f}" for k, v in result.items()),
                    flush=True,
                )
    lines = [
        "## Ingest log: segment file vs SQLite WAL (`python benchmarks/bench_log.py`)",
        "",
        stamp(),
        f"Machine: 2 cores, shared with other work while it ran. {args.rounds} rounds of {args.seconds:g} s per cell,"
        " medians; both durable on return (fdatasync / synchronous=FULL), one group-commit writer thread.",
        "",
        "| scenario | log | acknowledged frames/s | MB/s | append wait p50 (ms) | p99 (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for (name, kind), rounds in figures.items():
        med = {k: statistics.median(f[k] for f in rounds) for k in rounds[0]}
        lines.append(
            f"| {name} | {kind} | {med['frames_per_s']:,.0f} | {med['mb_per_s']:,.1f} | {med['p50_ms']:.3f} | {med['p99_ms']:.3f} |"
        )
        print(lines[-1])
    if not args.no_write:
        write_section("bench_log", "\n".join(lines))
        print("wrote benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
