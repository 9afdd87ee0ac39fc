"""The dedup index: window, pruning and the memory bound."""

from __future__ import annotations

from avila.ingest.idempotency import DedupIndex, event_key


def test_keys_are_per_project() -> None:
    index = DedupIndex(window_seconds=60)
    index.add_committed([event_key("a", "e1")], at=0)
    assert event_key("a", "e1") in index and event_key("b", "e1") not in index


def test_prune_forgets_only_keys_older_than_the_window() -> None:
    index = DedupIndex(window_seconds=100)
    index.add_committed(["old"], at=0)
    index.add_committed(["new"], at=50)
    assert index.prune(now=120) == 1
    assert "old" not in index and "new" in index


def test_bound_evicts_oldest_and_counts() -> None:
    index = DedupIndex(window_seconds=1000, max_keys=3)
    index.add_committed(["k1", "k2", "k3", "k4"], at=0)
    assert len(index) == 3 and "k1" not in index and "k4" in index
    assert index.evicted_early == 1
