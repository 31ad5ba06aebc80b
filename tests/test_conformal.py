"""Split conformal sets and intervals reach their nominal coverage on fresh data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ehrseq.evaluate.conformal import (
    SplitConformalClassifier,
    SplitConformalRegressor,
    conformal_quantile,
    coverage_summary,
    interval_coverage,
    set_coverage,
)


def _multiclass(n: int, seed: int, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities of a noisy model and labels drawn from the true (sharper) distribution."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(n, k))
    p_true = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p_true])
    noisy = logits * 0.6 + rng.normal(scale=0.5, size=(n, k))
    return np.exp(noisy) / np.exp(noisy).sum(axis=1, keepdims=True), y


def test_multiclass_sets_cover_90_percent_of_fresh_rows() -> None:
    p_cal, y_cal = _multiclass(2000, 0)
    p_test, y_test = _multiclass(3000, 1)
    model = SplitConformalClassifier(alpha=0.1).fit(p_cal, y_cal)
    stats = set_coverage(model.predict_sets(p_test), y_test)
    assert abs(stats["coverage"] - 0.9) <= 0.03
    assert 1 <= stats["mean_set_size"] < 4


def test_binary_sets_from_positive_class_probability() -> None:
    rng = np.random.default_rng(2)
    p = rng.random(5000)
    y = (rng.random(5000) < p).astype(int)
    model = SplitConformalClassifier(alpha=0.1).fit(p[:2500], y[:2500])
    sets = model.predict_sets(p[2500:])
    assert sets.shape == (2500, 2)
    assert abs(set_coverage(sets, y[2500:])["coverage"] - 0.9) <= 0.03


def test_regression_intervals_cover_90_percent_of_fresh_rows() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=5000)
    y = 2 * x + rng.standard_t(df=4, size=5000)  # heavy-tailed noise: coverage must not rely on normality
    y_hat = 2 * x
    model = SplitConformalRegressor(alpha=0.1).fit(y_hat[:2000], y[:2000])
    lo, hi = model.predict_interval(y_hat[2000:])
    stats = interval_coverage(lo, hi, y[2000:])
    assert abs(stats["coverage"] - 0.9) <= 0.03
    assert stats["mean_width"] == pytest.approx(2 * model.qhat_)


def test_json_round_trip_gives_identical_sets_and_intervals() -> None:
    p_cal, y_cal = _multiclass(500, 4)
    clf = SplitConformalClassifier(alpha=0.2).fit(p_cal, y_cal)
    np.testing.assert_array_equal(SplitConformalClassifier.from_json(clf.to_json()).predict_sets(p_cal),
                                  clf.predict_sets(p_cal))
    reg = SplitConformalRegressor(alpha=0.1).fit(np.zeros(100), np.arange(100.0))
    again = SplitConformalRegressor.from_json(reg.to_json())
    np.testing.assert_array_equal(again.predict_interval(np.ones(3))[1], reg.predict_interval(np.ones(3))[1])


def test_too_few_calibration_rows_give_infinite_quantile_that_survives_json() -> None:
    assert conformal_quantile(np.array([0.1, 0.2]), 0.1) == math.inf
    reg = SplitConformalRegressor(alpha=0.1).fit([0.0, 0.0], [1.0, 2.0])
    assert reg.to_dict()["qhat"] is None
    assert SplitConformalRegressor.from_json(reg.to_json()).qhat_ == math.inf
    with pytest.raises(ValueError, match="alpha"):
        conformal_quantile(np.array([0.1]), 1.5)


def test_coverage_summary_reports_nominal_and_empirical() -> None:
    p_cal, y_cal = _multiclass(1000, 5)
    model = SplitConformalClassifier(alpha=0.1).fit(p_cal, y_cal)
    summary = coverage_summary(model, p_cal, y_cal)
    assert summary["nominal"] == pytest.approx(0.9)
    assert summary["coverage"] >= 0.9  # on its own calibration rows coverage is at least nominal
    assert summary["calibration"]["kind"] == "conformal_classifier"
