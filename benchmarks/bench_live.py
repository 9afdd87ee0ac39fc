"""Live fan-out benchmark: batch ingest with 0, 1, 10 and 100 WebSocket subscribers.

    python benchmarks/bench_live.py [--seconds 10] [--rounds 3] [--no-write]

The machine is shared, and its load swings more than the effect measured, so the comparison is
paired: per round and client count, one fresh server with two projects, `watched` (the clients
subscribe to its ``events`` channel) and `quiet` (nobody does). Ingest alternates between them
in short slices (``--seconds`` per project in total, order flipped every slice), so both sides
see the same machine. `ratio` = watched / quiet throughput; the 0-client row (both projects
unwatched) shows the method's noise floor.

- Clients: a separate process (this file with ``--clients``) opens them and subscribes them to
  `watched`; 80 % read every frame, 20 % never read (1 client: it reads).
- Load: 100 events per request, 8 keep-alive connections in a closed loop (every 202 means
  the events were committed).
- Server RSS: sampled every 0.25 s; growth = peak during the run minus the value after warm-up,
  before the clients connected.
- Frames: each reading client notes when every frame arrives; the figure is the longest gap
  between frames (or from a slice's start / to its end) during the watched slices.
- Server run-queue wait: how long the server's event-loop thread was runnable but not running
  (/proc/<pid>/schedstat), per second: the machine's contention as the server felt it.

Default live settings (flush 200 ms, sampling above 1,000 events/s, queue 16 frames, stall
timeout 30 s, at most 100 connections per key). Protocol fixed before the run (issue 16): with
100 clients, ingest >= 0.8 x the no-client throughput, server RSS growth < 200 MB, and every
reading client's longest gap between frames <= 500 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
from events import batch_template  # noqa: E402
from results import stamp, write_section  # noqa: E402

from avila.security.keys import KeyStore  # noqa: E402
from avila.testing import ServerProcess  # noqa: E402

KEY = "bench-key"
BATCH = 100
CONNECTIONS = 8
CLIENT_COUNTS = (0, 1, 10, 100)
READING_SHARE = 0.8


# -- the client process ---------------------------------------------------------------------
#
# The clients share the 2 cores with the server, so they must cost little: the handshake and
# the Subscribe go through websockets' sans-I/O client, then a reading client only parses frame
# headers (server frames are unmasked), answers pings, and notes when each data frame ends; it
# does not copy or decode payloads. (A browser on another machine would parse the JSON; that
# is not the server's cost.)


def _subscribed_socket(host: str, port: int, path: str) -> socket.socket:
    from websockets.client import ClientProtocol
    from websockets.frames import Frame
    from websockets.protocol import State
    from websockets.uri import parse_uri

    protocol = ClientProtocol(parse_uri(f"ws://{host}:{port}{path}"))
    sock = socket.create_connection((host, port), timeout=30)
    protocol.send_request(protocol.connect())
    sock.sendall(b"".join(protocol.data_to_send()))
    while protocol.state is not State.OPEN:
        protocol.receive_data(sock.recv(4096))
    protocol.send_text(b'{"type":"Subscribe","payload":{"channels":["events"]}}')
    sock.sendall(b"".join(protocol.data_to_send()))
    replies: list[bytes] = []
    while not any(b"Subscribed" in r for r in replies):
        protocol.receive_data(sock.recv(4096))
        replies.extend(bytes(e.data) for e in protocol.events_received() if isinstance(e, Frame))
    sock.setblocking(False)
    return sock


class FrameCounter(asyncio.Protocol):
    """Counts the server's frames on one connection without copying their payloads."""

    def __init__(self, window: dict[str, bool], counts: dict[str, float]) -> None:
        self.window = window
        self.counts = counts
        self.arrivals: list[float] = []
        self.transport: asyncio.Transport | None = None
        self._head = b""  # bytes of a frame header not complete yet
        self._remaining = 0  # payload bytes of the current frame still to come
        self._opcode = 0
        self._peek = b""  # first bytes of the current payload

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._head + data if self._head else data
        self._head = b""
        pos, end = 0, len(buf)
        while pos < end:
            if self._remaining:  # inside a payload: skip it, keeping its first bytes
                take = min(self._remaining, end - pos)
                if len(self._peek) < 64:
                    self._peek += buf[pos : pos + min(take, 64 - len(self._peek))]
                self._remaining -= take
                pos += take
                if not self._remaining:
                    self._frame_done()
                continue
            if end - pos < 2:
                self._head = buf[pos:]
                return
            short = buf[pos + 1] & 0x7F
            size = 2 if short < 126 else 4 if short == 126 else 10
            if end - pos < size:
                self._head = buf[pos:]
                return
            length = short if short < 126 else int.from_bytes(buf[pos + 2 : pos + size], "big")
            self._opcode = buf[pos] & 0x0F
            self._peek = b""
            self._remaining = length
            self.counts["bytes"] += length
            pos += size
            if not length:
                self._frame_done()

    def _frame_done(self) -> None:
        if self._opcode == 0x9:  # ping: answer with a masked pong carrying the same data
            mask = os.urandom(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self._peek))
            assert self.transport is not None
            self.transport.write(bytes([0x8A, 0x80 | len(data)]) + mask + data)
        elif self._opcode == 0x1 and self._peek.startswith(b'{"type":"Event'):
            if self.window["open"]:
                self.arrivals.append(time.monotonic())
            self.counts["frames"] += 1
            if self._peek.startswith(b'{"type":"Events","payload":{"sampled":'):
                number = self._peek[len(b'{"type":"Events","payload":{"sampled":') :]
                sampled = float(number.split(b",", 1)[0])
                self.counts["sampled_min"] = min(self.counts["sampled_min"], sampled)
        elif self._opcode == 0x8:
            self.counts["closed"] += 1


