"""The disk's durable-append latency on its own: what an acknowledgement cannot go below.

Protocol (fixed before the runs): nothing of ours running; :func:`flush_probe.probe` appends
4 KB and ``fdatasync``s it every 10 ms in ``--dir`` (default: the bench data directory, the
disk the ingest log and the stores live on) for ``--seconds``, in ``--rounds`` rounds. Reported
per round and as medians: flush p50, p99, max and how many flushes took over 10 ms, and how
many 15-second windows (the length of one ``bench_heavy_query`` phase) held a flush over
10 ms: one such stall makes the acknowledgements of the ~10-100 requests that arrive during it
(at 1,000 req/s) late, enough to move a 15-second phase's p99 (150 requests) when it lasts or
recurs.

    python benchmarks/bench_disk_flush.py --seconds 300 --rounds 1
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flush_probe import probe, summary  # noqa: E402
from results import print_median, stamp, write_section  # noqa: E402

WINDOW_S = 15.0


def one_round(directory: Path, seconds: float) -> dict[str, float]:
    stop = threading.Event()
    latencies: list[float] = []
    ended: list[float] = []
    started = time.monotonic()
    thread = threading.Thread(target=probe, args=(directory, stop, latencies, 0.01, ended))
    thread.start()
    stop.wait(seconds)
    stop.set()
    thread.join()
    windows = max(1, int(seconds // WINDOW_S))
    stalled = {
        int((end - started) // WINDOW_S)
        for end, x in zip(ended, latencies, strict=True)
        if x > 0.010
    }
    figures = summary(latencies)
    figures["flushes"] = float(len(latencies))
    figures["15 s windows with a flush over 10 ms (%)"] = (
        100.0 * len({w for w in stalled if w < windows}) / windows
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=Path("/work/benchdata"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    rounds = []
    for i in range(args.rounds):
        figures = one_round(args.dir, args.seconds)
        print(f"  round {i + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))
        rounds.append(figures)
    medians = print_median(rounds)
    lines = [
        "## The disk's durable-append latency (`python benchmarks/bench_disk_flush.py"
        f" --seconds {args.seconds:g} --rounds {args.rounds}`)",
        "",
        stamp(),
        "",
        f"4 KB append + fdatasync every 10 ms in {args.dir}, nothing of ours running; load average"
        f" {load:.1f} at the start. Medians of {args.rounds} round(s) of {args.seconds:g} s.",
        "",
        "| figure | median | rounds |",
        "|---|---|---|",
    ]
    for key, value in medians.items():
        each = " / ".join(f"{r[key]:.2f}" for r in rounds)
        lines.append(f"| {key} | **{value:.2f}** | {each} |")
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("bench_disk_flush", body)


if __name__ == "__main__":
    main()
