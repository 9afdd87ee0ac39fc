"""Analytics in query worker processes (avila.analytics.workers) against a real store process.

The reference is the same function run in a thread of this process (the path the server took
before workers, and still takes with ``AVILA_QUERY_WORKERS=0``): answers and errors must be the
same, and a worker that dies must fail only its own query.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from analytics_data import PROJECT, random_events, to_table

from avila.analytics import funnel, overview, sessions
from avila.analytics.workers import QueryWorkers
from avila.errors import AvilaError, QueryTimeout, StorageUnavailable
from avila.storage.base import Store
from avila.storage.duckdb.process import ProcessStore

RANGE = {"start_time": "2024-02-28T00:00:00Z", "end_time": "2024-03-05T00:00:00Z"}
#: AVILA_QUERY_TIMEOUT of the time-limit tests (seconds).
LIMIT_S = 5.0


def exit_now(store: Store, project_id: str) -> dict[str, Any]:
    """A query whose process dies under it, as under the kernel's OOM killer."""
    os._exit(9)


def past_the_limit(store: Store, project_id: str) -> dict[str, Any]:
    """Python work that outlasts any time limit (no store read the store could cancel)."""
    time.sleep(120)
    return {}


def unpicklable_error(store: Store, project_id: str) -> dict[str, Any]:
    raise ValueError(lambda: None)  # a lambda does not pickle: the error cannot go back as-is


def echo(store: Store, value: Any) -> dict[str, Any]:
    return {"value": value}


def pid_after(store: Store, seconds: float) -> int:
    """Python work for ``seconds`` (no read the store could cancel), then the worker's pid."""
    time.sleep(seconds)
    return os.getpid()


def _arrive(flag: str, always: bool) -> str:
    """Called in the worker while it unpickles a job, before it can say "started": the worker
    exits there (the first time, or ``always``)."""
    if always or not os.path.exists(flag):
        Path(flag).touch()
        os._exit(3)
    return "arrived"


class _DiesOnArrival:
    """An argument whose unpickling ends the worker that receives it: a worker dying after the
    job was sent and before it started it, deterministically."""

    def __init__(self, flag: Path, always: bool = False) -> None:
        self.flag, self.always = flag, always

    def __reduce__(self) -> Any:
        return (_arrive, (str(self.flag), self.always))


class _Local:
    """A lock-like object: pickling it fails, so it cannot be sent to a worker."""

    def __reduce__(self) -> Any:
        raise TypeError("not picklable")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessStore]:
    opened = ProcessStore(tmp_path_factory.mktemp("workers") / "store.duckdb")
    opened.append_events(to_table(random_events(7, n_users=300, with_sessions=True)))
    yield opened
    opened.close()


@pytest.fixture
def workers(store: ProcessStore) -> Iterator[QueryWorkers]:
    pool = QueryWorkers(store, 1)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def shared_workers(store: ProcessStore) -> Iterator[QueryWorkers]:
    """One pool for the tests whose jobs end no worker (none dies or is killed): its worker is
    spawned once for all of them."""
    pool = QueryWorkers(store, 1)
    yield pool
    pool.close()


def in_thread(fn: Any, store: Store, *args: Any) -> Any:
    return asyncio.run(QueryWorkers(store, 0).run(fn, store, *args))


def in_worker(pool: QueryWorkers, fn: Any, store: Store, *args: Any) -> Any:
    return asyncio.run(pool.run(fn, store, *args))


@pytest.mark.parametrize(
    ("fn", "query"),
    [
        (overview, {**RANGE, "timezone": "Europe/Berlin"}),
        (sessions, RANGE),
        (
            funnel,
            {**RANGE, "steps": [{"condition_type": "page_view"}, {"condition_type": "purchase"}]},
        ),
    ],
    ids=["overview", "sessions", "funnel"],
)
def test_a_worker_answers_what_a_thread_answers(
    store: ProcessStore, shared_workers: QueryWorkers, fn: Any, query: dict[str, Any]
) -> None:
    expected = in_thread(fn, store, PROJECT, query)
    assert str(expected) != str(in_thread(fn, store, "no-such-project", query))  # not empty
    assert in_worker(shared_workers, fn, store, PROJECT, query) == expected
    (pid,) = shared_workers.pids()
    assert pid not in (os.getpid(), store._process.pid)


def test_errors_keep_their_class_code_and_field_paths(
    store: ProcessStore, shared_workers: QueryWorkers
) -> None:
    bad = {**RANGE, "steps": [{"condition_type": "page_view"}]}  # a funnel needs two steps
    with pytest.raises(AvilaError) as in_process:
        in_thread(funnel, store, PROJECT, bad)
    with pytest.raises(AvilaError) as from_worker:
        in_worker(shared_workers, funnel, store, PROJECT, bad)
    assert type(from_worker.value) is type(in_process.value)
    assert from_worker.value.status == in_process.value.status == 422
    assert from_worker.value.to_dict() == in_process.value.to_dict()
    # An error that cannot be pickled still comes back, as a 500 naming it.
    with pytest.raises(AvilaError, match="ValueError") as odd:
        in_worker(shared_workers, unpicklable_error, store, PROJECT)
    assert odd.value.status == 500
    # ... and so does a job that cannot be sent: the worker is still there for the next one.
    with pytest.raises(TypeError):
        in_worker(shared_workers, overview, store, PROJECT, _Local())
    assert in_worker(shared_workers, overview, store, PROJECT, RANGE)["total_events"] > 0