async def _clients(url: str, total: int) -> None:
    """Open ``total`` subscribers and print READY; then, on stdin, ``start``/``stop`` lines
    bracket the watched slices and ``end`` makes it print one JSON line of figures."""
    rest = url.split("://", 1)[1]
    hostport, path = rest.split("/", 1)
    host, port = hostport.split(":")
    readers = max(1, round(total * READING_SHARE)) if total else 0
    window = {"open": False}
    slices: list[tuple[float, float]] = []
    counts: dict[str, float] = {"frames": 0, "bytes": 0, "sampled_min": 1.0, "closed": 0}
    loop = asyncio.get_running_loop()
    socks = [_subscribed_socket(host, int(port), "/" + path) for _ in range(total)]
    counters = []
    for sock in socks[:readers]:
        _, counter = await loop.connect_accepted_socket(lambda: FrameCounter(window, counts), sock)
        counters.append(counter)
    print("READY", flush=True)
    opened = 0.0
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "start":
            opened = time.monotonic()
            window["open"] = True
        elif line == "stop":
            window["open"] = False
            slices.append((opened, time.monotonic()))
        else:
            break
    gaps = []
    for counter in counters:
        longest = 0.0
        for begin, finish in slices:
            inside = [t for t in counter.arrivals if begin <= t <= finish]
            points = [begin, *inside, finish]
            longest = max(longest, *(b - a for a, b in zip(points, points[1:], strict=False)))
        gaps.append(longest)
    watched_seconds = sum(b - a for a, b in slices) or 1.0
    print(
        json.dumps(
            {
                "readers": readers,
                "never_reading": total - readers,
                "watched_seconds": watched_seconds,
                "max_gap_ms": max(gaps) * 1000 if gaps else 0.0,
                "median_gap_ms": statistics.median(gaps) * 1000 if gaps else 0.0,
                **counts,
            }
        ),
        flush=True,
    )
    for sock in socks:
        sock.close()


# -- the benchmark --------------------------------------------------------------------------


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = _rss_mb(pid)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.25):
            self.peak = max(self.peak, _rss_mb(self.pid))


