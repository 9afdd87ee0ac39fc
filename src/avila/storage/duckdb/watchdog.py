"""Cancel DuckDB queries that run past their time limit (``AVILA_QUERY_TIMEOUT``).

One thread for all queries (not a timer per query: most queries take milliseconds). A query
registers its cursor and deadline while it runs; past the deadline the watchdog calls the
cursor's ``interrupt()``, DuckDB stops at its next check and raises ``InterruptException``, and
:meth:`Watchdog.guard` turns that into :class:`~avila.errors.QueryTimeout` (HTTP 504). The
cursor stays usable for the next query.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb

from avila.errors import QueryTimeout


class Watchdog:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._running: dict[int, Any] = {}
        self._expired: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    @contextmanager
    def guard(self, cursor: Any) -> Iterator[None]:
        """Run the block (one query on ``cursor``) under the time limit."""
        if self.seconds <= 0:
            yield
            return
        ticket = next(self._ids)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="query-watchdog", daemon=True
                )
                self._thread.start()
            self._running[ticket] = cursor
            heapq.heappush(self._heap, (time.monotonic() + self.seconds, ticket))
            self._lock.notify()
        try:
            yield
        except duckdb.InterruptException:
            if ticket in self._expired:
                raise QueryTimeout.after(self.seconds) from None
            raise
        finally:
            with self._lock:
                self._running.pop(ticket, None)
                self._expired.discard(ticket)

    def _watch(self) -> None:
        with self._lock:
            while True:
                while self._heap and self._heap[0][1] not in self._running:
                    heapq.heappop(self._heap)  # finished in time
                if not self._heap:
                    self._lock.wait()
                    continue
                deadline, ticket = self._heap[0]
                left = deadline - time.monotonic()
                if left > 0:
                    self._lock.wait(left)
                    continue
                heapq.heappop(self._heap)
                self._expired.add(ticket)
                # Under the lock: the query is still inside its guard, so the interrupt cannot
                # reach a later query on the same cursor.
                self._running[ticket].interrupt()
