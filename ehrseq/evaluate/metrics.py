"""Evaluation metrics as pure functions on numpy arrays.

Every metric returns a :class:`MetricResult` and never raises on the data it is given: a metric that is not
defined (empty input, one class only, non-finite scores, mismatched lengths) comes back with ``value=None``
and a plain-English ``undefined`` reason, so a report can show *why* a number is missing.

Conventions:
    y_true   (n,) of 0/1 for binary metrics, (n, L) of 0/1 for multi-label, (n,) floats for regression
    y_score  same shape as y_true: probabilities (or any monotone score for ranking metrics)
    sample_weight (n,) non-negative row weights; integer weights equal row duplication (the bootstrap uses
             this: a patient drawn k times gets weight k on all of its rows)

Every metric accepts ``sample_weight`` so :func:`ehrseq.evaluate.bootstrap.bootstrap_ci` can resample
patients without copying rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ArrayLike = Any  # anything np.asarray accepts


@dataclass(frozen=True)
class MetricResult:
    """One metric value, or the reason it is undefined.

    ``value`` is None exactly when ``undefined`` holds a reason. ``n`` is the number of rows used (weighted rows
    count once each). ``note`` carries caveats for a defined value (e.g. labels skipped in a macro average).
    """

    value: float | None
    undefined: str | None = None
    n: int = 0
    note: str | None = None

    @property
    def defined(self) -> bool:
        """Whether the metric has a value (False: see ``undefined`` for why)."""
        return self.value is not None

    def __float__(self) -> float:
        return math.nan if self.value is None else float(self.value)

    def to_dict(self) -> dict[str, Any]:
        """The result as a plain dict (value, why undefined, n, note)."""
        out: dict[str, Any] = {"value": self.value, "undefined": self.undefined, "n": self.n}
        if self.note:
            out["note"] = self.note
        return out


MetricFn = Callable[..., MetricResult]


def _undefined(reason: str, n: int = 0) -> MetricResult:
    return MetricResult(value=None, undefined=reason, n=n)


def _prepare(
    y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None, *, binary: bool, ndim: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | MetricResult:
    """Validate and return float arrays ``(y, s, w)`` with zero-weight rows dropped, or an undefined result."""
    y = np.asarray(y_true, dtype=float)
    s = np.asarray(y_score, dtype=float)
    if y.ndim != ndim or s.shape != y.shape:
        return _undefined(f"expected y_true and y_score of the same {ndim}-d shape, got {y.shape} and {s.shape}")
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    if w.shape != (len(y),):
        return _undefined(f"sample_weight has shape {w.shape}, expected ({len(y)},)")
    if np.any(~np.isfinite(w)) or np.any(w < 0):
        return _undefined("sample_weight must be finite and non-negative")
    keep = w > 0
    if not keep.all():
        y, s, w = y[keep], s[keep], w[keep]
    if len(y) == 0:
        return _undefined("empty input (no rows)")
    bad_y = int(np.sum(~np.isfinite(y).reshape(len(y), -1).all(axis=1)))
    if bad_y:
        return _undefined(f"{bad_y} row(s) with missing y_true", len(y))
    bad_s = int(np.sum(~np.isfinite(s).reshape(len(s), -1).all(axis=1)))
    if bad_s:
        return _undefined(f"{bad_s} row(s) with non-finite predictions", len(y))
    if binary and not np.isin(y, (0.0, 1.0)).all():
        return _undefined("y_true has values other than 0 and 1", len(y))
    return y, s, w


def _one_class(y: np.ndarray, w: np.ndarray) -> str | None:
    pos = float(np.sum(w * y))
    neg = float(np.sum(w * (1 - y)))
    if pos == 0:
        return "only one class (all 0) in y_true"
    if neg == 0:
        return "only one class (all 1) in y_true"
    return None


# ---------------------------------------------------------------------------------------------- binary


def auroc(y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None = None) -> MetricResult:
    """Area under the ROC curve (weighted Mann-Whitney statistic; ties count one half). Shapes (n,)."""
    prep = _prepare(y_true, y_score, sample_weight, binary=True)
    if isinstance(prep, MetricResult):
        return prep
    y, s, w = prep
    if reason := _one_class(y, w):
        return _undefined(reason, len(y))
    order = np.argsort(s, kind="mergesort")
    s, y, w = s[order], y[order], w[order]
    group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1  # tie group of each row, ascending score
    w_pos = np.bincount(group, weights=w * y)
    w_neg = np.bincount(group, weights=w * (1 - y))
    neg_below = np.cumsum(w_neg) - w_neg
    value = float(np.sum(w_pos * (neg_below + 0.5 * w_neg)) / (w_pos.sum() * w_neg.sum()))
    return MetricResult(value=value, n=len(y))


def auprc(y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None = None) -> MetricResult:
    """Average precision: sum over thresholds of (recall step) x precision, as sklearn computes it. Shapes (n,)."""
    prep = _prepare(y_true, y_score, sample_weight, binary=True)
    if isinstance(prep, MetricResult):
        return prep
    y, s, w = prep
    if float(np.sum(w * y)) == 0:
        return _undefined("only one class (all 0) in y_true: average precision needs a positive", len(y))
    order = np.argsort(-s, kind="mergesort")
    s, y, w = s[order], y[order], w[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tps = np.cumsum(w * y)[last_of_tie]
    fps = np.cumsum(w * (1 - y))[last_of_tie]
    precision = tps / (tps + fps)
    recall_step = np.diff(np.r_[0.0, tps / tps[-1]])
    return MetricResult(value=float(np.sum(recall_step * precision)), n=len(y))


def brier(y_true: ArrayLike, y_prob: ArrayLike, sample_weight: ArrayLike | None = None) -> MetricResult:
    """Brier score: weighted mean of (p - y)^2. Shapes (n,); p in [0, 1]."""
    prep = _prepare(y_true, y_prob, sample_weight, binary=True)
    if isinstance(prep, MetricResult):
        return prep
    y, p, w = prep
    return MetricResult(value=float(np.average((p - y) ** 2, weights=w)), n=len(y))


def log_loss(y_true: ArrayLike, y_prob: ArrayLike, sample_weight: ArrayLike | None = None) -> MetricResult:
    """Binary cross-entropy in nats, p clipped to [eps, 1 - eps] (float64 machine eps). Shapes (n,)."""
    prep = _prepare(y_true, y_prob, sample_weight, binary=True)
    if isinstance(prep, MetricResult):
        return prep
    y, p, w = prep
    eps = np.finfo(np.float64).eps
    p = np.clip(p, eps, 1 - eps)
    loss = -(y * np.log(p) + (1 - y) * np.log1p(-p))
    return MetricResult(value=float(np.average(loss, weights=w)), n=len(y))


def prevalence(y_true: ArrayLike, y_prob: ArrayLike | None = None, sample_weight: ArrayLike | None = None) -> MetricResult:
    """Weighted share of positives. ``y_prob`` is ignored (kept so it fits the metric signature)."""
    y = np.asarray(y_true, dtype=float)
    prep = _prepare(y, y if y_prob is None else y_prob, sample_weight, binary=True)
    if isinstance(prep, MetricResult):
        return prep
    y, _, w = prep
    return MetricResult(value=float(np.average(y, weights=w)), n=len(y))


# ---------------------------------------------------------------------------------------------- regression


def mae(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None) -> MetricResult:
    """Mean absolute error, in the units of y. Shapes (n,)."""
    prep = _prepare(y_true, y_pred, sample_weight, binary=False)
    if isinstance(prep, MetricResult):
        return prep
    y, p, w = prep
    return MetricResult(value=float(np.average(np.abs(p - y), weights=w)), n=len(y))


def rmse(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None) -> MetricResult:
    """Root mean squared error, in the units of y. Shapes (n,)."""
    prep = _prepare(y_true, y_pred, sample_weight, binary=False)
    if isinstance(prep, MetricResult):
        return prep
    y, p, w = prep
    return MetricResult(value=float(np.sqrt(np.average((p - y) ** 2, weights=w))), n=len(y))


def r2(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None) -> MetricResult:
    """Coefficient of determination; undefined when y_true is constant. Shapes (n,)."""
    prep = _prepare(y_true, y_pred, sample_weight, binary=False)
    if isinstance(prep, MetricResult):
        return prep
    y, p, w = prep
    total = float(np.sum(w * (y - np.average(y, weights=w)) ** 2))
    if total == 0:
        return _undefined("y_true is constant: R^2 is undefined", len(y))
    return MetricResult(value=1.0 - float(np.sum(w * (y - p) ** 2)) / total, n=len(y))


# ---------------------------------------------------------------------------------------------- multi-label


def per_label(
    metric: MetricFn,
    y_true: ArrayLike,
    y_score: ArrayLike,
    sample_weight: ArrayLike | None = None,
    labels: Sequence[str] | None = None,
) -> dict[str, MetricResult]:
    """Apply a binary metric to each column of (n, L) arrays; keys are ``labels`` or "0".."L-1"."""
    y = np.asarray(y_true, dtype=float)
    s = np.asarray(y_score, dtype=float)
    if y.ndim != 2 or s.shape != y.shape:
        return {"*": _undefined(f"expected (n, L) arrays of the same shape, got {y.shape} and {s.shape}")}
    names = list(labels) if labels is not None else [str(j) for j in range(y.shape[1])]
    if len(names) != y.shape[1]:
        return {"*": _undefined(f"{len(names)} label names for {y.shape[1]} columns")}
    return {name: metric(y[:, j], s[:, j], sample_weight) for j, name in enumerate(names)}


def macro(
    metric: MetricFn,
    y_true: ArrayLike,
    y_score: ArrayLike,
    sample_weight: ArrayLike | None = None,
    labels: Sequence[str] | None = None,
) -> MetricResult:
    """Unweighted mean of a binary metric over the labels where it is defined.

    ``note`` always says how many labels were averaged ("macro over k/L labels") and names the skipped ones
    with their reason. A macro over one label of several is that label's value, and the note says so ("label
    'x' alone, not an average"): it is kept (not made undefined) so the figure stays comparable with the
    per-label table, but it must never be read as an average over the task.
    """
    results = per_label(metric, y_true, y_score, sample_weight, labels)
    defined = {k: r for k, r in results.items() if r.defined}
    skipped = {k: r.undefined for k, r in results.items() if not r.defined}
    n = max((r.n for r in results.values()), default=0)
    if not defined:
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        return _undefined(f"undefined for every label ({reasons})", n)
    note = f"macro over {len(defined)}/{len(results)} labels"
    if len(defined) == 1 and len(results) > 1:
        note += f" (label '{next(iter(defined))}' alone, not an average)"
    if skipped:
        note += "; skipped " + "; ".join(f"{k} ({v})" for k, v in skipped.items())
    value = float(np.mean([r.value for r in defined.values()]))
    return MetricResult(value=value, n=n, note=note)


def labelled_macro(metric: MetricFn, labels: Sequence[str]) -> MetricFn:
    """``macro(metric, ..., labels=labels)`` as a metric of (y_true, y_score, sample_weight): its note names
    the labels instead of column numbers."""
    names = list(labels)

    def fn(y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None = None) -> MetricResult:
        return macro(metric, y_true, y_score, sample_weight, names)

    return fn


def macro_auroc(y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None = None) -> MetricResult:
    """Macro-average AUROC over labels of (n, L) arrays."""
    return macro(auroc, y_true, y_score, sample_weight)


def macro_auprc(y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None = None) -> MetricResult:
    """Macro-average average precision over labels of (n, L) arrays."""
    return macro(auprc, y_true, y_score, sample_weight)


def macro_brier(y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None = None) -> MetricResult:
    """Macro-average Brier score over labels of (n, L) arrays."""
    return macro(brier, y_true, y_score, sample_weight)


def samples_average_precision(
    y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None = None
) -> MetricResult:
    """Average precision per row (ranking the labels of one prediction), averaged over rows. Shapes (n, L).

    Rows with no positive label have no defined AP and are left out (noted); sklearn instead counts them as 0.
    """
    prep = _prepare(y_true, y_score, sample_weight, binary=True, ndim=2)
    if isinstance(prep, MetricResult):
        return prep
    y, s, w = prep
    n_pos = y.sum(axis=1)
    keep = n_pos > 0
    if not keep.any():
        return _undefined("no row has a positive label", len(y))
    y, s, w, n_pos = y[keep], s[keep], w[keep], n_pos[keep]
    order = np.argsort(-s, axis=1, kind="mergesort")
    ys = np.take_along_axis(y, order, axis=1)
    ss = np.take_along_axis(s, order, axis=1)
    n_labels = y.shape[1]
    # index of the last member of each position's tie group: precision is read at the end of a tie group
    is_end = np.c_[ss[:, :-1] != ss[:, 1:], np.ones((len(ss), 1), dtype=bool)]
    end_idx = np.where(is_end, np.arange(n_labels), n_labels)
    end_idx = np.minimum.accumulate(end_idx[:, ::-1], axis=1)[:, ::-1]
    tps = np.cumsum(ys, axis=1)
    precision = np.take_along_axis(tps, end_idx, axis=1) / (end_idx + 1)
    ap_rows = np.sum(ys * precision, axis=1) / n_pos
    dropped = int((~keep).sum())
    note = f"{dropped} row(s) with no positive label left out" if dropped else None
    return MetricResult(value=float(np.average(ap_rows, weights=w)), n=len(y), note=note)


# ---------------------------------------------------------------------------------------------- curves


def _thin(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[list[float], list[float]]:
    if len(x) > max_points:
        idx = np.unique(np.linspace(0, len(x) - 1, max_points).round().astype(int))
        x, y = x[idx], y[idx]
    return [float(v) for v in x], [float(v) for v in y]


def roc_curve_points(y_true: ArrayLike, y_score: ArrayLike, max_points: int = 200) -> dict[str, list[float]] | None:
    """ROC curve as ``{"fpr": [...], "tpr": [...]}`` (at most ``max_points``), or None when undefined."""
    prep = _prepare(y_true, y_score, None, binary=True)
    if isinstance(prep, MetricResult) or _one_class(prep[0], prep[2]):
        return None
    y, s, _ = prep
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[s[1:] != s[:-1], True]
    tpr = np.r_[0.0, np.cumsum(y)[last] / y.sum()]
    fpr = np.r_[0.0, np.cumsum(1 - y)[last] / (1 - y).sum()]
    fx, ty = _thin(fpr, tpr, max_points)
    return {"fpr": fx, "tpr": ty}


def pr_curve_points(y_true: ArrayLike, y_score: ArrayLike, max_points: int = 200) -> dict[str, list[float]] | None:
    """Precision-recall curve as ``{"recall": [...], "precision": [...]}``, or None when undefined."""
    prep = _prepare(y_true, y_score, None, binary=True)
    if isinstance(prep, MetricResult) or prep[0].sum() == 0:
        return None
    y, s, _ = prep
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[s[1:] != s[:-1], True]
    tps = np.cumsum(y)[last]
    fps = np.cumsum(1 - y)[last]
    rx, py = _thin(tps / tps[-1], tps / (tps + fps), max_points)
    return {"recall": rx, "precision": py}


BINARY_METRICS: dict[str, MetricFn] = {"auroc": auroc, "auprc": auprc, "brier": brier, "log_loss": log_loss}
REGRESSION_METRICS: dict[str, MetricFn] = {"mae": mae, "rmse": rmse, "r2": r2}
MACRO_BASE: dict[str, MetricFn] = {"macro_auroc": auroc, "macro_auprc": auprc, "macro_brier": brier}
MULTILABEL_METRICS: dict[str, MetricFn] = {
    "macro_auroc": macro_auroc,
    "macro_auprc": macro_auprc,
    "macro_brier": macro_brier,
    "samples_ap": samples_average_precision,
}
