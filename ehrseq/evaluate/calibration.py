"""Calibration: how far predicted probabilities are from observed rates, and two ways to fix it.

Measures (pure functions, binary, shapes (n,)):
    reliability_curve  binned predicted mean vs observed rate
    ece                expected calibration error, count-weighted mean |observed - predicted| over bins
    calibration_fit    slope and intercept of logit(P(y=1)) = a + b * logit(p), and calibration-in-the-large

Calibrators (fit on the *tuning* split, applied to held-out data; state is plain JSON):
    TemperatureScaler   p' = sigmoid(logit(p) / T), one T per label
    IsotonicCalibrator  monotone step map per label, stored as threshold arrays and applied with np.interp

Both accept y of shape (n,) (binary) or (n, L) (multi-label, one calibrator per column).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy.optimize import minimize_scalar

from ehrseq.evaluate.metrics import MetricResult, _prepare

_EPS = 1e-12
Inputs = Literal["prob", "logit"]


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) with p clipped to [1e-12, 1 - 1e-12]."""
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)), computed without overflow."""
    z = np.asarray(z, dtype=float)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


# ---------------------------------------------------------------------------------------------- measures


def reliability_curve(
    y_true: Any,
    y_prob: Any,
    n_bins: int = 10,
    strategy: Literal["uniform", "quantile"] = "uniform",
) -> dict[str, list[float]]:
    """Binned reliability curve; empty bins are left out.

    Returns JSON-ready lists, one entry per non-empty bin: ``bin_lo``, ``bin_hi`` (probability edges),
    ``mean_pred`` (mean predicted probability), ``observed`` (share of positives) and ``count`` (rows).
    Undefined input (empty, non-binary) gives empty lists.
    """
    prep = _prepare(y_true, y_prob, None, binary=True)
    keys = ("bin_lo", "bin_hi", "mean_pred", "observed", "count")
    if isinstance(prep, MetricResult):
        return {k: [] for k in keys}
    y, p, _ = prep
    if strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
        edges[0], edges[-1] = min(edges[0], 0.0), max(edges[-1], 1.0)
    else:
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    count = np.bincount(idx, minlength=len(edges) - 1)
    sum_p = np.bincount(idx, weights=p, minlength=len(edges) - 1)
    sum_y = np.bincount(idx, weights=y, minlength=len(edges) - 1)
    nz = count > 0
    return {
        "bin_lo": edges[:-1][nz].tolist(),
        "bin_hi": edges[1:][nz].tolist(),
        "mean_pred": (sum_p[nz] / count[nz]).tolist(),
        "observed": (sum_y[nz] / count[nz]).tolist(),
        "count": count[nz].astype(int).tolist(),
    }


def ece(y_true: Any, y_prob: Any, n_bins: int = 10) -> MetricResult:
    """Expected calibration error with ``n_bins`` equal-width bins, in probability units (0 is perfect)."""
    prep = _prepare(y_true, y_prob, None, binary=True)
    if isinstance(prep, MetricResult):
        return prep
    curve = reliability_curve(y_true, y_prob, n_bins)
    count = np.asarray(curve["count"], dtype=float)
    gap = np.abs(np.asarray(curve["observed"]) - np.asarray(curve["mean_pred"]))
    return MetricResult(value=float(np.sum(count * gap) / count.sum()), n=int(count.sum()))


@dataclass(frozen=True)
class CalibrationFit:
    """Logistic recalibration ``logit P(y=1) = intercept + slope * logit(p)``.

    Perfect calibration has slope 1 and intercept 0; slope < 1 means predictions are too extreme.
    ``citl`` (calibration-in-the-large) is the intercept with the slope fixed at 1: > 0 means risk is
    under-predicted on average.
    """

    slope: float | None
    intercept: float | None
    citl: float | None
    undefined: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fit as a plain dict."""
        return asdict(self)


def calibration_fit(y_true: Any, y_prob: Any, max_iter: int = 50) -> CalibrationFit:
    """Fit slope/intercept by Newton's method on the logistic log-likelihood (no penalty)."""
    prep = _prepare(y_true, y_prob, None, binary=True)
    if isinstance(prep, MetricResult):
        return CalibrationFit(None, None, None, prep.undefined)
    y, p, _ = prep
    if y.min() == y.max():
        return CalibrationFit(None, None, None, f"only one class (all {int(y[0])}) in y_true")
    x = logit(p)
    design = np.c_[np.ones_like(x), x]
    beta = np.zeros(2)
    for _ in range(max_iter):
        mu = sigmoid(design @ beta)
        grad = design.T @ (y - mu)
        hess = (design * (mu * (1 - mu))[:, None]).T @ design + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.max(np.abs(step)) < 1e-10:
            break
    a = 0.0  # calibration-in-the-large: offset logit(p), slope fixed at 1
    for _ in range(max_iter):
        mu = sigmoid(a + x)
        step = np.sum(y - mu) / max(np.sum(mu * (1 - mu)), 1e-12)
        a += step
        if abs(step) < 1e-10:
            break
    if not np.all(np.isfinite(beta)) or not np.isfinite(a):
        return CalibrationFit(None, None, None, "recalibration fit did not converge (separable data)")
    return CalibrationFit(slope=float(beta[1]), intercept=float(beta[0]), citl=float(a))


# ---------------------------------------------------------------------------------------------- calibrators


