"""The experiments endpoints end to end: definitions, errors, scopes, isolation, assignment
stability and split, SRM and the peeking warning.

Protocol, fixed before any run: assignment is checked over HTTP for 200 users (equality with
the documented hash, twice, and after a server restart); the split is checked with a
chi-square goodness-of-fit test at level 0.001 over 100,000 ids for weights 1:2:7 and over
the 10,000 users the results endpoint counts. SRM: 10,000 users of a 50/50 experiment; the
planted run exposes 4,500 of one variant and 5,500 of the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from scipy import stats

from avila.experiments.assignment import assign, bucket_bounds
from avila.testing import ServerProcess

from .experiment_data import (
    END,
    PROJECT,
    START,
    UNICODE_NAMES,
    Keys,
    client,
    exposure,
    ingest,
    oracle_variant,
)

GOF_LEVEL = 0.001
RANGE = {"start_time": START.isoformat(), "end_time": END.isoformat()}


def spec(key: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": key,
        "variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}],
        "goal": {"type": "conversion", "condition_type": "purchase", "condition_value": ""},
        "exposure": {"condition_type": "custom", "condition_value": "$exposure"},
        **RANGE,
    }
    body.update(extra)
    return body


@pytest.fixture(scope="module")
def admin(exp_server: tuple[ServerProcess, Keys]) -> Iterator[httpx.Client]:
    with client(exp_server[0], exp_server[1].admin) as c:
        yield c


def assert_error(response: httpx.Response, status: int, code: str, path: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    if path is not None:
        assert path in [d.get("path") for d in body["error"]["details"]], body


def test_create_read_list_and_immutability(admin: httpx.Client) -> None:
    body = spec("api-crud", name="Ünïcode name", planned_sample_size=1000)
    created = admin.post("/api/v1/experiments", json=body)
    assert created.status_code == 201, created.text
    got = created.json()
    assert got["key"] == "api-crud" and got["name"] == "Ünïcode name"
    assert got["variants"] == [{"name": "a", "weight": 50.0}, {"name": "b", "weight": 50.0}]
    assert got["goal"]["type"] == "conversion" and got["goal"]["condition_type"] == "purchase"
    assert got["start_time"] == "2026-03-01T00:00:00Z" and got["end_time"] == "2026-03-15T00:00:00Z"
    assert admin.get("/api/v1/experiments/api-crud").json() == got
    assert got in admin.get("/api/v1/experiments").json()["experiments"]
    again = admin.post("/api/v1/experiments", json=spec("api-crud"))
    assert_error(again, 409, "experiment_exists", "key")


@pytest.mark.parametrize(
    ("patch", "code", "path"),
    [
        (
            {"variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": -1}]},
            "validation_failed",
            "variants[1].weight",
        ),
        (
            {"variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 0}]},
            "validation_failed",
            "variants[1].weight",
        ),
        (
            {"variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": "x"}]},
            "validation_failed",
            "variants[1].weight",
        ),
        (
            {"variants": [{"name": "a", "weight": 1e6}, {"name": "b", "weight": 1e-3}]},
            "weight_too_small",
            "variants[1].weight",
        ),
        ({"variants": [{"name": "a", "weight": 1}]}, "validation_failed", "variants"),
        (
            {"variants": [{"name": "a", "weight": 1}, {"name": "a", "weight": 1}]},
            "duplicate_variant",
            "variants[1].name",
        ),
        ({"key": "has space"}, "validation_failed", "key"),
        (
            {"goal": {"type": "conversion", "condition_type": "nope"}},
            "unknown_condition_type",
            "goal.condition_type",
        ),
        ({"goal": {"type": "bogus"}}, "validation_failed", "goal.type"),
        (
            {"exposure": {"condition_type": "page_view", "condition_value": "(", "match": "regex"}},
            "invalid_regex",
            "exposure.condition_value",
        ),
        ({"end_time": START.isoformat()}, "invalid_time_range", "end_time"),
        ({"alpha": 0.7}, "validation_failed", "alpha"),
    ],
)
def test_bad_definitions_are_422_with_the_field_path(
    admin: httpx.Client, patch: dict[str, Any], code: str, path: str
) -> None:
    response = admin.post("/api/v1/experiments", json={**spec("api-bad"), **patch})
    assert_error(response, 422, code, path)


def test_unknown_experiment_is_404_everywhere(admin: httpx.Client) -> None:
    for url in ("/api/v1/experiments/nope", "/api/v1/experiments/nope/results"):
        assert_error(admin.get(url), 404, "experiment_not_found")
    response = admin.get("/api/v1/experiments/nope/assignment", params={"user_id": "u"})
    assert_error(response, 404, "experiment_not_found")
    assert_error(
        admin.get("/api/v1/experiments/api-crud/assignment"), 422, "missing_user_id", "user_id"
    )


def test_scopes_and_project_isolation(
    exp_server: tuple[ServerProcess, Keys], admin: httpx.Client
) -> None:
    server, keys = exp_server
    assert admin.post("/api/v1/experiments", json=spec("api-scopes")).status_code == 201
    with client(server, keys.read) as read, client(server, keys.ingest) as ingest_only:
        assert_error(read.post("/api/v1/experiments", json=spec("x1")), 403, "missing_scope")
        assert_error(ingest_only.post("/api/v1/experiments", json=spec("x2")), 403, "missing_scope")
        assert read.get("/api/v1/experiments/api-scopes/results").status_code == 200
        assert_error(
            ingest_only.get("/api/v1/experiments/api-scopes/results"), 403, "missing_scope"
        )
        assignment = ingest_only.get(
            "/api/v1/experiments/api-scopes/assignment", params={"user_id": "u1"}
        )
        assert assignment.status_code == 200, assignment.text
        assert_error(
            read.get("/api/v1/experiments/api-scopes/assignment", params={"user_id": "u1"}),
            403,
            "missing_scope",
        )
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        assert_error(anonymous.get("/api/v1/experiments"), 401, "missing_api_key")
    with client(server, keys.other_project) as other:
        # Another project cannot see the experiment, and may reuse its key.
        assert_error(other.get("/api/v1/experiments/api-scopes"), 404, "experiment_not_found")
        assert other.post("/api/v1/experiments", json=spec("api-scopes")).status_code == 201
        assert [e["key"] for e in other.get("/api/v1/experiments").json()["experiments"]] == [
            "api-scopes"
        ]


def test_assignment_is_deterministic_stable_and_follows_the_documented_hash(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from .experiment_data import experiment_server

    weights = [1, 2, 7]
    body = spec(
        "api-assign",
        variants=[{"name": n, "weight": w} for n, w in zip(["x", "y", "z"], weights, strict=True)],
    )
    users = [f"{UNICODE_NAMES[i % 6]}:{i}" if i % 3 else f"user {i}" for i in range(200)]
    data_dir = tmp_path_factory.mktemp("assignment")
    answers: list[list[str]] = []
    for run in range(2):  # the second run is a restarted server on the same data
        with experiment_server(data_dir) as (server, keys), client(server, keys.admin) as c:
            if run == 0:
                assert c.post("/api/v1/experiments", json=body).status_code == 201
            for _ in range(2 if run == 0 else 1):
                got = []
                for user in users:
                    r = c.get("/api/v1/experiments/api-assign/assignment", params={"user_id": user})
                    assert r.status_code == 200, r.text
                    assert r.json()["key"] == "api-assign" and r.json()["user_id"] == user
                    got.append(r.json()["variant"])
                answers.append(got)
    assert answers[0] == answers[1] == answers[2]
    expected = [["x", "y", "z"][oracle_variant(PROJECT, "api-assign", u, weights)] for u in users]
    assert answers[0] == expected
    assert set(expected) == {"x", "y", "z"}

    # The split: goodness of fit of 100,000 ids to 10 % / 20 % / 70 %.
    bounds = bucket_bounds(weights)
    counts = [0, 0, 0]
    for i in range(100_000):
        counts[assign(PROJECT, "api-assign", f"id-{i}", bounds)] += 1
    assert stats.chisquare(counts, [10_000, 20_000, 70_000]).pvalue > GOF_LEVEL
    # Another experiment splits the same users independently of this one.
    other = [assign(PROJECT, "another", f"id-{i}", bucket_bounds([1, 1])) for i in range(20_000)]
    this = [assign(PROJECT, "api-assign", f"id-{i}", bounds) for i in range(20_000)]
    table = [
        [sum(1 for a, b in zip(this, other, strict=True) if a == r and b == s) for s in (0, 1)]
        for r in range(3)
    ]
    assert stats.chi2_contingency(table).pvalue > GOF_LEVEL


def _exposures(key: str, users: list[str]) -> list[dict[str, Any]]:
    at = START + timedelta(days=2)
    return [exposure(u, at + timedelta(seconds=i), key) for i, u in enumerate(users)]


def test_srm_flags_a_planted_45_55_split_and_passes_an_honest_one(admin: httpx.Client) -> None:
    for key in ("srm-honest", "srm-planted"):
        assert admin.post("/api/v1/experiments", json=spec(key)).status_code == 201
    honest = [f"visitor-{i}" for i in range(10_000)]
    planted: list[str] = []
    wanted, have = [4_500, 5_500], [0, 0]
    i = 0
    while have != wanted:
        user = f"visitor-{i}"
        variant = oracle_variant(PROJECT, "srm-planted", user, [50, 50])
        if have[variant] < wanted[variant]:
            planted.append(user)
            have[variant] += 1
        i += 1
    ingest(admin, _exposures("srm-honest", honest) + _exposures("srm-planted", planted), chunk=5000)

    good = admin.get("/api/v1/experiments/srm-honest/results").json()
    counts = [v["exposed"] for v in good["variants"]]
    assert sum(counts) == 10_000
    assert good["srm_p_value"] == pytest.approx(stats.chisquare(counts).pvalue, abs=1e-9)
    assert good["srm_p_value"] > GOF_LEVEL and good["srm"] is False
    assert all(w["code"] != "sample_ratio_mismatch" for w in good["warnings"])

    bad = admin.get("/api/v1/experiments/srm-planted/results").json()
    assert [v["exposed"] for v in bad["variants"]] == [4_500, 5_500]
    assert bad["srm_p_value"] == pytest.approx(stats.chisquare([4_500, 5_500]).pvalue, rel=1e-6)
    assert bad["srm_p_value"] < 1e-6 and bad["srm"] is True
    assert "sample_ratio_mismatch" in [w["code"] for w in bad["warnings"]]


def test_peeking_before_the_planned_sample_size_warns(admin: httpx.Client) -> None:
    body = spec("peek", planned_sample_size=50)
    assert admin.post("/api/v1/experiments", json=body).status_code == 201
    users = [f"peeker-{i}" for i in range(60)]
    ingest(admin, _exposures("peek", users[:30]))
    early = admin.get("/api/v1/experiments/peek/results").json()
    assert early["exposed_total"] == 30 and early["peeking"] is True
    assert [w["code"] for w in early["warnings"]] == ["peeking"]
    ingest(admin, _exposures("peek", users[30:]))
    late = admin.get("/api/v1/experiments/peek/results").json()
    assert late["exposed_total"] == 60 and late["peeking"] is False and late["warnings"] == []

    # Without a planned size, reading before the end time is peeking too, and an experiment
    # with neither says it has no stopping rule.
    open_ended = spec("peek-open", end_time=None, start_time=None)
    assert admin.post("/api/v1/experiments", json=open_ended).status_code == 201
    body = admin.get("/api/v1/experiments/peek-open/results").json()
    assert body["peeking"] is True and [w["code"] for w in body["warnings"]] == ["no_stopping_rule"]
    assert [v["exposed"] for v in body["variants"]] == [0, 0]
    assert body["p_value"] is None and body["srm_p_value"] is None
    assert body["probability_best"] == {"a": pytest.approx(0.5), "b": pytest.approx(0.5)}
