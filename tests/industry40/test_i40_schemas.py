"""Request Structs: dict conversion, JSON paths in errors, numpy inputs, JSON round trips."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from avila.errors import ValidationFailed
from avila.schemas.industry40 import (
    AnomalyDetectRequest,
    OeeRequest,
    ProductionOptimizeRequest,
    QualityInspectRequest,
    convert,
)


def test_error_names_the_nested_json_path():
    with pytest.raises(ValidationFailed) as exc:
        convert(OeeRequest, {"device_id": "d", "production_data": {"good_units": "x"}})
    assert exc.value.code == "validation_failed" and exc.value.status == 422
    assert exc.value.details[0]["path"].startswith("$.production_data")


def test_numpy_values_are_accepted():
    req = convert(AnomalyDetectRequest, {"values": np.arange(5.0), "window": np.int64(3)})
    assert req.values == [0.0, 1.0, 2.0, 3.0, 4.0] and req.window == 3


def test_struct_passes_through():
    req = QualityInspectRequest(values=[1.0, 2.0, 3.0])
    assert convert(QualityInspectRequest, req) is req


def test_schedule_request_from_json():
    body = b'{"orders": [{"id": "a", "processing_minutes": {"m1": 5}, "due_minute": 3}]}'
    req = msgspec.json.decode(body, type=ProductionOptimizeRequest)
    assert req.objective == "makespan" and req.orders[0].release_minute == 0


@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=50),
    st.integers(3, 100),
)
def test_anomaly_request_round_trips(values, window):
    req = AnomalyDetectRequest(values=values, window=window)
    assert msgspec.json.decode(msgspec.json.encode(req), type=AnomalyDetectRequest) == req
