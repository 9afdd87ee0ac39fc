"""Production scheduling: every CP-SAT schedule is checked by an independent validator and
compared with first-come-first-served dispatching implemented here."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from avila.errors import ValidationFailed
from avila.industry40.optimize import optimize_production

FAMILY_SETUP = {"A": {"B": 30, "C": 45}, "B": {"A": 25, "C": 30}, "C": {"A": 40, "B": 35}}


def instance(n: int = 12, seed: int = 1) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    machines = ["m1", "m2", "m3"]
    orders = []
    for i in range(n):
        eligible = rng.choice(machines, size=int(rng.integers(1, 4)), replace=False)
        base = int(rng.integers(20, 60))
        orders.append(
            {
                "id": f"o{i:02d}",
                "processing_minutes": {str(m): base + int(rng.integers(0, 15)) for m in eligible},
                "due_minute": int(rng.integers(60, 240)),
                "family": "ABC"[i % 3],
                "release_minute": int(rng.integers(0, 30)),
            }
        )
    return {"orders": orders, "machines": machines, "family_changeovers": FAMILY_SETUP}


def setup(a: dict, b: dict) -> int:
    """The changeover rule, restated independently of the module."""
    return 0 if a["family"] == b["family"] else FAMILY_SETUP[a["family"]][b["family"]]


def validate(req: dict, rows: list[dict]) -> dict[str, int]:
    """Raise AssertionError unless ``rows`` is a feasible schedule of ``req``; return its
    makespan and total tardiness."""
    orders = {o["id"]: o for o in req["orders"]}
    assert sorted(r["order_id"] for r in rows) == sorted(orders), "every order exactly once"
    by_machine: dict[str, list[dict]] = {}
    for r in rows:
        o = orders[r["order_id"]]
        assert r["machine_id"] in o["processing_minutes"], "eligible machine"
        assert r["end"] - r["start"] == o["processing_minutes"][r["machine_id"]]
        assert r["start"] >= o.get("release_minute", 0), "release respected"
        if o.get("deadline_minute") is not None:
            assert r["end"] <= o["deadline_minute"]
        by_machine.setdefault(r["machine_id"], []).append(r)
    for seq in by_machine.values():
        seq.sort(key=lambda r: r["start"])
        for a, b in zip(seq, seq[1:], strict=False):
            gap = setup(orders[a["order_id"]], orders[b["order_id"]])
            assert b["start"] >= a["end"] + gap, "no overlap, changeover respected"
    tardiness = sum(
        max(0, r["end"] - orders[r["order_id"]]["due_minute"])
        for r in rows
        if orders[r["order_id"]].get("due_minute") is not None
    )
    return {"makespan": max(r["end"] for r in rows), "total_tardiness": tardiness}


def fcfs(req: dict) -> list[dict]:
    """First come, first served: orders by release (then list order), each to the eligible
    machine where it would finish first."""
    free: dict[str, tuple[int, dict | None]] = dict.fromkeys(req["machines"], (0, None))
    rows = []
    order_list = sorted(req["orders"], key=lambda o: o.get("release_minute", 0))
    for o in order_list:
        best = None
        for m, p in o["processing_minutes"].items():
            t, last = free[m]
            start = max(t + (setup(last, o) if last else 0), o.get("release_minute", 0))
            if best is None or start + p < best[0]:
                best = (start + p, m, start)
        end, m, start = best
        free[m] = (end, o)
        rows.append({"order_id": o["id"], "machine_id": m, "start": start, "end": end})
    return rows


@pytest.mark.parametrize("objective", ["makespan", "total_tardiness"])
def test_schedule_is_feasible_and_beats_fcfs(objective):
    req = instance() | {"objective": objective, "time_limit_s": 8}
    r = optimize_production(req, num_workers=8)
    got = validate(req, r["schedule"])
    base = validate(req, fcfs(req))
    assert r[objective] == got[objective] == r["objective_value"]
    assert got[objective] < base[objective]
    assert r["best_bound"] <= r["objective_value"] + 1e-9
    assert 0.0 <= r["gap"] <= 1.0
    assert r["status"] in {"optimal", "feasible"}
    assert r["unit"] == "minutes"
    for m, seq in r["machines"].items():
        assert seq == [x["order_id"] for x in r["schedule"] if x["machine_id"] == m]


def test_tiny_instance_is_solved_to_optimality():
    req = {
        "orders": [
            {"id": "a", "processing_minutes": {"m1": 10}, "family": "A"},
            {"id": "b", "processing_minutes": {"m1": 10}, "family": "B"},
            {"id": "c", "processing_minutes": {"m1": 10}, "family": "A"},
        ],
        "family_changeovers": {"A": {"B": 5}, "B": {"A": 50}},
    }
    r = optimize_production(req, num_workers=1)
    # best: the two A orders together, then B (one changeover of 5)
    assert r["status"] == "optimal" and r["gap"] == 0.0
    assert r["makespan"] == 35 and r["machines"]["m1"][-1] == "b"
    assert [x["changeover_before"] for x in r["schedule"]] == [0, 0, 5]


def test_order_pair_changeovers_override_families():
    req = {
        "orders": [
            {"id": "a", "processing_minutes": {"m1": 10}},
            {"id": "b", "processing_minutes": {"m1": 10}, "release_minute": 0},
        ],
        "order_changeovers": {"a": {"b": 7}, "b": {"a": 9}},
        "default_changeover_minutes": 100,
    }
    r = optimize_production(req, num_workers=1)
    assert r["makespan"] == 27 and r["machines"]["m1"] == ["a", "b"]


def test_unused_machine_is_allowed():
    req = {"orders": [{"id": "a", "processing_minutes": {"m1": 5}}], "machines": ["m1", "m2"]}
    r = optimize_production(req, num_workers=1)
    assert r["machines"] == {"m1": ["a"], "m2": []}


def test_deadlines_are_hard_constraints():
    req = instance(6, seed=3)
    for o in req["orders"]:
        o["deadline_minute"] = 400
    r = optimize_production(req | {"objective": "total_tardiness"}, num_workers=1)
    validate(req, r["schedule"])


def _code(req: dict) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as exc:
        optimize_production(req, num_workers=1)
    return exc.value


def test_order_without_eligible_machine_is_infeasible():
    err = _code({"orders": [{"id": "a", "processing_minutes": {}}]})
    assert err.code == "schedule_infeasible" and err.status == 422
    assert err.details[0]["path"] == "$.orders[0].processing_minutes"
    assert "no eligible machine" in err.message


def test_single_deadline_that_cannot_be_met():
    err = _code(
        {
            "orders": [
                {
                    "id": "a",
                    "processing_minutes": {"m1": 50},
                    "release_minute": 10,
                    "deadline_minute": 40,
                }
            ]
        }
    )
    assert err.code == "schedule_infeasible"
    assert err.details[0]["path"] == "$.orders[0].deadline_minute"


def test_conflicting_deadlines_are_named():
    req = {
        "orders": [
            {"id": "free", "processing_minutes": {"m1": 30}},
            {"id": "x", "processing_minutes": {"m1": 30}, "deadline_minute": 45},
            {"id": "y", "processing_minutes": {"m1": 30}, "deadline_minute": 45},
        ]
    }
    err = _code(req)
    assert err.code == "schedule_infeasible"
    assert {d["path"] for d in err.details} == {
        "$.orders[1].deadline_minute",
        "$.orders[2].deadline_minute",
    }
    assert "'x'" in err.message and "'y'" in err.message


@pytest.mark.parametrize(
    ("req", "code"),
    [
        (
            {"orders": [{"id": "a", "processing_minutes": {"m9": 5}}], "machines": ["m1"]},
            "schedule_unknown_machine",
        ),
        (
            {"orders": [{"id": "a", "processing_minutes": {"m1": 5}}] * 2},
            "schedule_duplicate_order_id",
        ),
        ({"orders": []}, "validation_failed"),
        ({"orders": [{"id": "a", "processing_minutes": {"m1": 0}}]}, "validation_failed"),
    ],
)
def test_bad_requests(req, code):
    assert _code(req).code == code
