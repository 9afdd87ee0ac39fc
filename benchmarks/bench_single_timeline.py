"""Where the single-event phase's slow acknowledgements fall in time, and what each process
was doing then: a diagnostic beside ``bench_ingest.py`` (issue 9's single-event p99).

    python benchmarks/bench_single_timeline.py [--seconds 10] [--rate 1000] [--threshold-ms 5]

One round as ``bench_ingest.py`` runs it, up to its single-event phase: a fresh server, the
batch phase (100 events per request, 16 connections, the visibility probe beside it: the same
function, ``bench_ingest.batch_phase``) filling the store, the drain, then single
events at ``--rate`` requests/s, open loop, 32 connections. Meanwhile a thread of this process
reads the CPU time of the server and of each of its child processes (the store process, query
workers) from /proc every 20 ms. Printed: the phase's latency percentiles; the slow requests
(over ``--threshold-ms``, counted from their due time) grouped into bursts (requests less than
50 ms apart); and, per 100 ms of the phase, the CPU milliseconds of each process, a window with
slow requests marked. On 2026-12-04 this showed the slow acknowledgements in bursts every
~0.5 s, each on a loader round in the store process (benchmarks/RESULTS.md).
Nothing is written to RESULTS.md: a diagnostic, not a measurement of record.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_ingest  # noqa: E402
import loadgen  # noqa: E402
from bench_ingest_cpu import cpu_seconds  # noqa: E402
from results import add_env_option, env_settings  # noqa: E402

from avila.testing import ServerProcess  # noqa: E402

SAMPLE_S = 0.02
WINDOW_S = 0.1
BURST_GAP_S = 0.05


def _cpu_s(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:  # exited
        return 0.0


class CpuSampler(threading.Thread):
    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.samples: list[tuple[float, list[float]]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.samples.append((time.perf_counter(), [_cpu_s(p) for p in self.pids]))
            time.sleep(SAMPLE_S)


def bursts(slow: list[tuple[float, float]]) -> list[tuple[float, float, int, float]]:
    """(first due, last due, requests, worst latency) of runs of slow requests."""
    out: list[list[float]] = []
    for due, latency in sorted(slow):
        if out and due - out[-1][1] < BURST_GAP_S:
            out[-1][1] = due
            out[-1][2] += 1
            out[-1][3] = max(out[-1][3], latency)
        else:
            out.append([due, due, 1, latency])
    return [(a, b, int(n), worst) for a, b, n, worst in out]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=bench_ingest.SINGLE_RATE)
    parser.add_argument("--threshold-ms", type=float, default=5.0)
    add_env_option(parser)
    args = parser.parse_args()
    env = {"API_KEYS": bench_ingest.KEY, "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "warning"}
    env.update(env_settings(args))
    with tempfile.TemporaryDirectory(prefix="avila-timeline-") as tmp:
        server = ServerProcess(Path(tmp) / "server", env=env).start(timeout=180)
        try:
            result, sampler, pids = _run(server, args)
        finally:
            server.stop(timeout=300)
    _report(result, sampler, pids, args)


def _run(
    server: ServerProcess, args: argparse.Namespace
) -> tuple[loadgen.LoadResult, CpuSampler, list[tuple[int, str]]]:
    run_id = uuid.uuid4().hex[:8]
    host, port = "127.0.0.1", server.port
    phase = bench_ingest.batch_phase(server, args.seconds, run_id)
    events_per_s = phase.batch.statuses.get(202, 0) * bench_ingest.BATCH / phase.batch.seconds
    print(f"batch phase: {events_per_s:,.0f} events/s, drained in {phase.drain_s:.2f} s")
    assert server.proc is not None
    stores = set(server.store_pids())
    pids = [
        (server.proc.pid, "server"),
        *((pid, "store" if pid in stores else "child") for pid in sorted(server.children())),
    ]
    sampler = CpuSampler([pid for pid, _ in pids])
    sampler.start()
    started = time.perf_counter()
    single = loadgen.run(
        loadgen.open_loop(
            host,
            port,
            args.rate,
            args.seconds,
            32,
            lambda i: bench_ingest.one_event_request(host, port, f"s{run_id}-{i}"),
        )
    )
    sampler.stop_event.set()
    sampler.join()
    # the open loop starts its clock ~50 ms after it is called (its connections open first)
    sampler.samples = [(at - started - 0.05, cpu) for at, cpu in sampler.samples]
    return single, sampler, pids


def _report(
    result: loadgen.LoadResult,
    sampler: CpuSampler,
    pids: list[tuple[int, str]],
    args: argparse.Namespace,
) -> None:
    def ms(q: float) -> float:
        return result.percentile(q) * 1000

    print(
        f"single phase at {args.rate:,.0f} requests/s: p50 {ms(0.5):.2f} ms, p99 {ms(0.99):.2f} ms,"
        f" p99.9 {ms(0.999):.2f} ms, max {max(result.latencies) * 1000:.2f} ms"
    )
    threshold = args.threshold_ms / 1000
    slow = [
        (d, lat) for d, lat in zip(result.due, result.latencies, strict=True) if lat > threshold
    ]
    print(f"{len(slow)} of {result.requests} requests over {args.threshold_ms:g} ms, in bursts:")
    for first, last, n, worst in bursts(slow):
        print(f"  {first:7.3f}-{last:7.3f} s  {n:4d} requests, worst {worst * 1000:7.1f} ms")
    names = [f"{name}[{pid}]" for pid, name in pids]
    print("CPU ms per 100 ms window (" + ", ".join(names) + "); * = slow requests due in it:")
    step = round(WINDOW_S / SAMPLE_S)
    for before, after in zip(sampler.samples[::step], sampler.samples[step::step], strict=False):
        spent = [round((b - a) * 1000) for a, b in zip(before[1], after[1], strict=True)]
        mark = "*" if any(before[0] <= d < after[0] for d, _ in slow) else " "
        print(f"  {before[0]:6.2f} s {mark} " + " ".join(f"{v:4d}" for v in spent))


if __name__ == "__main__":
    main()
