"""OEE against oee.com's worked example and the identities of its definitions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from avila.errors import ValidationFailed
from avila.industry40.oee import calculate_oee, classify_oee, oee_from_shift

EXAMPLE = {
    "shift_minutes": 480,
    "planned_break_minutes": 60,
    "stop_minutes": 47,
    "ideal_cycle_time_s": 1.0,
    "total_count": 19_271,
    "reject_count": 423,
}


def test_oee_com_worked_example():
    r = oee_from_shift(**EXAMPLE)
    assert round(100 * r["availability"], 2) == 88.81
    assert round(100 * r["performance"], 2) == 86.11
    assert round(100 * r["quality"], 2) == 97.80
    assert round(100 * r["oee"], 2) == 74.79
    # OEE = good count × ideal cycle time / planned production time
    assert r["oee"] == pytest.approx((19_271 - 423) * 1.0 / (420 * 60), rel=1e-12)
    assert r["classification"] == "typical"
    assert r["below_world_class"] == ["availability", "performance", "quality"]
    assert not r["performance_capped"]
    assert "teep" not in r


def test_seed_body_matches_shift_form():
    body = {
        "device_id": "press_1",
        "production_data": {
            "planned_production_time_hours": 7.0,
            "actual_runtime_hours": 373 / 60,
            "ideal_cycle_time_ms": 1000.0,
            "total_units_produced": 19_271,
            "good_units": 18_848,
            "defects": 423,
        },
    }
    a = calculate_oee(body["production_data"])
    b = oee_from_shift(**EXAMPLE)
    for k in ("availability", "performance", "quality", "oee"):
        assert a[k] == pytest.approx(b[k], rel=1e-12)


def test_teep_uses_all_time():
    r = oee_from_shift(**EXAMPLE, all_time_minutes=24 * 60)
    assert r["teep"] == pytest.approx(r["oee"] * 420 / 1440)


def test_six_big_losses_split_and_add_up():
    r = calculate_oee(
        {
            "planned_production_time_hours": 8.0,
            "actual_runtime_hours": 7.0,
            "ideal_cycle_time_ms": 1000.0,
            "actual_cycle_time_ms": 1200.0,
            "total_units_produced": 20_000,
            "good_units": 19_500,
            "defects": 500,
            "equipment_failure_hours": 0.75,
            "startup_rejects": 100,
        }
    )
    L = r["losses"]
    assert L["equipment_failure_hours"] == pytest.approx(0.75)
    assert L["setup_and_adjustments_hours"] == pytest.approx(0.25)
    # reduced speed: 20 000 × 0.2 s; the rest of the performance loss is idling / minor stops
    assert L["reduced_speed_hours"] == pytest.approx(20_000 * 0.2 / 3600)
    assert L["reduced_speed_hours"] + L["idling_and_minor_stops_hours"] == pytest.approx(
        L["performance_loss_hours"]
    )
    assert L["reduced_yield_hours"] == pytest.approx(100 / 3600)
    assert L["process_defects_hours"] == pytest.approx(400 / 3600)
    total_loss = (
        L["availability_loss_hours"] + L["performance_loss_hours"] + L["quality_loss_hours"]
    )
    assert total_loss == pytest.approx(8.0 - r["fully_productive_time_hours"])


def test_losses_unsplit_when_breakdown_unknown():
    L = oee_from_shift(**EXAMPLE)["losses"]
    assert L["availability_loss_hours"] == pytest.approx(47 / 60)
    assert L["equipment_failure_hours"] is None and L["reduced_speed_hours"] is None


def test_performance_above_one_is_capped_and_flagged():
    r = calculate_oee(
        {
            "planned_production_time_hours": 1.0,
            "actual_runtime_hours": 1.0,
            "ideal_cycle_time_ms": 2000.0,
            "total_units_produced": 2000,
            "good_units": 2000,
        }
    )
    assert r["performance_raw"] == pytest.approx(2000 * 2 / 3600)
    assert r["performance"] == 1.0 and r["performance_capped"] is True
    assert r["oee"] == 1.0 and r["losses"]["performance_loss_hours"] == 0.0


@pytest.mark.parametrize(
    ("oee", "band"),
    [
        (0.85, "world_class"),
        (0.849, "typical"),
        (0.60, "typical"),
        (0.5, "low"),
        (0.39, "very_low"),
    ],
)
def test_classification_bands(oee, band):
    assert classify_oee(oee) == band


BASE = {
    "planned_production_time_hours": 8.0,
    "actual_runtime_hours": 7.0,
    "ideal_cycle_time_ms": 1000.0,
    "total_units_produced": 100,
    "good_units": 90,
    "defects": 10,
}


@pytest.mark.parametrize(
    ("change", "code", "path"),
    [
        ({"good_units": 101}, "oee_good_exceeds_total", "$.production_data.good_units"),
        ({"defects": 11}, "oee_defects_exceed_total", "$.production_data.defects"),
        (
            {"actual_runtime_hours": 9.0},
            "oee_runtime_exceeds_planned",
            "$.production_data.actual_runtime_hours",
        ),
        (
            {"planned_production_time_hours": 0.0, "actual_runtime_hours": 0.0},
            "oee_planned_time_zero",
            "$.production_data.planned_production_time_hours",
        ),
        ({"all_time_hours": 4.0}, "oee_all_time_below_planned", "$.production_data.all_time_hours"),
        (
            {"equipment_failure_hours": 2.0},
            "oee_loss_breakdown_exceeds_stop_time",
            "$.production_data.equipment_failure_hours",
        ),
        ({"good_units": -1}, "validation_failed", "$.good_units"),
        ({"ideal_cycle_time_ms": 0}, "validation_failed", "$.ideal_cycle_time_ms"),
    ],
)
def test_bad_input_codes(change, code, path):
    with pytest.raises(ValidationFailed) as exc:
        calculate_oee(BASE | change)
    assert exc.value.code == code
    assert exc.value.status == 422
    assert exc.value.details[0]["path"] == path


def test_no_units_produced_is_zero_oee():
    r = calculate_oee(BASE | {"total_units_produced": 0, "good_units": 0, "defects": 0})
    assert r["oee"] == 0.0 and r["quality"] == 0.0 and r["classification"] == "very_low"


@given(
    ppt=st.floats(0.1, 24),
    # Runtimes below a nanosecond-scale fraction only probe float underflow, not OEE.
    run_frac=st.one_of(st.just(0.0), st.floats(1e-9, 1)),
    ideal_ms=st.floats(10, 60_000),
    total=st.integers(0, 100_000),
    good_frac=st.floats(0, 1),
)
def test_identities_hold(ppt, run_frac, ideal_ms, total, good_frac):
    good = int(total * good_frac)
    r = calculate_oee(
        {
            "planned_production_time_hours": ppt,
            "actual_runtime_hours": ppt * run_frac,
            "ideal_cycle_time_ms": ideal_ms,
            "total_units_produced": total,
            "good_units": good,
        }
    )
    for k in ("availability", "performance", "quality", "oee"):
        assert 0.0 <= r[k] <= 1.0
    assert r["oee"] == pytest.approx(r["availability"] * r["performance"] * r["quality"])
    if not r["performance_capped"] and run_frac > 0:
        assert r["oee"] == pytest.approx(good * ideal_ms / 3.6e6 / ppt, rel=1e-9, abs=1e-12)
    L = r["losses"]
    assert (
        min(L["availability_loss_hours"], L["performance_loss_hours"], L["quality_loss_hours"])
        >= -1e-12
    )
    assert L["availability_loss_hours"] + L["performance_loss_hours"] + L[
        "quality_loss_hours"
    ] == pytest.approx(ppt * (1 - r["oee"]), abs=1e-9)
