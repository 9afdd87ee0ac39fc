"""Production scheduling on parallel unrelated machines with sequence-dependent changeovers.

Each order runs once, uninterrupted, on one of its eligible machines (processing time per
machine), no earlier than its release; a machine runs one order at a time and needs the
changeover time between consecutive orders (by order pair, or by product family: see
:class:`avila.schemas.industry40.ProductionOptimizeRequest`). A machine's first order needs
no changeover. Due dates are soft (tardiness = max(0, end − due)); deadlines are hard.
Objectives: ``makespan`` (latest end) or ``total_tardiness`` (Σ weight × tardiness).

The model is the standard CP-SAT formulation (Google OR-Tools, "Scheduling" and
``flexible_job_shop_sat`` / sequence-dependent-setup examples): one optional interval per
(order, eligible machine), exactly one chosen, and per machine an ``AddCircuit`` over the
orders with a dummy depot node whose arcs carry the changeover precedences. Deadlines are
enforced through assumption literals so that, when the problem is infeasible, the solver's
infeasible core names the deadlines that cannot all be met.

All times are integer minutes from the schedule origin.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ortools.sat.python import cp_model

from avila.errors import ValidationFailed
from avila.schemas.industry40 import ProductionOptimizeRequest, ScheduleOrder, convert

__all__ = ["changeover_minutes", "optimize_production"]

MAX_ORDERS_PER_MACHINE = 400  # the circuit has k² arcs per machine


def _fail(code: str, message: str, details: list[dict[str, str]]) -> ValidationFailed:
    return ValidationFailed(message, code=code, details=details)


def changeover_minutes(req: ProductionOptimizeRequest, a: ScheduleOrder, b: ScheduleOrder) -> int:
    """Changeover time from order ``a`` to order ``b`` (first rule that applies): the
    ``order_changeovers`` pair, the ``family_changeovers`` pair, 0 within a family, else
    ``default_changeover_minutes``."""
    if req.order_changeovers and b.id in req.order_changeovers.get(a.id, {}):
        return req.order_changeovers[a.id][b.id]
    fa, fb = a.family, b.family
    if (
        req.family_changeovers
        and fa is not None
        and fb is not None
        and fb in req.family_changeovers.get(fa, {})
    ):
        return req.family_changeovers[fa][fb]
    if fa is not None and fa == fb:
        return 0
    return req.default_changeover_minutes


def _check(req: ProductionOptimizeRequest) -> list[str]:
    """Static checks; returns the machine ids in a stable order."""
    seen: set[str] = set()
    for i, o in enumerate(req.orders):
        if o.id in seen:
            raise _fail(
                "schedule_duplicate_order_id",
                f"order id {o.id!r} appears more than once",
                [{"path": f"$.orders[{i}].id", "message": "duplicate order id"}],
            )
        seen.add(o.id)
    if req.machines is not None:
        machines = list(dict.fromkeys(req.machines))
        known = set(machines)
        for i, o in enumerate(req.orders):
            for m in o.processing_minutes:
                if m not in known:
                    raise _fail(
                        "schedule_unknown_machine",
                        f"order {o.id!r} names machine {m!r}, which is not in 'machines'",
                        [
                            {
                                "path": f"$.orders[{i}].processing_minutes.{m}",
                                "message": "unknown machine",
                            }
                        ],
                    )
    else:
        machines = sorted({m for o in req.orders for m in o.processing_minutes})
    for i, o in enumerate(req.orders):
        if not o.processing_minutes:
            raise _fail(
                "schedule_infeasible",
                f"order {o.id!r} has no eligible machine",
                [{"path": f"$.orders[{i}].processing_minutes", "message": "no eligible machine"}],
            )
        earliest = o.release_minute + min(o.processing_minutes.values())
        if o.deadline_minute is not None and earliest > o.deadline_minute:
            raise _fail(
                "schedule_infeasible",
                f"order {o.id!r} cannot meet its deadline {o.deadline_minute}: "
                f"earliest possible end is {earliest}",
                [{"path": f"$.orders[{i}].deadline_minute", "message": "deadline cannot be met"}],
            )
    for m in machines:
        k = sum(1 for o in req.orders if m in o.processing_minutes)
        if k > MAX_ORDERS_PER_MACHINE:
            raise _fail(
                "schedule_too_large",
                f"machine {m!r} is eligible for {k} orders; at most {MAX_ORDERS_PER_MACHINE}",
                [{"path": "$.orders", "message": "too many orders per machine"}],
            )
    return machines


def optimize_production(
    request: ProductionOptimizeRequest | Mapping[str, Any],
    *,
    num_workers: int = 8,
    random_seed: int = 0,
) -> dict[str, Any]:
    """Schedule every order; returns::

        {"status": "optimal"|"feasible", "objective": "makespan"|"total_tardiness",
         "objective_value": int, "best_bound": float, "gap": float (relative, 0 if optimal),
         "makespan": int, "total_tardiness": int, "weighted_tardiness": int,
         "schedule": [{"order_id", "machine_id", "start", "end", "changeover_before",
                       "tardiness"}, ...] (sorted by machine, then start),
         "machines": {machine_id: [order_id, ...] in run order}, "wall_time_s": float,
         "unit": "minutes"}

    Stops at ``time_limit_s`` with the best schedule found (``status: "feasible"`` and its
    gap). Raises :class:`ValidationFailed` ``schedule_infeasible`` when no schedule exists
    (no eligible machine, or deadlines that cannot all be met: the details name them),
    ``schedule_not_found`` when the time limit passed before any schedule was found, and
    ``schedule_unknown_machine`` / ``schedule_duplicate_order_id`` / ``schedule_too_large``.
    """
    req = convert(ProductionOptimizeRequest, request)
    machines = _check(req)
    orders = req.orders
    max_setup = max(
        (changeover_minutes(req, a, b) for a in orders for b in orders if a is not b), default=0
    )
    horizon = (
        max(o.release_minute for o in orders)
        + sum(max(o.processing_minutes.values()) for o in orders)
        + max_setup * len(orders)
    )

    model = cp_model.CpModel()
    start = [model.new_int_var(o.release_minute, horizon, f"s{i}") for i, o in enumerate(orders)]
    end = [model.new_int_var(0, horizon, f"e{i}") for i in range(len(orders))]
    on: dict[tuple[int, str], cp_model.IntVar] = {}
    for i, o in enumerate(orders):
        for m, p in o.processing_minutes.items():
            lit = model.new_bool_var(f"x{i}_{m}")
            on[i, m] = lit
            model.new_optional_interval_var(start[i], p, end[i], lit, f"iv{i}_{m}")
        model.add_exactly_one(on[i, m] for m in o.processing_minutes)

    for m in machines:
        eligible = [i for i in range(len(orders)) if (i, m) in on]
        if not eligible:
            continue
        arcs: list[tuple[int, int, Any]] = []
        for a, i in enumerate(eligible, start=1):
            arcs.append((0, a, model.new_bool_var("")))
            arcs.append((a, 0, model.new_bool_var("")))
            arcs.append((a, a, ~on[i, m]))
            for b, j in enumerate(eligible, start=1):
                if a == b:
                    continue
                lit = model.new_bool_var("")
                arcs.append((a, b, lit))
                setup = changeover_minutes(req, orders[i], orders[j])
                model.add(start[j] >= end[i] + setup).only_enforce_if(lit)
        # An unused machine: the depot loops on itself.
        arcs.append((0, 0, model.new_bool_var("")))
        model.add_circuit(arcs)

    deadline_lits: dict[int, int] = {}
    for i, o in enumerate(orders):
        if o.deadline_minute is not None:
            lit = model.new_bool_var(f"deadline{i}")
            model.add(end[i] <= o.deadline_minute).only_enforce_if(lit)
            deadline_lits[lit.index] = i
    if deadline_lits:
        model.add_assumptions([model.get_bool_var_from_proto_index(k) for k in deadline_lits])

    makespan = model.new_int_var(0, horizon, "makespan")
    model.add_max_equality(makespan, end)
    tardy = []
    for i, o in enumerate(orders):
        if o.due_minute is not None:
            t = model.new_int_var(0, horizon, f"t{i}")
            model.add(t >= end[i] - o.due_minute)
            tardy.append((o.weight, t))
    weighted = sum(w * t for w, t in tardy) if tardy else 0
    if req.objective == "makespan":
        model.minimize(makespan)
    else:
        model.minimize(weighted)

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = req.time_limit_s
    solver.parameters.num_workers = num_workers
    solver.parameters.random_seed = random_seed
    status = solver.solve(model)

    if status == cp_model.INFEASIBLE:
        core = [deadline_lits[i] for i in solver.sufficient_assumptions_for_infeasibility()]
        if core:
            names = ", ".join(repr(orders[i].id) for i in sorted(core))
            raise _fail(
                "schedule_infeasible",
                f"the deadlines of orders {names} cannot all be met",
                [
                    {"path": f"$.orders[{i}].deadline_minute", "message": "deadline in conflict"}
                    for i in sorted(core)
                ],
            )
        raise _fail(
            "schedule_infeasible",
            "no schedule satisfies the constraints",
            [{"path": "$.orders", "message": "infeasible"}],
        )
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise _fail(
            "schedule_not_found",
            f"no schedule found within {req.time_limit_s} s (solver status "
            f"{solver.status_name(status)}); raise time_limit_s",
            [{"path": "$.time_limit_s", "message": "time limit reached without a solution"}],
        )
    return _result(req, machines, solver, status, start, end, on)


def _result(
    req: ProductionOptimizeRequest,
    machines: list[str],
    solver: cp_model.CpSolver,
    status: Any,
    start: list[Any],
    end: list[Any],
    on: dict[tuple[int, str], Any],
) -> dict[str, Any]:
    orders = req.orders
    rows: list[dict[str, Any]] = []
    for i, o in enumerate(orders):
        m = next(m for m in o.processing_minutes if solver.boolean_value(on[i, m]))
        s, e = solver.value(start[i]), solver.value(end[i])
        tard = max(0, e - o.due_minute) if o.due_minute is not None else 0
        rows.append({"order_id": o.id, "machine_id": m, "start": s, "end": e, "tardiness": tard})
    by_id = {o.id: o for o in orders}
    rows.sort(key=lambda r: (machines.index(r["machine_id"]), r["start"]))
    sequences: dict[str, list[str]] = {m: [] for m in machines}
    for r in rows:
        seq = sequences[r["machine_id"]]
        prev = by_id[seq[-1]] if seq else None
        r["changeover_before"] = changeover_minutes(req, prev, by_id[r["order_id"]]) if prev else 0
        seq.append(r["order_id"])
    objective = round(solver.objective_value)
    bound = solver.best_objective_bound
    return {
        "status": "optimal" if status == cp_model.OPTIMAL else "feasible",
        "objective": req.objective,
        "objective_value": objective,
        "best_bound": bound,
        "gap": 0.0
        if status == cp_model.OPTIMAL
        else abs(objective - bound) / max(1, abs(objective)),
        "makespan": max(r["end"] for r in rows),
        "total_tardiness": sum(r["tardiness"] for r in rows),
        "weighted_tardiness": sum(by_id[r["order_id"]].weight * r["tardiness"] for r in rows),
        "schedule": rows,
        "machines": sequences,
        "wall_time_s": solver.wall_time,
        "unit": "minutes",
    }
