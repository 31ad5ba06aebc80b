"""Split conformal prediction: sets and intervals with a finite-sample coverage guarantee.

Fit on a calibration split the model never trained on (normally the tuning split). If calibration and test rows
are exchangeable, a fresh row's set/interval contains its true value with probability >= 1 - alpha.
With several rows per patient exchangeability holds across patients, not rows: calibrate on one row per
patient (or whole patients) when that matters.

    SplitConformalClassifier  LAC score 1 - p_true; set = {k : p_k >= 1 - q}
    SplitConformalRegressor   score |y - y_hat|;    interval = y_hat +/- q
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def conformal_quantile(scores: np.ndarray, alpha: float) -> float:
    """The ceil((n + 1)(1 - alpha)) / n empirical quantile of calibration scores; inf if n is too small."""
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    k = math.ceil((n + 1) * (1 - alpha))
    if n == 0 or k > n:
        return math.inf
    return float(np.sort(scores)[k - 1])


def _probs_2d(probs: Any) -> np.ndarray:
    """(n,) binary P(y=1) -> (n, 2) [P(0), P(1)]; (n, K) passes through."""
    p = np.asarray(probs, dtype=float)
    return np.c_[1 - p, p] if p.ndim == 1 else p


class SplitConformalClassifier:
    """Prediction sets from class probabilities (binary (n,) or multi-class (n, K)), LAC score.

    Args:
        alpha: miscoverage; 0.1 targets 90% coverage.
    """

    def __init__(self, alpha: float = 0.1) -> None:
        self.alpha = alpha

    def fit(self, probs: Any, y_true: Any) -> SplitConformalClassifier:
        """probs (n,) or (n, K) from the calibration split; y_true (n,) integer classes 0..K-1."""
        p = _probs_2d(probs)
        y = np.asarray(y_true).astype(int)
        scores = 1.0 - p[np.arange(len(y)), y]
        self.qhat_ = conformal_quantile(scores, self.alpha)
        self.n_calibration_ = int(len(y))
        self.n_classes_ = int(p.shape[1])
        return self

    def predict_sets(self, probs: Any) -> np.ndarray:
        """(n, K) boolean membership matrix; a row may be empty when every class is unlikely."""
        p = _probs_2d(probs)
        return p >= 1.0 - self.qhat_

    def to_dict(self) -> dict[str, Any]:
        """The fitted state as a JSON-serialisable dict."""
        q = self.qhat_ if math.isfinite(self.qhat_) else None
        return {"kind": "conformal_classifier", "alpha": self.alpha, "qhat": q,
                "n_calibration": self.n_calibration_, "n_classes": self.n_classes_}

    def to_json(self) -> str:
        """The fitted state as a JSON string."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> SplitConformalClassifier:
        """Rebuild from :meth:`to_dict`'s output."""
        obj = cls(alpha=float(state["alpha"]))
        obj.qhat_ = math.inf if state["qhat"] is None else float(state["qhat"])
        obj.n_calibration_ = int(state["n_calibration"])
        obj.n_classes_ = int(state["n_classes"])
        return obj

    @classmethod
    def from_json(cls, text: str) -> SplitConformalClassifier:
        """Rebuild from :meth:`to_json`'s output."""
        return cls.from_dict(json.loads(text))


class SplitConformalRegressor:
    """Symmetric intervals ``y_hat +/- q`` from absolute residuals on the calibration split (units of y)."""

    def __init__(self, alpha: float = 0.1) -> None:
        self.alpha = alpha

    def fit(self, y_pred: Any, y_true: Any) -> SplitConformalRegressor:
        """Fit the interval half-width: the conformal quantile of the absolute residuals."""
        residuals = np.abs(np.asarray(y_true, dtype=float) - np.asarray(y_pred, dtype=float))
        self.qhat_ = conformal_quantile(residuals, self.alpha)
        self.n_calibration_ = int(len(residuals))
        return self

    def predict_interval(self, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi), each (n,)."""
        yp = np.asarray(y_pred, dtype=float)
        return yp - self.qhat_, yp + self.qhat_

    def to_dict(self) -> dict[str, Any]:
        """The fitted state as a JSON-serialisable dict."""
        q = self.qhat_ if math.isfinite(self.qhat_) else None
        return {"kind": "conformal_regressor", "alpha": self.alpha, "qhat": q, "n_calibration": self.n_calibration_}

    def to_json(self) -> str:
        """The fitted state as a JSON string."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> SplitConformalRegressor:
        """Rebuild from :meth:`to_dict`'s output."""
        obj = cls(alpha=float(state["alpha"]))
        obj.qhat_ = math.inf if state["qhat"] is None else float(state["qhat"])
        obj.n_calibration_ = int(state["n_calibration"])
        return obj

    @classmethod
    def from_json(cls, text: str) -> SplitConformalRegressor:
        """Rebuild from :meth:`to_json`'s output."""
        return cls.from_dict(json.loads(text))


def set_coverage(sets: np.ndarray, y_true: Any) -> dict[str, float]:
    """Share of rows whose set holds the true class, mean set size and share of empty sets."""
    y = np.asarray(y_true).astype(int)
    hit = sets[np.arange(len(y)), y]
    return {
        "coverage": float(hit.mean()) if len(y) else math.nan,
        "mean_set_size": float(sets.sum(axis=1).mean()) if len(y) else math.nan,
        "empty_share": float((sets.sum(axis=1) == 0).mean()) if len(y) else math.nan,
        "n": int(len(y)),
    }


def interval_coverage(lo: np.ndarray, hi: np.ndarray, y_true: Any) -> dict[str, float]:
    """Share of rows with lo <= y <= hi, and mean interval width (units of y)."""
    y = np.asarray(y_true, dtype=float)
    inside = (lo <= y) & (y <= hi)
    return {
        "coverage": float(inside.mean()) if len(y) else math.nan,
        "mean_width": float(np.mean(hi - lo)) if len(y) else math.nan,
        "n": int(len(y)),
    }


def coverage_summary(model: SplitConformalClassifier | SplitConformalRegressor, y_pred: Any, y_true: Any) -> dict[str, Any]:
    """Apply a fitted conformal model to held-out predictions and report nominal vs empirical coverage."""
    if isinstance(model, SplitConformalClassifier):
        out = set_coverage(model.predict_sets(y_pred), y_true)
    else:
        out = interval_coverage(*model.predict_interval(y_pred), y_true)
    return {"nominal": 1 - model.alpha, **out, **{"calibration": model.to_dict()}}