def _as_2d(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    s = np.asarray(scores, dtype=float)
    multilabel = s.ndim == 2
    s2 = s if multilabel else s[:, None]
    y2 = None if y_true is None else np.asarray(y_true, dtype=float).reshape(s2.shape)
    return s2, y2, multilabel  # type: ignore[return-value]


class _Calibrator:
    """Shared JSON plumbing; subclasses define ``_state``/``_load`` and the maths."""

    kind = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self._state()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Any:
        if state.get("kind") != cls.kind:
            raise ValueError(f"state is a '{state.get('kind')}' calibrator, not '{cls.kind}'")
        obj = cls(inputs=state["inputs"])
        obj._load(state)
        return obj

    @classmethod
    def from_json(cls, text: str) -> Any:
        return cls.from_dict(json.loads(text))

    def _state(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load(self, state: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class TemperatureScaler(_Calibrator):
    """Temperature scaling: ``p' = sigmoid(z / T)`` with ``z`` the logit, one ``T > 0`` per label.

    ``inputs="prob"`` takes probabilities (converted with :func:`logit`), ``"logit"`` takes raw logits.
    ``transform`` always returns probabilities of the input's shape. T > 1 softens over-confident scores.
    """

    kind = "temperature"

    def __init__(self, inputs: Inputs = "prob") -> None:
        self.inputs = inputs

    def _z(self, scores: np.ndarray) -> np.ndarray:
        return logit(scores) if self.inputs == "prob" else scores

    def fit(self, scores: Any, y_true: Any) -> TemperatureScaler:
        """Fit T per label by minimising the log loss over log T in [log 0.01, log 100]."""
        s, y, self.multilabel_ = _as_2d(y_true, scores)
        z = self._z(s)
        temps = []
        for j in range(z.shape[1]):
            zj, yj = z[:, j], y[:, j]

            def nll(log_t: float, zj: np.ndarray = zj, yj: np.ndarray = yj) -> float:
                m = zj / np.exp(log_t)
                return float(np.mean(np.logaddexp(0.0, m) - yj * m))

            res = minimize_scalar(nll, bounds=(np.log(0.01), np.log(100.0)), method="bounded")
            temps.append(float(np.exp(res.x)))
        self.temperature_ = temps
        return self

    def transform(self, scores: Any) -> np.ndarray:
        """Calibrated probabilities of ``scores`` (one temperature per label)."""
        s, _, multilabel = _as_2d(None, scores)
        p = sigmoid(self._z(s) / np.asarray(self.temperature_)[None, :])
        return p if multilabel else p[:, 0]

    def _state(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "multilabel": self.multilabel_, "temperature": self.temperature_}

    def _load(self, state: dict[str, Any]) -> None:
        self.multilabel_ = bool(state["multilabel"])
        self.temperature_ = [float(t) for t in state["temperature"]]


class IsotonicCalibrator(_Calibrator):
    """Isotonic regression per label, stored as ``(x_thresholds, y_thresholds)`` JSON arrays.

    ``transform`` is ``np.interp`` on those arrays (flat outside the fitted range). A label with one class in
    the tuning data keeps its scores unchanged (identity map) and is listed in ``notes_``.
    """

    kind = "isotonic"

    def __init__(self, inputs: Inputs = "prob") -> None:
        self.inputs = inputs

    def _p(self, scores: np.ndarray) -> np.ndarray:
        return scores if self.inputs == "prob" else sigmoid(scores)

    def fit(self, scores: Any, y_true: Any) -> IsotonicCalibrator:
        """Fit one isotonic map per label from ``scores`` to ``y_true``."""
        from sklearn.isotonic import IsotonicRegression

        s, y, self.multilabel_ = _as_2d(y_true, scores)
        p = self._p(s)
        self.x_thresholds_: list[list[float]] = []
        self.y_thresholds_: list[list[float]] = []
        self.notes_: list[str] = []
        for j in range(p.shape[1]):
            if y[:, j].min() == y[:, j].max():
                self.x_thresholds_.append([0.0, 1.0])
                self.y_thresholds_.append([0.0, 1.0])
                self.notes_.append(f"label {j}: one class in tuning data, identity map kept")
                continue
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p[:, j], y[:, j])
            self.x_thresholds_.append([float(v) for v in iso.X_thresholds_])
            self.y_thresholds_.append([float(v) for v in iso.y_thresholds_])
        return self

    def transform(self, scores: Any) -> np.ndarray:
        """Calibrated probabilities of ``scores``, interpolated on the fitted maps."""
        s, _, multilabel = _as_2d(None, scores)
        p = self._p(s)
        out = np.column_stack(
            [np.interp(p[:, j], self.x_thresholds_[j], self.y_thresholds_[j]) for j in range(p.shape[1])]
        )
        return out if multilabel else out[:, 0]

    def _state(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "multilabel": self.multilabel_,
            "x_thresholds": self.x_thresholds_,
            "y_thresholds": self.y_thresholds_,
            "notes": self.notes_,
        }

    def _load(self, state: dict[str, Any]) -> None:
        self.multilabel_ = bool(state["multilabel"])
        self.x_thresholds_ = [[float(v) for v in xs] for xs in state["x_thresholds"]]
        self.y_thresholds_ = [[float(v) for v in ys] for ys in state["y_thresholds"]]
        self.notes_ = list(state.get("notes", []))