def test_a_dead_worker_fails_its_own_query_and_is_replaced(
    store: ProcessStore, workers: QueryWorkers
) -> None:
    expected = in_thread(overview, store, PROJECT, RANGE)
    assert in_worker(workers, overview, store, PROJECT, RANGE) == expected
    (first,) = workers.pids()
    with pytest.raises(StorageUnavailable) as died:
        in_worker(workers, exit_now, store, PROJECT)
    assert died.value.code == "query_worker_exited" and died.value.status == 503
    assert in_worker(workers, overview, store, PROJECT, RANGE) == expected
    (second,) = workers.pids()
    assert second != first
    # killed while idle (between queries): the next query starts a new one
    os.kill(second, signal.SIGKILL)
    os.waitid(os.P_PID, second, os.WEXITED | os.WNOWAIT)  # until all of it is gone; not reaped
    assert in_worker(workers, overview, store, PROJECT, RANGE) == expected
    assert workers.pids() != [second]


def test_an_idle_worker_that_dies_is_counted_at_the_next_scrape(
    store: ProcessStore, workers: QueryWorkers
) -> None:
    """``avila_query_worker_exits`` reads :meth:`QueryWorkers.reap`: a worker killed between
    queries is counted when the metrics are read, not only when a later query finds it."""
    assert in_worker(workers, overview, store, PROJECT, RANGE)["total_events"] > 0
    (pid,) = workers.pids()
    assert workers.reap() == 0
    os.kill(pid, signal.SIGKILL)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # until all of it is gone; not reaped
    assert workers.reap() == 1 and workers.pids() == []
    assert workers.reap() == 1  # once
    assert in_worker(workers, overview, store, PROJECT, RANGE)["total_events"] > 0
    assert workers.exits == 1 and len(workers.pids()) == 1


def test_more_queries_than_workers_wait_for_one(
    store: ProcessStore, shared_workers: QueryWorkers
) -> None:
    async def many() -> list[Any]:
        return await asyncio.gather(
            *(shared_workers.run(overview, store, PROJECT, RANGE) for _ in range(5))
        )

    answers = asyncio.run(many())
    assert all(a == answers[0] for a in answers) and len(shared_workers.pids()) == 1


def test_stores_that_other_processes_cannot_read_run_queries_in_threads(tmp_path: Path) -> None:
    from avila.storage.duckdb.store import DuckDBStore

    store = DuckDBStore(tmp_path / "in-process.duckdb")
    try:
        store.append_events(to_table(random_events(3, n_users=20)))
        pool = QueryWorkers(store, 2)
        assert pool.count == 0
        assert in_worker(pool, overview, store, PROJECT, RANGE) == overview(store, PROJECT, RANGE)
        assert pool.pids() == []
    finally:
        store.close()


def test_a_report_past_the_time_limit_is_ended_with_its_worker(store: ProcessStore) -> None:
    # The limit the pool's workers are made with: far above the overview below even on a busy
    # machine (at 0.5 s it once ran past it with the suite's other file running beside it).
    store.query_timeout = LIMIT_S
    try:
        pool = QueryWorkers(store, 1)
    finally:
        store.query_timeout = 0
    try:
        assert in_worker(pool, overview, store, PROJECT, RANGE)["total_events"] > 0
        (first,) = pool.pids()
        with pytest.raises(QueryTimeout) as late:
            in_worker(pool, past_the_limit, store, PROJECT)
        assert late.value.status == 504 and late.value.details == [{"limit_seconds": LIMIT_S}]
        assert pool.pids() == []  # killed, not left running
        assert in_worker(pool, overview, store, PROJECT, RANGE)["total_events"] > 0
        assert pool.pids() != [first]
    finally:
        pool.close()


def test_a_job_its_worker_never_started_goes_to_a_new_worker(
    store: ProcessStore, workers: QueryWorkers, tmp_path: Path
) -> None:
    assert in_worker(workers, echo, store, "warm")["value"] == "warm"
    (first,) = workers.pids()
    # The worker dies after receiving the job, before "started": not the job's doing, so the
    # next worker runs it and the caller gets its answer.
    assert in_worker(workers, echo, store, _DiesOnArrival(tmp_path / "once")) == {
        "value": "arrived"
    }
    assert workers.exits == 1 and workers.pids() != [first]
    # A job that ends every worker it reaches is given up after the second: 503, and the pool
    # still serves the next query.
    with pytest.raises(StorageUnavailable, match="before it could start") as gave_up:
        in_worker(workers, echo, store, _DiesOnArrival(tmp_path / "always", always=True))
    assert gave_up.value.code == "query_worker_exited" and workers.exits == 3
    assert in_worker(workers, echo, store, "after")["value"] == "after"


def test_a_training_pool_holds_only_each_read_to_the_limit_and_starts_fresh(
    store: ProcessStore,
) -> None:
    """Model training (``whole_job_limit=False, fresh=True``): a job may outlast
    ``AVILA_QUERY_TIMEOUT`` as a whole, and each job gets a new process, which exits after it."""
    store.query_timeout = LIMIT_S
    try:
        pool = QueryWorkers(store, 1, whole_job_limit=False, fresh=True)
    finally:
        store.query_timeout = 0
    try:
        first = asyncio.run(pool.run(pid_after, store, LIMIT_S + 2.0))  # past it: answers
        assert pool.pids() == []  # the process is gone with its job
        second = asyncio.run(pool.run(pid_after, store, 0.0))
        assert first != second and os.getpid() not in (first, second)
        assert pool.exits == 0  # stopping after a job is not a worker dying
    finally:
        pool.close()
