from __future__ import annotations

import random
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from analytics_data import PROJECT, event
from analytics_oracles import SEGMENT_TABLE, rfm_users
from hypothesis import given, settings
from hypothesis import strategies as st

from avila.analytics import rfm, user_segment
from avila.analytics.rfm import quintile_scores, segment_of
from avila.errors import NotFound, ValidationFailed

REF = datetime(2024, 6, 1)


def _purchases(seed: int, n_users: int = 120) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for u in range(n_users):
        for i in range(rng.choice([1, 1, 1, 2, 3, 5, 8])):
            ts = REF - timedelta(days=rng.uniform(0, 400), seconds=rng.randint(0, 9))
            row = event(
                f"u{u:03d}",
                ts,
                "purchase",
                order_id=f"o{u}-{i}",
                revenue=round(rng.uniform(5, 500), 2),
            )
            rows.append(row)
            if rng.random() < 0.1:  # resent purchase: same order, counted once
                rows.append({**row, "event_id": row["event_id"] + "dup"})
        rows.append(event(f"u{u:03d}", REF - timedelta(days=1), "page_view"))
    rows.append(event("browser_only", REF - timedelta(days=1), "page_view"))
    rows.append(event("future", REF + timedelta(seconds=1), "purchase", order_id="x", revenue=9.0))
    return rows


def _oracle(rows: list[dict], window_days: int = 365) -> pd.DataFrame:
    users = rfm_users(rows, REF, window_days)
    recency = (REF - users["last"]) / pd.Timedelta(microseconds=1)
    users["recency_days"] = recency / 86_400e6
    users["R"] = 5 - pd.qcut(recency, 5, labels=False)
    users["F"] = pd.qcut(users["f"].rank(method="first"), 5, labels=False) + 1
    users["M"] = pd.qcut(users["m"], 5, labels=False) + 1
    users["segment"] = [SEGMENT_TABLE[f"{r}{f}"] for r, f in zip(users.R, users.F, strict=True)]
    return users


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rfm_matches_pandas_qcut(load, seed):
    rows = _purchases(seed)
    store = load(rows)
    want = _oracle(rows)
    got = rfm(store, PROJECT, {"reference_date": REF.isoformat() + "Z"})
    assert got["users_scored"] == len(want)
    counts = want["segment"].value_counts().to_dict()
    assert {s["segment"]: s["users"] for s in got["segments"] if s["users"]} == counts
    assert sum(s["share"] for s in got["segments"]) == pytest.approx(1.0)
    for user in want.index[::7]:
        seg = user_segment(store, PROJECT, user, {"reference_date": REF.isoformat()})
        row = want.loc[user]
        assert (seg["r_score"], seg["f_score"], seg["m_score"]) == (row.R, row.F, row.M)
        assert seg["frequency"] == row.f
        assert seg["recency_days"] == pytest.approx(row.recency_days, rel=1e-12)
        assert seg["monetary"] == pytest.approx(row.m)
        assert seg["segment"] == row.segment
        assert seg["rfm_score"] == f"{row.R}{row.F}{row.M}"


def test_user_segment_edge_cases(load):
    store = load(_purchases(4, n_users=10))
    no_purchase = user_segment(store, PROJECT, "browser_only", {"reference_date": REF.isoformat()})
    assert no_purchase["frequency"] == 0 and no_purchase["segment"] is None
    with pytest.raises(NotFound):
        user_segment(store, PROJECT, "ghost", {"reference_date": REF.isoformat()})
    with pytest.raises(ValidationFailed) as info:
        rfm(store, PROJECT, {"window_days": 0})
    assert info.value.code == "invalid_query"


def test_segment_map_covers_all_pairs():
    for r in range(1, 6):
        for f in range(1, 6):
            assert segment_of(r, f) == SEGMENT_TABLE[f"{r}{f}"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=60))
def test_quintile_scores_in_range_and_monotone(values):
    arr = np.array(values)
    scores = quintile_scores(arr)
    assert scores.min() >= 1 and scores.max() <= 5
    order = np.argsort(arr, kind="stable")
    assert np.all(np.diff(scores[order]) >= 0)
    edges = np.quantile(arr, [0.2, 0.4, 0.6, 0.8])
    assert list(scores) == [1 + sum(e < v for e in edges) for v in values]


@pytest.mark.parametrize(("seed", "members"), [(5, 0), (6, 1), (7, 4), (8, 1000)])
def test_segment_revenue_and_members_match_pandas(load, seed, members):
    rows = _purchases(seed)
    # ties on monetary across users: the member order falls back to user_id
    for u in ("u000", "u001", "u002"):
        rows.append(event(u, REF - timedelta(days=2), "purchase", order_id=f"tie-{u}", revenue=1e9))
    store = load(rows)
    want = _oracle(rows)
    got = rfm(store, PROJECT, {"reference_date": REF.isoformat() + "Z", "members": members})
    revenue = want.groupby("segment")["m"].sum()
    for seg in got["segments"]:
        name = seg["segment"]
        expected_revenue = float(revenue.get(name, 0.0))
        assert seg["revenue"] == pytest.approx(expected_revenue, rel=1e-12, abs=1e-9)
        if not members:
            assert "members" not in seg
            continue
        group = want[want.segment == name].reset_index()
        top = group.sort_values(["m", "user_id"], ascending=[False, True]).head(members)
        assert [m["user_id"] for m in seg["members"]] == list(top.user_id)
        for member, (_, row) in zip(seg["members"], top.iterrows(), strict=True):
            assert (member["r_score"], member["f_score"], member["m_score"]) == (
                row.R,
                row.F,
                row.M,
            )
            assert member["segment"] == name and member["frequency"] == row.f
            assert member["monetary"] == pytest.approx(row.m)
            # the same answer as the per-user endpoint
            assert member == user_segment(
                store, PROJECT, member["user_id"], {"reference_date": REF.isoformat()}
            )


def test_members_are_bounded_and_empty_ranges_list_nothing(load):
    store = load(_purchases(9, n_users=10))
    with pytest.raises(ValidationFailed) as info:
        rfm(store, PROJECT, {"members": 1001})
    assert info.value.code == "invalid_query" and info.value.details[0]["path"] == "members"
    empty = rfm(store, PROJECT, {"reference_date": "1990-01-01T00:00:00Z", "members": 5})
    assert empty["users_scored"] == 0
    assert all(s["members"] == [] and s["revenue"] == 0.0 for s in empty["segments"])
