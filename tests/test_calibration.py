"""Calibration measures are right on known cases; both calibrators fix an over-confident model."""

from __future__ import annotations

import numpy as np
import pytest

from ehrseq.evaluate.calibration import (
    IsotonicCalibrator,
    TemperatureScaler,
    calibration_fit,
    ece,
    logit,
    reliability_curve,
    sigmoid,
)


def _overconfident(n: int, seed: int, n_labels: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True probabilities, labels drawn from them, and a model whose logits are 3x too large."""
    rng = np.random.default_rng(seed)
    shape = (n,) if n_labels is None else (n, n_labels)
    p_true = sigmoid(rng.normal(scale=1.2, size=shape))
    y = (rng.random(shape) < p_true).astype(int)
    return p_true, y, sigmoid(3 * logit(p_true))


def test_perfectly_calibrated_scores_have_small_ece_and_unit_slope() -> None:
    p, y, _ = _overconfident(20000, 0)
    assert ece(y, p).value < 0.02
    fit = calibration_fit(y, p)
    assert fit.slope == pytest.approx(1.0, abs=0.06)
    assert fit.intercept == pytest.approx(0.0, abs=0.06)
    assert fit.citl == pytest.approx(0.0, abs=0.06)


def test_overconfident_model_has_slope_near_one_third() -> None:
    _, y, p_bad = _overconfident(20000, 1)
    assert calibration_fit(y, p_bad).slope == pytest.approx(1 / 3, abs=0.03)
    assert ece(y, p_bad).value > 0.05


def test_reliability_curve_bins_count_every_row() -> None:
    p, y, _ = _overconfident(1000, 2)
    curve = reliability_curve(y, p, n_bins=10)
    assert sum(curve["count"]) == 1000
    assert all(lo <= m <= hi for lo, m, hi in zip(curve["bin_lo"], curve["mean_pred"], curve["bin_hi"]))
    q = reliability_curve(y, p, n_bins=5, strategy="quantile")
    assert len(q["count"]) == 5 and max(q["count"]) - min(q["count"]) <= 2


def test_undefined_inputs_do_not_raise() -> None:
    assert ece([], []).value is None
    assert calibration_fit([1, 1, 1], [0.2, 0.5, 0.7]).undefined.startswith("only one class")
    assert reliability_curve([], [])["count"] == []


@pytest.mark.parametrize("calibrator", [TemperatureScaler, IsotonicCalibrator])
def test_calibrators_reduce_held_out_ece_and_round_trip_json(calibrator: type) -> None:
    _, y_tune, p_tune = _overconfident(3000, 10)
    _, y_test, p_test = _overconfident(3000, 11)
    cal = calibrator().fit(p_tune, y_tune)
    p_fixed = cal.transform(p_test)
    assert p_fixed.shape == p_test.shape
    assert ece(y_test, p_fixed).value < 0.5 * ece(y_test, p_test).value
    again = calibrator.from_json(cal.to_json())
    np.testing.assert_array_equal(again.transform(p_test), p_fixed)


@pytest.mark.parametrize("calibrator", [TemperatureScaler, IsotonicCalibrator])
def test_calibrators_work_per_label_for_multilabel(calibrator: type) -> None:
    _, y_tune, p_tune = _overconfident(2000, 20, n_labels=3)
    _, y_test, p_test = _overconfident(2000, 21, n_labels=3)
    cal = calibrator().fit(p_tune, y_tune)
    p_fixed = cal.transform(p_test)
    assert p_fixed.shape == (2000, 3)
    for j in range(3):
        assert ece(y_test[:, j], p_fixed[:, j]).value < ece(y_test[:, j], p_test[:, j]).value
    np.testing.assert_array_equal(calibrator.from_json(cal.to_json()).transform(p_test), p_fixed)


def test_temperature_recovers_the_scale_factor_from_logits() -> None:
    rng = np.random.default_rng(5)
    z = rng.normal(scale=1.5, size=20000)
    y = (rng.random(20000) < sigmoid(z)).astype(int)
    scaler = TemperatureScaler(inputs="logit").fit(3 * z, y)
    assert scaler.temperature_[0] == pytest.approx(3.0, rel=0.1)
    assert scaler.to_dict()["kind"] == "temperature"


def test_isotonic_keeps_identity_for_single_class_label_and_refuses_wrong_state() -> None:
    p = np.linspace(0.05, 0.95, 50)
    iso = IsotonicCalibrator().fit(np.c_[p, p], np.c_[(p > 0.5).astype(int), np.zeros(50)])
    np.testing.assert_allclose(iso.transform(np.c_[p, p])[:, 1], p)
    assert len(iso.notes_) == 1
    with pytest.raises(ValueError, match="not 'temperature'"):
        TemperatureScaler.from_dict(iso.to_dict())
