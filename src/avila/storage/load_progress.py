"""Load progress of the ingest log: the durable and loaded log positions, shared by the log's
writer (:mod:`avila.storage.ingest_log`), the loader's reports and readers that want to see their
own writes, and the request's read point (:data:`REQUEST_POINT`)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable

#: The durable log position when the current HTTP request arrived (set by the HTTP layer,
#: :mod:`avila.api.fast_ingest`): the request's reads see every write acknowledged before it.
REQUEST_POINT: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "avila_request_point", default=None
)


class LoadProgress:
    """Durable and loaded log positions, shared by the log's writer, the loader's reports and
    readers that want to see their own writes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.durable = 0
        self.loaded = 0
        self.rows_per_s = 0.0
        self.loaded_rows = 0
        self._listeners: list[Callable[[int], None]] = []
        self._on_wait: list[Callable[[], None]] = []

    def on_loaded(self, listener: Callable[[int], None]) -> None:
        self._listeners.append(listener)

    def on_wait(self, hurry: Callable[[], None]) -> None:
        """``hurry()`` runs when a reader starts waiting (the loader's flush: end its linger)."""
        self._on_wait.append(hurry)

    def set_durable(self, position: int) -> None:
        with self._cond:
            self.durable = max(self.durable, position)

    def set_loaded(self, position: int, rows: int = 0, seconds: float = 0.0) -> None:
        with self._cond:
            self.loaded = max(self.loaded, position)
            self.durable = max(self.durable, position)
            self.loaded_rows += rows
            if rows and seconds > 0:
                rate = rows / seconds
                self.rows_per_s = (
                    rate if not self.rows_per_s else 0.8 * self.rows_per_s + 0.2 * rate
                )
            self._cond.notify_all()
        for listener in self._listeners:
            listener(position)

    def wait_loaded(self, position: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.loaded >= position, timeout)

    def barrier(self, timeout: float) -> bool:
        """Wait (bounded) until everything durable now is loaded: reads see acknowledged writes.
        Never waits on an event loop's thread (that would delay acknowledgements).

        Within an HTTP request, "now" is when the request arrived (:data:`REQUEST_POINT`): every
        query of the request waits for the same position, so only the first may wait. (Under
        steady ingest each fresh "now" waits for the round being loaded: a profile's seven
        queries waited for seven rounds.)"""
        point = REQUEST_POINT.get()
        target = self.durable if point is None else point
        if self.loaded >= target:
            return True
        try:
            asyncio.get_running_loop()
            return False
        except RuntimeError:
            pass
        for hurry in self._on_wait:
            hurry()
        return self.wait_loaded(target, timeout)
