"""Reads wait for acknowledged writes: for everything durable now, or, inside an HTTP request,
for what was durable when the request arrived (so a request's many queries wait once)."""

from __future__ import annotations

import contextvars
import threading

from avila.storage.load_progress import REQUEST_POINT, LoadProgress


def test_barrier_waits_for_the_durable_position_outside_a_request() -> None:
    progress = LoadProgress()
    progress.set_durable(200)
    progress.set_loaded(100)
    assert progress.barrier(0.05) is False  # nothing loads: the bounded wait ends
    threading.Timer(0.05, progress.set_loaded, args=(200,)).start()
    assert progress.barrier(5.0) is True
    assert progress.loaded == 200


def test_a_request_waits_only_for_what_was_acknowledged_before_it() -> None:
    progress = LoadProgress()
    progress.set_durable(100)
    progress.set_loaded(50)

    def request_reads() -> list[bool]:
        REQUEST_POINT.set(progress.durable)  # as the HTTP layer does when a request arrives
        progress.set_durable(300)  # acknowledged after the request arrived
        first = progress.barrier(0.05)  # 100 is not loaded yet: waits, times out
        progress.set_loaded(100)
        later = [progress.barrier(0.05) for _ in range(7)]  # 300 would time out: False
        return [first, *later]

    assert contextvars.copy_context().run(request_reads) == [False] + [True] * 7
    # outside that request, a read waits for everything durable again
    assert REQUEST_POINT.get() is None
    assert progress.barrier(0.05) is False
