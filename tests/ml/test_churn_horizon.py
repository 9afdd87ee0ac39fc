"""ChurnModel given its label horizon: the BG/NBD "no activity within H" feature.

The activity history is checked against plain Python over the raw events, the internal BG/NBD
against an independent fit on that history, and the settings and inputs against their errors.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from avila.errors import ValidationFailed
from avila.ml.churn import ACTIVITY_HISTORY, ChurnModel, activity_history
from avila.ml.clv import BetaGeoModel
from avila.ml.features import COUNTED_TYPES, SNAPSHOT_FEATURES, user_snapshot

T0 = pd.Timestamp("2024-03-01")
HORIZON = 14.0


def _events(seed: int, n_users: int = 400) -> pd.DataFrame:
    """Users join in January–February and visit as Poisson processes until they quit; several
    visits can fall on one day (one active day), users are named in several scripts."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_users):
        user = f"ü-{i}" if i % 3 else f"用户{i}"
        start = rng.uniform(0, 58)
        rate = rng.gamma(1.5, 0.15)
        stop = start + rng.exponential(40)
        t = start
        while t < min(stop, 74):
            rows.append((user, pd.Timestamp("2024-01-01") + pd.Timedelta(days=t)))
            t += rng.exponential(1 / rate) if rng.random() > 0.2 else rng.uniform(0, 0.05)
    return pd.DataFrame(rows, columns=["user_id", "ts"])


def _daily(events: pd.DataFrame) -> pd.DataFrame:
    """The store's daily activity table (features.load_event_data's shape)."""
    frame = events.assign(day=events["ts"].dt.floor("D"))
    daily = frame.groupby(["user_id", "day"], as_index=False).agg(
        events=("ts", "size"), first_ts=("ts", "min"), last_ts=("ts", "max")
    )
    daily["sessions"] = 1
    for kind in COUNTED_TYPES:
        daily[kind] = 0
    daily["page_view"] = daily["events"]
    # Some purchases: with none, days_since_purchase is all NaN, which the trees cannot bin.
    daily["purchase"] = (daily["events"] >= 2).astype(int)
    daily["revenue"] = 20.0 * daily["purchase"]
    return daily


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return _events(3)


@pytest.fixture(scope="module")
def snap(events: pd.DataFrame) -> pd.DataFrame:
    return user_snapshot(_daily(events), T0, horizon_days=HORIZON)


def test_activity_history_matches_the_raw_events(events: pd.DataFrame, snap: pd.DataFrame) -> None:
    x, t_x, big_t = activity_history(snap)
    day = pd.Timedelta(days=1)
    past = events[events["ts"] < T0]
    for pos, user in enumerate(snap.index):
        mine = sorted(past.loc[past["user_id"] == user, "ts"])
        days = {ts.date() for ts in mine}
        assert x[pos] == len(days) - 1
        # Same-day visits are one "purchase": a one-day user has t_x = 0 even across hours.
        expected_span = (mine[-1] - mine[0]) / day if len(days) > 1 else 0.0
        assert t_x[pos] == pytest.approx(expected_span, abs=1e-9)
        assert big_t[pos] == pytest.approx((T0 - mine[0]) / day, abs=1e-9)
    one_day = x == 0
    assert one_day.any() and (~one_day).any()
    assert any(len(u.encode()) != len(u) for u in snap.index)


def test_the_model_fits_bgnbd_on_the_training_rows_only(snap: pd.DataFrame) -> None:
    train, test = snap.iloc[: len(snap) // 2], snap.iloc[len(snap) // 2 :]
    model = ChurnModel(horizon_days=HORIZON).fit(train[SNAPSHOT_FEATURES], train["churned"])
    independent = BetaGeoModel(penalizer=0.001).fit(*activity_history(train))
    assert model.bgnbd_ is not None and model.bgnbd_.params_ is not None
    assert independent.params_ is not None
    for name, value in independent.params_.items():
        assert model.bgnbd_.params_[name] == pytest.approx(value, rel=1e-6), name
    before = dict(model.bgnbd_.params_)
    p = model.predict_proba(test[SNAPSHOT_FEATURES])
    assert model.bgnbd_.params_ == before  # scoring never refits
    assert p.shape == (len(test),) and np.all((p > 0) & (p < 1))
    # The feature changes the model: without the horizon, the same rows score differently.
    plain = ChurnModel().fit(train[SNAPSHOT_FEATURES], train["churned"])
    assert plain.bgnbd_ is None
    assert not np.allclose(plain.predict_proba(test[SNAPSHOT_FEATURES]), p)


@pytest.mark.parametrize("horizon", [0.0, -3.0, float("nan"), float("inf")])
def test_a_bad_horizon_is_a_settings_error(horizon: float) -> None:
    with pytest.raises(ValidationFailed) as err:
        ChurnModel(horizon_days=horizon)
    assert err.value.code == "churn_invalid_settings"
    assert err.value.details == [{"path": "horizon_days", "message": "a number of days > 0"}]


def test_the_history_columns_are_required(snap: pd.DataFrame) -> None:
    frame = snap[["events_total", "recency_days"]]
    with pytest.raises(ValidationFailed) as err:
        ChurnModel(horizon_days=HORIZON).fit(frame, snap["churned"])
    assert err.value.code == "churn_invalid_features"
    missing = {d["path"] for d in err.value.details}
    assert missing == set(ACTIVITY_HISTORY) - {"recency_days"}


def test_no_repeat_activity_is_too_little_data(snap: pd.DataFrame) -> None:
    frame = snap[SNAPSHOT_FEATURES].assign(active_days_total=1)
    with pytest.raises(ValidationFailed) as err:
        ChurnModel(horizon_days=HORIZON).fit(frame, snap["churned"])
    assert err.value.code == "churn_too_little_data"
    assert err.value.details[0]["path"] == "frequency"


def test_a_model_pickled_before_the_horizon_setting_still_scores(snap: pd.DataFrame) -> None:
    """Stored artifacts hold pickled ChurnModels from older code without the new attributes."""
    model = ChurnModel().fit(snap[SNAPSHOT_FEATURES], snap["churned"])
    expected = model.predict_proba(snap[SNAPSHOT_FEATURES])
    del model.horizon_days, model.bgnbd_  # what an old pickle's __dict__ lacks
    old = pickle.loads(pickle.dumps(model))
    assert "horizon_days" not in vars(old)
    assert np.array_equal(old.predict_proba(snap[SNAPSHOT_FEATURES]), expected)
