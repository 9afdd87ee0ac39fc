"""Live fan-out benchmark: batch ingest with 0, 1, 10 and 100 WebSocket subscribers.

    python benchmarks/bench_live.py [--seconds 10] [--rounds 3] [--no-write]

Per round and client count (the counts interleaved within a round), on a fresh server and data
directory, with the default live settings (flush 200 ms, sampling above 1,000 events/s, queue
16 frames, stall timeout 30 s, at most 100 connections per key):
- a client process (this file with ``--clients``) opens the WebSocket connections and subscribes
  them to the project's ``events`` channel: 80 % read every frame, 20 % never read (with 1 client,
  it reads);
- batch ingest: 100 events per request, 8 keep-alive connections in a closed loop (every 202
  means the events were committed), for ``--seconds``;
- the server process's RSS is sampled every 0.25 s; growth is its peak during the run minus its
  value before the clients connected (after a warm-up of the same load);
- each reading client records when every frame arrived; the figure is the longest gap between
  frames (counting from the start of the load to its end).

Protocol fixed before the run (issue 16): with 100 clients, ingest >= 0.8 x the no-client
throughput of the same round (ratio of medians reported too), server RSS growth < 200 MB, and
every reading client's longest gap between frames <= 500 ms.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
from events import batch_template  # noqa: E402
from results import stamp, write_section  # noqa: E402

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

    def __init__(self, window: dict[str, float], counts: dict[str, float]) -> None:
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
            if "start" in self.window and "stop" not in self.window:
                self.arrivals.append(time.monotonic())
            self.counts["frames"] += 1
            if self._peek.startswith(b'{"type":"Events","payload":{"sampled":'):
                number = self._peek[len(b'{"type":"Events","payload":{"sampled":') :]
                sampled = float(number.split(b",", 1)[0])
                self.counts["sampled_min"] = min(self.counts["sampled_min"], sampled)
        elif self._opcode == 0x8:
            self.counts["closed"] += 1


async def _clients(url: str, total: int) -> None:
    """Open ``total`` subscribers, print READY, record frames between START and STOP lines on
    stdin, then print one JSON line of figures."""
    rest = url.split("://", 1)[1]
    hostport, path = rest.split("/", 1)
    host, port = hostport.split(":")
    readers = max(1, round(total * READING_SHARE)) if total else 0
    window: dict[str, float] = {}
    counts: dict[str, float] = {"frames": 0, "bytes": 0, "sampled_min": 1.0, "closed": 0}
    loop = asyncio.get_running_loop()
    socks = [_subscribed_socket(host, int(port), "/" + path) for _ in range(total)]
    counters = []
    for sock in socks[:readers]:
        _, counter = await loop.connect_accepted_socket(lambda: FrameCounter(window, counts), sock)
        counters.append(counter)
    print("READY", flush=True)
    for mark in ("start", "stop"):
        line = await loop.run_in_executor(None, sys.stdin.readline)
        assert line.strip().lower() == mark, line
        window[mark] = time.monotonic()
    gaps = []
    for counter in counters:
        points = [window["start"], *counter.arrivals, window["stop"]]
        gaps.append(max(b - a for a, b in zip(points, points[1:], strict=False)))
    print(
        json.dumps(
            {
                "readers": readers,
                "never_reading": total - readers,
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


def run_one(tmp: Path, clients: int, seconds: float) -> dict[str, float]:
    env = {"API_KEYS": KEY, "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "warning"}
    with ServerProcess(tmp / f"server-{uuid.uuid4().hex[:6]}", env=env) as server:
        assert server.proc is not None
        run_id = uuid.uuid4().hex[:8]
        host, port = "127.0.0.1", server.port
        marker = b"#" * 17
        template = loadgen.build_request(
            host, port, "/api/v1/events/batch", KEY, batch_template(BATCH, marker)
        )

        def batch_request(i: int) -> bytes:
            return template.replace(marker, f"{run_id}{i:09d}".encode())

        # Warm up the same load (imports, allocator, first commits) before the baseline RSS.
        loadgen.run(
            loadgen.closed_loop(host, port, CONNECTIONS, 2.0, lambda i: batch_request(10**8 + i))
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
                env={**os.environ},
            )
            assert child.stdout is not None and child.stdin is not None
            ready = child.stdout.readline()
            assert ready.strip() == "READY", ready
            child.stdin.write("start\n")
            child.stdin.flush()
        sampler = RssSampler(server.proc.pid)
        sampler.start()
        batch = loadgen.run(loadgen.closed_loop(host, port, CONNECTIONS, seconds, batch_request))
        sampler.done.set()
        sampler.join()
        figures: dict[str, float] = {
            "events_per_s": batch.statuses.get(202, 0) * BATCH / batch.seconds,
            "batch_p99_ms": batch.percentile(0.99) * 1000,
            "errors": batch.requests - batch.statuses.get(202, 0),
            "rss_growth_mb": sampler.peak - rss_before,
        }
        if child is not None:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write("stop\n")
            child.stdin.flush()
            report = json.loads(child.stdout.readline())
            child.wait(30)
            figures.update(
                {
                    "max_gap_ms": report["max_gap_ms"],
                    "median_gap_ms": report["median_gap_ms"],
                    "frames_per_reader_per_s": report["frames"]
                    / max(1, report["readers"])
                    / seconds,
                    "mb_per_s_to_readers": report["bytes"] / seconds / 1e6,
                    "sampled_min": report["sampled_min"],
                    "reader_closes": report["closed"],
                }
            )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
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
                figures = run_one(Path(tmp_name), clients, args.seconds)
                per_count[clients] = figures
                print(
                    f"round {r + 1}, {clients} clients: "
                    + ", ".join(f"{k}={v:,.2f}" for k, v in figures.items()),
                    flush=True,
                )
            for clients in CLIENT_COUNTS:
                per_count[clients]["ratio"] = (
                    per_count[clients]["events_per_s"] / per_count[0]["events_per_s"]
                )
            rounds.append(per_count)

    def median(clients: int, key: str) -> float:
        return statistics.median(r[clients][key] for r in rounds if key in r[clients])

    lines = [
        "## Live fan-out: batch ingest with WebSocket subscribers (`python benchmarks/bench_live.py`)",
        "",
        stamp(),
        f"Machine: 2 cores, shared with other sessions' work (2026-11-30). {args.rounds} rounds of"
        f" {args.seconds:g} s per client count, fresh server each, counts interleaved within a"
        " round. Load: 100 events/request, 8 connections, closed loop (same process family as the"
        " server: the load generator and the WebSocket client process run on the same 2 cores)."
        " Clients: 80 % read every frame, 20 % never read. Default live settings. Median of"
        " rounds; `ratio` is each round's throughput over the same round's 0-client throughput.",
        "",
        "| clients | ingest events/s | ratio to 0 clients | batch p99 ms | server RSS growth MB"
        " | longest gap between frames, any reader (ms) | frames/s per reader | MB/s to readers"
        " | smallest `sampled` |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for clients in CLIENT_COUNTS:

        def cell(key: str, fmt: str = ",.0f", clients: int = clients) -> str:
            return format(median(clients, key), fmt) if clients else "-"

        lines.append(
            f"| {clients} | {median(clients, 'events_per_s'):,.0f} | {median(clients, 'ratio'):.2f}"
            f" | {median(clients, 'batch_p99_ms'):,.0f} | {median(clients, 'rss_growth_mb'):.1f}"
            f" | {cell('max_gap_ms')} | {cell('frames_per_reader_per_s', '.1f')}"
            f" | {cell('mb_per_s_to_readers', '.1f')} | {cell('sampled_min', '.3f')} |"
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
    verdict = (
        f"With 100 clients: ratio {median(100, 'ratio'):.2f} (>= 0.8 required), RSS growth"
        f" {median(100, 'rss_growth_mb'):.1f} MB (< 200 MB), longest gap between frames of any"
        f" reading client in any round {worst_gap:,.0f} ms (<= 500 ms)."
    )
    lines += ["", verdict]
    print("\n".join(lines))
    if not args.no_write:
        write_section("bench_live", "\n".join(lines))
        print("wrote benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
