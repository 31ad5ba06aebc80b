"""Time-to-event metrics as pure numpy functions.

Conventions shared by every function here:

* ``durations`` (N,) > 0 in any unit; ``events`` (N,) 1 = event, 0 = censored.
* ``risk`` (N,): higher means an earlier expected event (e.g. DeepSurv log-risk).
* ``surv``: a DataFrame of survival probabilities, index = increasing times, columns = the N subjects in the
  same order as ``durations`` (what ``DeepSurv.predict_survival`` and pycox's ``predict_surv_df`` return). It
  is read as a right-continuous step function that equals 1 before its first time.
* A pair (i, j) is comparable when i has an event and ``t_i < t_j``, or ``t_i == t_j`` and j is censored
  (the censored subject is known to have outlived i). Prediction ties count 1/2.

Why not pycox's ``EvalSurv``: pycox 0.3.0 calls ``scipy.integrate.simps``, removed in SciPy 1.14, so its
``integrated_brier_score`` raises AttributeError on current SciPy. :func:`integrated_brier_score` here is an
independent implementation (IPCW, Kaplan-Meier censoring weights, trapezoid rule) that works on any NumPy/SciPy.
Note pycox normalises the Brier score by the sum of weights; we follow Graf et al. (1999) and divide by N.

Where a metric is not defined on the rows (no comparable pairs, a degenerate time grid) the functions raise
:class:`~ehrseq.errors.UndefinedMetricError`; :func:`harrell_c` and :func:`as_metric_result` return an undefined
:class:`~ehrseq.evaluate.metrics.MetricResult` instead, and the bootstrap skips such resamples.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.errors import DataValidationError, UndefinedMetricError
from ehrseq.evaluate.metrics import MetricResult

_Z95 = 1.959963984540054
_CHUNK_CELLS = 4_000_000  # pairwise work is done in blocks of at most this many (i, j) cells


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    fn = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 only has trapz
    return float(fn(y, x))


def _labels(durations: object, events: object) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(durations, dtype=np.float64).reshape(-1)
    e = np.asarray(events, dtype=np.float64).reshape(-1)
    if len(t) != len(e):
        raise DataValidationError(f"durations and events have different lengths ({len(t)}, {len(e)})")
    if not np.isfinite(t).all() or not np.isin(e, (0.0, 1.0)).all():
        raise DataValidationError(
            "durations must be finite and events must be 0/1",
            n_rows=int((~np.isfinite(t) | ~np.isin(e, (0.0, 1.0))).sum()),
            hint="validate labels before evaluating",
        )
    return t, e


def _step_lookup(index: np.ndarray, values: np.ndarray, query: np.ndarray, *, left_limit: bool = False,
                 before: float = 1.0) -> np.ndarray:
    """Right-continuous step function ``values`` on ``index`` at ``query`` (``before`` ahead of index[0]).

    With ``left_limit`` returns the value just before each query time, f(q-).
    """
    pos = np.searchsorted(index, query, side="left" if left_limit else "right") - 1
    return np.where(pos >= 0, values[np.clip(pos, 0, None)], before)


# ------------------------------------------------------------------------------------ Kaplan-Meier
def kaplan_meier(durations: object, events: object) -> pd.DataFrame:
    """Kaplan-Meier estimate with Greenwood log(-log) 95% limits.

    Returns a frame indexed by each distinct observed time (name ``time``) with columns ``n_at_risk``,
    ``n_events``, ``n_censored``, ``survival``, ``lower``, ``upper``. S(t) is right-continuous.
    """
    t, e = _labels(durations, events)
    times, inverse = np.unique(t, return_inverse=True)
    d = np.bincount(inverse, weights=e, minlength=len(times))
    c = np.bincount(inverse, weights=1 - e, minlength=len(times))
    n = np.cumsum((d + c)[::-1])[::-1]
    surv = np.cumprod(1.0 - d / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        green = np.cumsum(np.where(n > d, d / (n * (n - d)), 0.0))
        log_s = np.log(surv)
        se_theta = np.sqrt(green) / np.abs(log_s)
        lower = surv ** np.exp(_Z95 * se_theta)
        upper = surv ** np.exp(-_Z95 * se_theta)
    defined = (surv > 0) & (surv < 1)
    lower = np.where(defined, lower, surv)
    upper = np.where(defined, upper, surv)
    return pd.DataFrame(
        {"n_at_risk": n.astype(int), "n_events": d.astype(int), "n_censored": c.astype(int),
         "survival": surv, "lower": lower, "upper": upper},
        index=pd.Index(times, name="time"),
    )


def km_at(km: pd.DataFrame, query: object, *, left_limit: bool = False, column: str = "survival") -> np.ndarray:
    """A :func:`kaplan_meier` table read at the times ``query`` (array-like, any order): the right-continuous
    step value of ``column`` ("survival", "lower" or "upper"), 1.0 before the first time in the table and the
    last value past its end (the caller decides whether follow-up reaches that far). With ``left_limit`` the
    value just before each time, S(t-). Returns a float array shaped like ``query``."""
    return _step_lookup(km.index.to_numpy(), km[column].to_numpy(), np.asarray(query, dtype=np.float64),
                        left_limit=left_limit)


# -------------------------------------------------------------------------------------- concordance
NO_COMPARABLE_PAIRS = "no comparable pairs (no event precedes another follow-up time)"


def _harrell_sums(t: np.ndarray, e: np.ndarray, r: np.ndarray, w: np.ndarray | None) -> tuple[float, float]:
    """(concordant + ties/2, comparable) pair weights; pair (i, j) weighs w_i * w_j (1 without weights)."""
    ev = np.flatnonzero(e == 1)
    step = max(1, _CHUNK_CELLS // max(len(t), 1))
    num = den = 0.0
    for s in range(0, len(ev), step):
        i = ev[s : s + step]
        ti, ri = t[i, None], r[i, None]
        comparable = (t[None, :] > ti) | ((t[None, :] == ti) & (e[None, :] == 0))
        if w is None:
            num += np.sum(comparable & (ri > r[None, :])) + 0.5 * np.sum(comparable & (ri == r[None, :]))
            den += np.sum(comparable)
        else:
            pw = comparable * (w[i, None] * w[None, :])
            num += np.sum(pw * (ri > r[None, :])) + 0.5 * np.sum(pw * (ri == r[None, :]))
            den += np.sum(pw)
    return float(num), float(den)


def concordance_index(durations: object, events: object, risk: object) -> float:
    """Harrell's C: the fraction of comparable pairs whose risks are ordered like their event times.

    Vectorised over blocks of event rows: O(N * n_events) time, bounded memory (fine to ~50k rows).
    Raises :class:`~ehrseq.errors.UndefinedMetricError` when no pair is comparable.
    """
    t, e = _labels(durations, events)
    r = np.asarray(risk, dtype=np.float64).reshape(-1)
    if len(r) != len(t):
        raise DataValidationError(f"risk has {len(r)} rows, durations {len(t)}")
    num, den = _harrell_sums(t, e, r, None)
    if den == 0:
        raise UndefinedMetricError(NO_COMPARABLE_PAIRS)
    return num / den


def harrell_c(y_true: object, risk: object, sample_weight: object | None = None) -> MetricResult:
    """Harrell's C as a :class:`MetricResult` (never raises on its rows), for the bootstrap and reports.

    ``y_true`` is (N, 2) [duration, event], ``risk`` (N,). ``sample_weight`` (N,) non-negative: a pair weighs
    the product of its rows' weights, which equals repeating rows (a copy never pairs with itself: equal times
    and equal event flags are not comparable), so the patient bootstrap needs no copies.
    """
    y = np.asarray(y_true, dtype=np.float64)
    r = np.asarray(risk, dtype=np.float64).reshape(-1)
    if y.ndim != 2 or y.shape[1] != 2 or len(r) != len(y):
        return MetricResult(None, f"expected y_true (n, 2) and risk (n,), got {y.shape} and {r.shape}")
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if w is not None:
        if w.shape != (len(y),) or not np.isfinite(w).all() or (w < 0).any():
            return MetricResult(None, f"sample_weight must be ({len(y)},) finite and non-negative")
        keep = w > 0
        y, r, w = y[keep], r[keep], w[keep]
    if not np.isfinite(r).all():
        return MetricResult(None, f"{int((~np.isfinite(r)).sum())} row(s) with non-finite risk", len(y))
    try:
        t, e = _labels(y[:, 0], y[:, 1])
    except DataValidationError as err:
        return MetricResult(None, err.problem, len(y))
    if not (e == 1).any():
        return MetricResult(None, "no events", len(y))
    num, den = _harrell_sums(t, e, r, w)
    if den == 0:
        return MetricResult(None, NO_COMPARABLE_PAIRS, len(y))
    return MetricResult(num / den, None, len(y))


def as_metric_result(fn: Callable[..., float], *args: Any, **kwargs: Any) -> MetricResult:
    """``fn(*args, **kwargs)`` (a survival metric returning a float) as a MetricResult: an
    :class:`~ehrseq.errors.UndefinedMetricError` becomes an undefined result with its reason, e.g.
    ``as_metric_result(concordance_td, d, e, surv)`` on rows with no comparable pairs. Data errors still raise.
    """
    n = len(args[0]) if args and hasattr(args[0], "__len__") else 0
    try:
        return MetricResult(float(fn(*args, **kwargs)), None, n)
    except UndefinedMetricError as err:
        return MetricResult(None, err.problem, n)


def _surv_matrix(surv: pd.DataFrame, n: int) -> tuple[np.ndarray, np.ndarray]:
    if surv.shape[1] != n:
        raise DataValidationError(f"surv has {surv.shape[1]} columns (subjects), labels have {n} rows")
    index = surv.index.to_numpy(dtype=np.float64)
    if np.any(np.diff(index) <= 0):
        raise DataValidationError("surv index (times) must be strictly increasing")
    return index, surv.to_numpy(dtype=np.float64)


def concordance_td(durations: object, events: object, surv: pd.DataFrame) -> float:
    """Time-dependent concordance of Antolini et al. (2005).

    For comparable (i, j) it asks whether S_i(t_i) < S_j(t_i): each subject's own curve is compared at the
    earlier event time, so models with crossing curves (RSF, discrete-time) are judged fairly. Equals Harrell's
    C for a proportional-hazards model up to ties. Ties in S count 1/2 (pycox's "antolini" counts 0).
    """
    t, e = _labels(durations, events)
    index, s_mat = _surv_matrix(surv, len(t))
    s_ext = np.vstack([np.ones((1, len(t))), s_mat])  # row 0: S = 1 before the first time
    pos = np.searchsorted(index, t, side="right")  # row in s_ext of S(t_i)
    ev = np.flatnonzero(e == 1)
    step = max(1, _CHUNK_CELLS // max(len(t), 1))
    num = den = 0.0
    for s in range(0, len(ev), step):
        i = ev[s : s + step]
        rows = s_ext[pos[i]]  # (c, N): every subject's S at t_i
        si = rows[np.arange(len(i)), i][:, None]
        comparable = (t[None, :] > t[i, None]) | ((t[None, :] == t[i, None]) & (e[None, :] == 0))
        num += np.sum(comparable & (si < rows)) + 0.5 * np.sum(comparable & (si == rows))
        den += np.sum(comparable)
    if den == 0:
        raise UndefinedMetricError(NO_COMPARABLE_PAIRS)
    return float(num / den)


# ------------------------------------------------------------------------------------ Brier scores
def default_time_grid(durations: object, n_points: int = 100, upper_quantile: float = 0.9) -> np.ndarray:
    """Up to ``n_points`` evenly spaced, strictly increasing times from the shortest follow-up to the
    ``upper_quantile`` of follow-up.

    Stopping short of the longest follow-up avoids the tail where few subjects remain and IPCW weights explode.
    When that quantile equals the shortest follow-up (most rows share one duration, e.g. censored at a horizon)
    the grid is that single time: :func:`integrated_brier_score` is then undefined, not a crash elsewhere.
    """
    t = np.asarray(durations, dtype=np.float64)
    return np.unique(np.linspace(t.min(), np.quantile(t, upper_quantile), n_points))


def brier_score(durations: object, events: object, surv: pd.DataFrame, times: object) -> pd.Series:
    """IPCW Brier score (Graf et al., 1999) at each of ``times``; a Series indexed by time.

    BS(s) = mean_i [ S_i(s)^2 * 1{t_i <= s, event} / G(t_i-) + (1 - S_i(s))^2 * 1{t_i > s} / G(s) ],
    with G the Kaplan-Meier estimate of the censoring distribution on the same rows. Subjects censored before s
    get weight 0. Where G is 0 the weight is 0.
    """
    t, e = _labels(durations, events)
    index, s_mat = _surv_matrix(surv, len(t))
    grid = np.asarray(times, dtype=np.float64).reshape(-1)
    cens_km = kaplan_meier(t, 1 - e)
    g_at_t = km_at(cens_km, t, left_limit=True)  # (N,) G(t_i-)
    g_at_s = km_at(cens_km, grid)  # (T,) G(s)
    with np.errstate(divide="ignore"):
        w_event = np.where(g_at_t > 0, 1.0 / g_at_t, 0.0)
        w_alive = np.where(g_at_s > 0, 1.0 / g_at_s, 0.0)
    s_ext = np.vstack([np.ones((1, len(t))), s_mat])
    s_at = s_ext[np.searchsorted(index, grid, side="right")]  # (T, N) S_i(s)
    died = (t[None, :] <= grid[:, None]) & (e[None, :] == 1)
    alive = t[None, :] > grid[:, None]
    scores = s_at**2 * died * w_event[None, :] + (1 - s_at) ** 2 * alive * w_alive[:, None]
    return pd.Series(scores.mean(axis=1), index=pd.Index(grid, name="time"), name="brier_score")


def integrated_brier_score(
    durations: object, events: object, surv: pd.DataFrame, times: object | None = None
) -> float:
    """Brier score integrated over ``times`` (trapezoid rule) and divided by the time span.

    ``times`` defaults to :func:`default_time_grid`. 0 is perfect; 0.25 is what S = 0.5 for everyone scores.
    """
    grid = default_time_grid(durations) if times is None else np.asarray(times, dtype=np.float64)
    if len(grid) < 2 or grid[-1] <= grid[0]:
        raise UndefinedMetricError("integrated_brier_score needs at least two increasing times (all follow-up "
                                   "times are equal, or too few rows)")
    bs = brier_score(durations, events, surv, grid)
    return _trapezoid(bs.to_numpy(), grid) / float(grid[-1] - grid[0])


# ------------------------------------------------------------------------------------- calibration
def survival_at(surv: pd.DataFrame, horizon: float) -> np.ndarray:
    """(N,) predicted S_i(horizon) read from a survival frame (1 before its first time)."""
    index = surv.index.to_numpy(dtype=np.float64)
    pos = int(np.searchsorted(index, horizon, side="right")) - 1
    return np.ones(surv.shape[1]) if pos < 0 else surv.iloc[pos].to_numpy(dtype=np.float64)


def calibration_at_horizon(
    durations: object, events: object, surv: pd.DataFrame, horizon: float, n_groups: int = 10
) -> pd.DataFrame:
    """Predicted vs Kaplan-Meier observed survival at ``horizon`` within groups of predicted risk.

    Rows are split into ``n_groups`` equal-size groups by predicted S(horizon); ``risk_group`` 0 is the lowest
    predicted risk. Columns: risk_group, n, n_events (events by the horizon), predicted (mean predicted
    S(horizon)), observed (KM S(horizon) in the group), observed_lower, observed_upper (95%).
    """
    t, e = _labels(durations, events)
    pred = survival_at(surv, horizon)
    if len(pred) != len(t):
        raise DataValidationError(f"surv has {len(pred)} subjects, labels have {len(t)} rows")
    n_groups = max(1, min(n_groups, len(t)))
    rank = np.empty(len(t), dtype=np.int64)
    rank[np.argsort(-pred, kind="stable")] = np.arange(len(t))  # 0 = highest predicted survival
    group = rank * n_groups // len(t)
    rows = []
    for g in range(n_groups):
        m = group == g
        km = kaplan_meier(t[m], e[m])
        at = np.array([horizon])
        rows.append({
            "risk_group": g,
            "n": int(m.sum()),
            "n_events": int(((t[m] <= horizon) & (e[m] == 1)).sum()),
            "predicted": float(pred[m].mean()),
            "observed": float(km_at(km, at)[0]),
            "observed_lower": float(km_at(km, at, column="lower")[0]),
            "observed_upper": float(km_at(km, at, column="upper")[0]),
        })
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- plots
def _figure() -> tuple[Any, Any]:  # (Figure, Axes); matplotlib is an optional extra
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install ehrseq[plots]") from exc
    fig = Figure(figsize=(5, 4), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def plot_survival_by_risk_group(
    durations: object, events: object, risk: object, path: str | Path, n_groups: int = 3
) -> Path:
    """Write a PNG of Kaplan-Meier curves for ``n_groups`` equal-size groups of predicted risk."""
    t, e = _labels(durations, events)
    r = np.asarray(risk, dtype=np.float64).reshape(-1)
    rank = np.empty(len(r), dtype=np.int64)
    rank[np.argsort(r, kind="stable")] = np.arange(len(r))
    group = rank * n_groups // len(r)
    fig, ax = _figure()
    for g in range(n_groups):
        km = kaplan_meier(t[group == g], e[group == g])
        x = np.r_[0.0, km.index.to_numpy()]
        ax.step(x, np.r_[1.0, km["survival"].to_numpy()], where="post", label=f"risk group {g + 1}")
    ax.set_xlabel("time")
    ax.set_ylabel("survival (Kaplan-Meier)")
    ax.set_ylim(0, 1.02)
    ax.legend(title="1 = lowest risk")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def plot_calibration(calibration: pd.DataFrame, path: str | Path, horizon: float | None = None) -> Path:
    """Write a PNG of observed (KM, 95% CI) vs predicted survival from :func:`calibration_at_horizon`."""
    fig, ax = _figure()
    c = calibration
    err = np.vstack([c["observed"] - c["observed_lower"], c["observed_upper"] - c["observed"]])
    ax.errorbar(c["predicted"], c["observed"], yerr=np.clip(err, 0, None), fmt="o", capsize=3)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set_xlabel("predicted survival" + (f" at {horizon:g}" if horizon is not None else ""))
    ax.set_ylabel("observed survival (Kaplan-Meier)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
