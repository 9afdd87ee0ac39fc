"""A small HTTP/1.1 load generator on raw asyncio streams (keep-alive, pre-built bodies).

Why not wrk or an HTTP library: bodies must carry unique event ids per request (the server
drops duplicates), and a plain asyncio client with pre-encoded requests costs the 2-core
machine far less CPU than an HTTP library would, leaving the cores to the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    #: open loop only: each latency's request due time, seconds from the run's start
    due: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop (less client CPU on the shared cores) when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def build_request(
    host: str, port: int, path: str, key: str, body: bytes, *, origin: str | None = None
) -> bytes:
    """A POST of JSON ``body``; with ``origin``, sent as a browser page on that origin would."""
    extra = f"Origin: {origin}\r\n" if origin else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"x-api-key: {key}\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def closed_loop(
    host: str, port: int, connections: int, seconds: float, make_request: Callable[[int], bytes]
) -> LoadResult:
    """Each connection sends its next request as soon as the previous answer arrives."""
    result = LoadResult()
    counter = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal counter
        reader, writer = await asyncio.open_connection(host, port)
        while time.perf_counter() < deadline:
            counter += 1
            request = make_request(counter)
            started = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            result.requests += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    result.seconds = time.perf_counter() - started
    return result


async def open_loop(
    host: str,
    port: int,
    rate: float,
    seconds: float,
    connections: int,
    make_request: Callable[[int], bytes],
) -> LoadResult:
    """Requests are due at a fixed rate; latency counts from the due time (no coordinated
    omission), on a pool of keep-alive connections."""
    result = LoadResult()
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(host, port))
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05
    tasks = []

    async def one(i: int, due: float) -> None:
        conn = await pool.get()
        reader, writer = conn
        writer.write(make_request(i))
        status = await _read_response(reader)
        result.latencies.append(time.perf_counter() - due)
        result.due.append(due - start)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        result.requests += 1
        pool.put_nowait(conn)

    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait()[1].close()
    return result
