"""Paths on the engine: exact against the plain-Python oracle, plus hand-checked cases."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pytest
from analytics_data import PROJECT, event, to_table
from journey_oracles import journey_rows, paths_oracle

from avila.analytics import paths
from avila.errors import ValidationFailed

T0 = datetime(2024, 2, 20)
ROWS = journey_rows(seed=5, n_users=70, t0=T0, days=60)
START, END = datetime(2024, 3, 5, 12), datetime(2024, 4, 8)
HOME = {"condition_type": "page_view", "condition_value": "/"}
CAFE = {"condition_type": "page_view", "condition_value": "/ca", "match": "prefix"}
BUY = {"condition_type": "purchase", "condition_value": ""}


@pytest.fixture(scope="module")
def data_store(module_store):
    module_store.append_events(to_table(ROWS))
    return module_store


def as_sets(result):
    nodes = {(n["step"], n["name"]): n["users"] for n in result["nodes"]}
    links = {(x["source"], x["target"]): x["users"] for x in result["links"]}
    return result["users"], nodes, links


@pytest.mark.parametrize("steps", [2, 4, 7])
@pytest.mark.parametrize(
    ("start", "end"), [(None, None), (HOME, None), (None, BUY), (CAFE, BUY), (HOME, HOME)]
)
@pytest.mark.parametrize("limit", [50, 2])
def test_paths_match_oracle(data_store, steps, start, end, limit):
    body = {"steps": steps, "start_time": START, "end_time": END, "limit_per_step": limit}
    if start:
        body["start"] = start
    if end:
        body["end"] = end
    got = paths(data_store, PROJECT, body)
    want = paths_oracle(ROWS, START, END, steps, start, end, limit=limit)
    assert as_sets(got) == (want["users"], want["nodes"], want["links"])
    assert got["users"] > 0
    for link in got["links"]:  # links join nodes of consecutive steps
        src, dst = link["source"].split(":", 1), link["target"].split(":", 1)
        assert int(dst[0]) == int(src[0]) + 1
    ids = {n["id"] for n in got["nodes"]}
    assert {x["source"] for x in got["links"]} <= ids and {x["target"] for x in got["links"]} <= ids


def test_paths_include_and_filters_match_oracle(data_store):
    include = ["page_view", "purchase"]
    body = {"steps": 5, "start_time": START, "end_time": END, "include": include}
    got = paths(data_store, PROJECT, body)
    want = paths_oracle(ROWS, START, END, 5, include=include)
    assert as_sets(got) == (want["users"], want["nodes"], want["links"])
    only_pv = paths(
        data_store,
        PROJECT,
        {**body, "include": [], "filters": [{"property": "event_type.type", "value": "page_view"}]},
    )
    want_pv = paths_oracle(ROWS, START, END, 5, include=["page_view"])
    assert as_sets(only_pv) == (want_pv["users"], want_pv["nodes"], want_pv["links"])


def test_hand_checked_paths(load):
    t = datetime(2024, 5, 1, 10)
    m = timedelta(minutes=1)
    store = load(
        [
            # a: / -> /x (reloaded, duplicate) -> buy -> /
            event("a", t, url="/"),
            event("a", t + m, url="/x"),
            event("a", t + m, url="/x", event_id="dup"),
            event("a", t + 2 * m, url="/x"),
            event("a", t + 3 * m, "purchase", order_id="o1"),
            event("a", t + 4 * m, url="/"),
            # b: tie at t: "/" and "/x" at the same instant -> ordered by name: "page_view:/" first
            event("b", t, url="/x"),
            event("b", t, url="/"),
            event("b", t + m, "purchase", order_id="o2"),
            # c: "/x" then "/": starts at its first "/" (no purchase after it)
            event("c", t, url="/x"),
            event("c", t + m, url="/"),
            event("ünï", t - timedelta(days=9), url="/"),  # before the range
        ]
    )
    rng = {"start_time": t - timedelta(hours=1), "end_time": t + timedelta(hours=1)}
    got = paths(
        store,
        PROJECT,
        {**rng, "steps": 3, "start": {"condition_type": "page_view", "condition_value": "/"}},
    )
    assert got["users"] == 3
    assert {(n["step"], n["name"]): n["users"] for n in got["nodes"]} == {
        (1, "page_view:/"): 3,
        (2, "page_view:/x"): 2,  # a, b
        (3, "purchase"): 2,  # a, b
    }
    assert {(x["source"], x["target"]): x["users"] for x in got["links"]} == {
        ("1:page_view:/", "2:page_view:/x"): 2,
        ("2:page_view:/x", "3:purchase"): 2,
    }
    to_buy = paths(store, PROJECT, {**rng, "steps": 3, "end": {"condition_type": "purchase"}})
    # Aligned on the end: every path ends at step 3 on "purchase".
    assert {(n["step"], n["name"]): n["users"] for n in to_buy["nodes"]} == {
        (1, "page_view:/"): 2,
        (2, "page_view:/x"): 2,
        (3, "purchase"): 2,
    }
    short = paths(store, PROJECT, {**rng, "steps": 2, "end": {"condition_type": "purchase"}})
    assert {(n["step"], n["name"]): n["users"] for n in short["nodes"]} == {
        (1, "page_view:/x"): 2,
        (2, "purchase"): 2,
    }
    both = paths(
        store,
        PROJECT,
        {
            **rng,
            "steps": 2,
            "start": {"condition_type": "page_view", "condition_value": "/"},
            "end": {"condition_type": "purchase"},
        },
    )
    assert both["users"] == 0  # a and b need 3 steps from "/" to the purchase
    assert (
        paths(
            store,
            PROJECT,
            {
                **rng,
                "steps": 3,
                "start": {"condition_type": "page_view", "condition_value": "/"},
                "end": {"condition_type": "purchase"},
            },
        )["users"]
        == 2
    )


def test_empty_range_and_other_project(data_store):
    empty = paths(
        data_store,
        PROJECT,
        {"start_time": "2030-01-01T00:00:00Z", "end_time": "2030-02-01T00:00:00Z"},
    )
    assert empty == {"steps": 5, "users": 0, "nodes": [], "links": []}
    nobody = paths(data_store, "no-such-project", {"start_time": START, "end_time": END})
    assert nobody["users"] == 0


@pytest.mark.parametrize(
    ("body", "code", "path", "extra"),
    [
        ({"steps": 1}, "invalid_query", "steps", {"minimum": 2, "maximum": 20}),
        ({"steps": 21}, "invalid_query", "steps", {"minimum": 2, "maximum": 20}),
        (
            {"start": {"condition_type": "teleport"}},
            "unknown_condition_type",
            "start.condition_type",
            {},
        ),
        (
            {"end": {"condition_type": "page_view", "match": "fuzzy"}},
            "invalid_query",
            "end.match",
            {"allowed": ["contains", "exact", "prefix", "regex"]},
        ),
        ({"include": ["page_view", "nope"]}, "unknown_event_type", "include[1]", {}),
        ({"limit_per_step": 0}, "invalid_query", "limit_per_step", {"minimum": 1, "maximum": 500}),
        (
            {"start_time": "2024-01-02T00:00:00Z", "end_time": "2024-01-01T00:00:00Z"},
            "invalid_time_range",
            "end_time",
            {},
        ),
    ],
)
def test_invalid_paths_queries(store, body, code, path, extra):
    with pytest.raises(ValidationFailed) as info:
        paths(store, PROJECT, body)
    detail = info.value.details[0]
    assert (info.value.code, detail["path"]) == (code, path)
    assert {k: detail[k] for k in extra} == extra


def test_identity_stitched_person_has_one_path(load):
    t = datetime(2024, 5, 2, 9)
    store = load(
        [
            event("anon-1", t, url="/"),
            event("anon-1", t + timedelta(minutes=1), url="/pricing"),
            event("alice", t + timedelta(minutes=2), "sign_up"),
            event("alice", t + timedelta(minutes=3), url="/app"),
        ]
    )
    rng = {"start_time": t - timedelta(hours=1), "end_time": t + timedelta(hours=1), "steps": 4}
    before = paths(store, PROJECT, rng)
    assert before["users"] == 2
    store.append_table(
        "identities",
        pa.table(
            {
                "project_id": [PROJECT],
                "anonymous_id": ["anon-1"],
                "user_id": ["alice"],
                "ts": pa.array([t], pa.timestamp("us")),
                "received_at": pa.array([t], pa.timestamp("us")),
                "source": ["test"],
                "event_id": ["link-1"],
            }
        ),
    )
    after = paths(store, PROJECT, rng)
    assert after["users"] == 1
    assert [n["name"] for n in after["nodes"]] == [
        "page_view:/",
        "page_view:/pricing",
        "sign_up",
        "page_view:/app",
    ]