def _runqueue_wait(pid: int) -> float:
    """Seconds the process's main thread has waited on a run queue (runnable, not running)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def run_pair(tmp: Path, clients: int, seconds: float, slices: int) -> dict[str, float]:
    env = {"API_KEYS": KEY, "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "warning"}
    with ServerProcess(tmp / f"server-{uuid.uuid4().hex[:6]}", env=env) as server:
        assert server.proc is not None
        quiet_key, _ = KeyStore(server.data_dir / "keys.sqlite").create("quiet", ["ingest"])
        run_id = uuid.uuid4().hex[:8]
        host, port = "127.0.0.1", server.port
        marker = b"#" * 17
        templates = {
            side: loadgen.build_request(
                host, port, "/api/v1/events/batch", key, batch_template(BATCH, marker)
            )
            for side, key in (("watched", KEY), ("quiet", quiet_key))
        }

        def requests(side: str, offset: int) -> Callable[[int], bytes]:
            template = templates[side]
            return lambda i: template.replace(marker, f"{run_id}{offset + i:09d}".encode())

        # Warm up both projects (imports, allocator, first commits) before the baseline RSS.
        for n, side in enumerate(templates):
            loadgen.run(
                loadgen.closed_loop(host, port, CONNECTIONS, 1.5, requests(side, (n + 1) * 10**8))
            )
        rss_before = _rss_mb(server.proc.pid)
        child = None
        if clients:
            url = f"ws://{host}:{port}/ws?api_key={KEY}"
            child = subprocess.Popen(
                [sys.executable, __file__, "--clients", str(clients), "--url", url],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdout is not None and child.stdin is not None
            ready = child.stdout.readline()
            assert ready.strip() == "READY", ready

        def tell(line: str) -> None:
            if child is not None:
                assert child.stdin is not None
                child.stdin.write(line + "\n")
                child.stdin.flush()

        sampler = RssSampler(server.proc.pid)
        sampler.start()
        totals = {"watched": [0, 0.0, 0], "quiet": [0, 0.0, 0]}  # events, seconds, errors
        latencies: dict[str, list[float]] = {"watched": [], "quiet": []}
        offset = 0
        waited = _runqueue_wait(server.proc.pid)
        started = time.monotonic()
        for s in range(slices):
            for side in ("watched", "quiet") if s % 2 == 0 else ("quiet", "watched"):
                if side == "watched":
                    tell("start")
                offset += 10**6
                result = loadgen.run(
                    loadgen.closed_loop(
                        host, port, CONNECTIONS, seconds / slices, requests(side, offset)
                    )
                )
                if side == "watched":
                    tell("stop")
                ok = result.statuses.get(202, 0)
                totals[side][0] += ok * BATCH
                totals[side][1] += result.seconds
                totals[side][2] += result.requests - ok
                latencies[side].extend(result.latencies)
        wall = time.monotonic() - started
        runqueue = (_runqueue_wait(server.proc.pid) - waited) / wall
        sampler.done.set()
        sampler.join()

        def p99(values: list[float]) -> float:
            ordered = sorted(values)
            return ordered[int(0.99 * (len(ordered) - 1))] * 1000 if ordered else float("nan")

        watched = totals["watched"][0] / totals["watched"][1]
        quiet = totals["quiet"][0] / totals["quiet"][1]
        figures: dict[str, float] = {
            "watched_events_per_s": watched,
            "quiet_events_per_s": quiet,
            "ratio": watched / quiet,
            "watched_p99_ms": p99(latencies["watched"]),
            "quiet_p99_ms": p99(latencies["quiet"]),
            "errors": totals["watched"][2] + totals["quiet"][2],
            "rss_growth_mb": sampler.peak - rss_before,
            "server_runqueue_wait_ms_per_s": runqueue * 1000,
        }
        if child is not None:
            assert child.stdout is not None
            tell("end")
            report = json.loads(child.stdout.readline())
            child.wait(30)
            figures.update(
                {
                    "max_gap_ms": report["max_gap_ms"],
                    "median_gap_ms": report["median_gap_ms"],
                    "frames_per_reader_per_s": report["frames"]
                    / max(1, report["readers"])
                    / report["watched_seconds"],
                    "mb_per_s_to_readers": report["bytes"] / report["watched_seconds"] / 1e6,
                    "sampled_min": report["sampled_min"],
                    "reader_closes": report["closed"],
                }
            )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10, help="load per project per run")
    parser.add_argument("--slices", type=int, default=6, help="alternations per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--clients", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clients is not None:
        loadgen.run(_clients(args.url, args.clients))
        return

    rounds: list[dict[int, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="avila-bench-live-") as tmp_name:
        for r in range(args.rounds):
            per_count: dict[int, dict[str, float]] = {}
            for clients in CLIENT_COUNTS:
                figures = run_pair(Path(tmp_name), clients, args.seconds, args.slices)
                per_count[clients] = figures
                print(
                    f"round {r + 1}, {clients:>3} clients: "
                    + ", ".join(f"{k}={v:,.2f}" for k, v in figures.items()),
                    flush=True,
                )
            rounds.append(per_count)

    def median(clients: int, key: str) -> float:
        return statistics.median(r[clients][key] for r in rounds)

    def cell(clients: int, key: str, fmt: str = ",.0f") -> str:
        return format(median(clients, key), fmt) if clients else "-"

    lines = [
        "## Live fan-out: batch ingest with WebSocket subscribers (`python benchmarks/bench_live.py`)",
        "",
        stamp(),
        f"Machine: 2 cores, shared with other sessions' work (2026-11-30). {args.rounds} rounds;"
        f" per round and client count a fresh server, ingest alternating between the watched"
        f" and the quiet project in {args.slices} slices, {args.seconds:g} s per project in"
        " total. Load: 100 events/request, 8 connections, closed loop; the load generator and"
        " the client process run on the same 2 cores. Clients: 80 % read every frame, 20 %"
        " never read. Default live settings. Median of rounds, then each round.",
        "",
        "| subscribed clients | ingest events/s, watched project | same moments, project without"
        " clients | ratio | server RSS growth MB | longest gap between frames, any reader (ms)"
        " | frames/s per reader | MB/s to readers | server run-queue wait (ms/s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for clients in CLIENT_COUNTS:
        lines.append(
            f"| {clients} | {median(clients, 'watched_events_per_s'):,.0f}"
            f" | {median(clients, 'quiet_events_per_s'):,.0f} | {median(clients, 'ratio'):.2f}"
            f" | {median(clients, 'rss_growth_mb'):.1f} | {cell(clients, 'max_gap_ms')}"
            f" | {cell(clients, 'frames_per_reader_per_s', '.1f')}"
            f" | {cell(clients, 'mb_per_s_to_readers', '.1f')}"
            f" | {median(clients, 'server_runqueue_wait_ms_per_s'):,.0f} |"
        )
    lines += ["", "Each round:", "", "```"]
    for r, per_count in enumerate(rounds):
        for clients, figures in per_count.items():
            lines.append(
                f"round {r + 1}, {clients:>3} clients: "
                + ", ".join(f"{k}={v:,.2f}" for k, v in figures.items())
            )
    lines.append("```")
    worst_gap = max(r[100]["max_gap_ms"] for r in rounds)
    lines += [
        "",
        f"With 100 clients: ratio {median(100, 'ratio'):.2f} (>= 0.8 required), server RSS growth"
        f" {median(100, 'rss_growth_mb'):.1f} MB (< 200 MB), longest gap between frames of any"
        f" reading client: median over rounds {median(100, 'max_gap_ms'):,.0f} ms, worst round"
        f" {worst_gap:,.0f} ms (<= 500 ms required).",
    ]
    print("\n".join(lines))
    if not args.no_write:
        write_section("bench_live", "\n".join(lines))
        print("wrote benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
