"""Analytics queries in worker processes, away from the server's event loop.

Why: an analytics report does part of its work in Python (Arrow to numpy, sessionizing, the
per-user passes), and in the server process that work holds the interpreter's lock beside the
event loop that acknowledges ingest. Measured with py-spy (``--gil``) on the server during a
100 M-event overview: other threads held the lock about 9 % of the time, in pieces of tens of
milliseconds (receiving a slice's Arrow bytes, ``np.full`` and ``cumsum`` over 25 M rows), and
single-event ingest p99 went from 8 ms to 55 ms. The report's memory (gigabytes for a long
range) also lived in the server. Measured after (benchmarks/RESULTS.md, "Query worker
processes"): the server's peak fell from 6.1 to 0.3 GB, but ingest p99 during the report stayed
within noise of the thread path (47 vs 57 ms): on two cores the report still takes CPU from
the event loop, whichever process it runs in.

How: :class:`QueryWorkers` keeps ``AVILA_QUERY_WORKERS`` processes (started on first use). A
request waits for the ingest loader as before (``read_barrier``, so it reads its own writes),
then takes an idle worker and sends it the analytics function (by reference: a module-level
function) and its arguments; the worker runs it against a
:class:`~avila.storage.duckdb.channels.RemoteReader` (read channels it opened to the store
process itself) and sends back the answer, or the error, which the server raises as if it had
run the function: the same status, code and field paths. Requests beyond the number of
workers wait for one. A worker that dies mid-query (the kernel's OOM killer, say) fails that
request with 503 ``query_worker_exited`` and is started afresh for the next. The time limit
(``AVILA_QUERY_TIMEOUT``) holds for the whole report here, not only for each read: a worker
whose report is still running a second past it is killed and the request answers 504
``query_timeout`` (the store cancels each read at the limit on its own).

Only a store that lets other processes read (``Store.read_address``: the DuckDB store
process) gets workers; otherwise, and with ``AVILA_QUERY_WORKERS=0``, queries run in threads of
the server as before.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from avila.errors import AvilaError, QueryTimeout, StorageUnavailable
from avila.storage.base import Store
from avila.storage.duckdb.process import BACKGROUND_NICE

log = logging.getLogger("avila.analytics")

#: Workers run at this CPU niceness. Out of the server's interpreter, a report's threads ran
#: free on the two cores and starved the event loop of CPU instead of the lock (ingest p50
#: 55 ms, p99 515 ms during a 100 M-event overview, benchmarks/RESULTS.md "Query worker
#: processes"): reports are batch work, acknowledgements are not. (ClickHouse's
#: ``os_thread_priority`` does the same for queries.) Lowering a priority needs no privilege
#: and costs nothing when the cores are idle. The store process serves a worker's reads, and
#: runs DuckDB's own threads, at the same niceness.
NICE = BACKGROUND_NICE
#: A report still running this long after ``AVILA_QUERY_TIMEOUT`` has its worker killed.
HARD_LIMIT_GRACE_S = 1.0
#: How long a new worker may take to import the analytics code and reach the store process.
START_TIMEOUT_S = 60.0

Result = dict[str, Any]


def _worker_main(address: str, authkey: bytes, query_timeout: float, jobs: Connection) -> None:
    """A worker's loop: ``(fn, args)`` in, ``("ok", fn(store, *args))`` or ``("err", exc)`` out,
    until the server closes its end (or dies)."""
    from avila import process_memory
    from avila.storage.duckdb.channels import RemoteReader

    os.nice(NICE)
    process_memory.apply()  # a report's numpy memory (only here: see that module)
    try:
        store = RemoteReader(address, authkey, query_timeout=query_timeout)
    except Exception as exc:
        jobs.send(("err", exc))
        return
    jobs.send(("ready", None))
    while True:
        try:
            job = jobs.recv()
        except (EOFError, OSError):
            break
        except Exception as exc:  # the function could not be unpickled here
            job = exc
        try:
            jobs.send(("started", None))  # from now on, an exit is this job's doing
        except (EOFError, OSError):
            break
        reply: tuple[str, Any]
        if isinstance(job, Exception):
            reply = ("err", job)
        else:
            try:
                fn, args = job
                reply = ("ok", fn(store, *args))
            except Exception as exc:
                reply = ("err", exc)
        try:
            jobs.send(reply)
        except (EOFError, OSError):
            break
        except Exception as exc:  # an answer or error that does not pickle: say what it was
            failed = reply[1] if reply[0] == "err" else exc
            jobs.send(("err", AvilaError(f"query worker: {type(failed).__name__}: {failed}")))
    store.close()


class _Worker:
    """One worker process and the pipe its jobs go through (used by one request at a time)."""

    def __init__(
        self, store: Store, on_exit: Callable[[], None], *, whole_job_limit: bool, fresh: bool
    ) -> None:
        assert store.read_address is not None
        self._address, self._authkey = store.read_address
        self._query_timeout = store.query_timeout
        self._hard_limit = store.query_timeout if whole_job_limit else 0
        self._fresh = fresh
        self._on_exit = on_exit
        self.process: BaseProcess | None = None
        self._jobs: Connection | None = None

    def _start(self) -> Connection:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        process = ctx.Process(
            target=_worker_main,
            args=(self._address, self._authkey, self._query_timeout, child),
            name="avila-query-worker",
            daemon=True,
        )
        process.start()
        child.close()
        if not parent.poll(START_TIMEOUT_S):
            process.kill()
            raise StorageUnavailable("the query worker did not start", code="query_worker_exited")
        try:
            status, value = parent.recv()
        except (EOFError, OSError) as exc:
            raise StorageUnavailable(
                "the query worker exited at start", code="query_worker_exited"
            ) from exc
        if status == "err":
            raise value
        self.process, self._jobs = process, parent
        return parent

    def _hand_over(self, job: tuple[Any, ...]) -> Connection:
        """Send ``job`` to a live worker and wait until it says it started. A worker that died
        idle (unnoticed, or dying just now) cannot have started the job: a new worker takes it."""
        for _attempt in range(2):
            jobs = self._jobs
            if jobs is None or self.process is None or wait([self.process.sentinel], 0):
                # (the sentinel, not is_alive(): it tells an exit even when waitpid cannot)
                if self.process is not None:
                    self._on_exit()
                self.stop()
                jobs = self._start()
            try:
                jobs.send(job)
                if jobs.recv()[0] == "started":
                    return jobs
            except (EOFError, OSError):
                self._on_exit()
                self.stop()
        raise StorageUnavailable(
            "the query worker exited before it could start the query", code="query_worker_exited"
        )

    def call(self, fn: Callable[..., Result], args: tuple[Any, ...]) -> Result:
        """``fn(store, *args)`` in the worker (blocking: call from a thread)."""
        jobs = self._hand_over((fn, args))
        limit = self._hard_limit
        if limit and not jobs.poll(limit + HARD_LIMIT_GRACE_S):
            # Past the limit in Python (between the store's cancellable reads, or a slice read
            # started just before it): end the report for real; a new worker takes the next.
            self._on_exit()
            self.stop()
            log.warning("query worker stopped at the time limit", extra={"limit_s": limit})
            raise QueryTimeout.after(limit)
        try:
            status, value = jobs.recv()
        except (EOFError, OSError) as exc:
            code = self.process.exitcode if self.process is not None else None
            self._on_exit()
            self.stop()
            log.error("query worker exited during a query", extra={"exitcode": code})
            raise StorageUnavailable(
                f"the query worker exited during the query (exit code {code}; -9 is the signal"
                " of the kernel's out-of-memory killer); narrow the time range, or lower the load",
                code="query_worker_exited",
            ) from exc
        if self._fresh:  # its memory goes back to the system; the next job starts a new one
            self.stop(wait=5.0)
        if status == "err":
            raise value
        return value  # type: ignore[no-any-return]

    def reap_if_dead(self) -> bool:
        """If the (idle) worker's process has exited, count it and forget it (the next job
        starts a new one); True if it had."""
        if self.process is not None and wait([self.process.sentinel], 0):
            self._on_exit()
            self.stop()
            return True
        return False

    def close_pipe(self) -> None:
        if self._jobs is not None:
            self._jobs.close()
            self._jobs = None

    def stop(self, wait: float = 0.0) -> None:
        """Close the job pipe (an idle worker exits on it); kill it if still there after
        ``wait`` seconds (a busy one: its query is abandoned)."""
        self.close_pipe()
        process, self.process = self.process, None
        if process is not None:
            process.join(wait)
            if process.is_alive():
                process.kill()
                process.join(5)


class QueryWorkers:
    """A pool of ``count`` analytics worker processes for ``store`` (see the module's doc)."""

    def __init__(
        self, store: Store, count: int, *, whole_job_limit: bool = True, fresh: bool = False
    ) -> None:
        """``whole_job_limit``: hold each job to ``AVILA_QUERY_TIMEOUT`` as a whole (reports);
        without it only each read is (model training, which may take minutes). ``fresh``: a
        new process for every job, so a job's memory is not kept by an idle worker."""
        self.count = count if store.read_address is not None else 0
        self._workers = [
            _Worker(store, self._exited, whole_job_limit=whole_job_limit, fresh=fresh)
            for _ in range(self.count)
        ]
        self._idle: asyncio.Queue[_Worker] | None = None
        self._in_use: set[int] = set()  # id() of the workers a request holds
        #: queries running in a worker / waiting for one; workers that died or were killed
        self.busy = self.waiting = self.exits = 0

    def _exited(self) -> None:
        self.exits += 1

    def reap(self) -> int:
        """Count the idle workers that died since their last query (otherwise noticed only
        when the next query finds them) and return :attr:`exits`. Call on the event loop that
        serves the queries: the idle workers there are in no other thread's hands."""
        for worker in self._workers:
            if id(worker) not in self._in_use:
                worker.reap_if_dead()
        return self.exits

    def pids(self) -> list[int]:
        """Process ids of the running workers."""
        return [w.process.pid for w in self._workers if w.process is not None and w.process.pid]

    def _idle_queue(self) -> asyncio.Queue[_Worker]:
        if self._idle is None:  # made in the event loop that serves the requests
            self._idle = asyncio.Queue()
            for worker in self._workers:
                self._idle.put_nowait(worker)
        return self._idle

    async def run(self, fn: Callable[..., Result], store: Store, *args: Any) -> Result:
        """``fn(store, *args)``: in a worker process when there are any, else in a thread."""
        if not self.count:
            return await asyncio.to_thread(fn, store, *args)
        await asyncio.to_thread(store.read_barrier)
        idle = self._idle_queue()
        self.waiting += 1
        try:
            worker = await idle.get()
        finally:
            self.waiting -= 1
        self.busy += 1
        self._in_use.add(id(worker))
        call = asyncio.ensure_future(asyncio.to_thread(worker.call, fn, args))

        def release(done: asyncio.Future[Result]) -> None:
            # The worker is free again when its call has ended, not when a waiting client
            # leaves; an error nobody awaits any more is not worth asyncio's warning.
            self.busy -= 1
            self._in_use.discard(id(worker))
            idle.put_nowait(worker)
            if not done.cancelled():
                done.exception()

        call.add_done_callback(release)
        return await asyncio.shield(call)

    def close(self) -> None:
        """Stop every worker (their queries in flight are abandoned): all pipes first, so the
        idle ones exit together, then a short wait each."""
        for worker in self._workers:
            worker.close_pipe()
        for worker in self._workers:
            worker.stop(wait=1.0)
