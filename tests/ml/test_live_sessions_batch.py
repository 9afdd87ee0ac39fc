"""LiveSessions' batch hook (the ingest listener) keeps the same sessions as observing each
event on its own: new session ids, 30-minute gaps, late events, purchases, eviction order."""

from __future__ import annotations

import random
from dataclasses import asdict
from types import SimpleNamespace

from avila.ml.conversion import SESSION_TIMEOUT_US, LiveSessions

KINDS = ["page_view", "product_view", "add_to_cart", "purchase", "search", "custom", "checkout"]


def test_batch_hook_matches_observing_one_event_at_a_time() -> None:
    rng = random.Random(9)
    one_by_one = LiveSessions(max_users=40)
    batched = LiveSessions(max_users=40)
    clock = 1_000_000
    for _ in range(300):
        cols: dict[str, list[object]] = {
            "user_id": [],
            "session_id": [],
            "ts": [],
            "event_type": [],
        }
        for _ in range(rng.randint(1, 30)):
            clock += rng.choice([1, 1_000_000, 60_000_000, SESSION_TIMEOUT_US + 1])
            ts = clock - rng.choice([0, 0, 0, 5_000_000, 2 * SESSION_TIMEOUT_US])  # some late
            user = f"u{rng.randint(0, 60)}"
            session = rng.choice([None, "s1", "s2"])
            kind = rng.choice(KINDS)
            for name, value in zip(cols, (user, session, ts, kind), strict=True):
                cols[name].append(value)
            one_by_one.observe("p", user, session, ts, kind)
        batched(SimpleNamespace(columns=cols, project_id="p"))
        assert list(batched._states) == list(one_by_one._states)  # same LRU order
    for key, state in one_by_one._states.items():
        assert asdict(batched._states[key]) == asdict(state)
