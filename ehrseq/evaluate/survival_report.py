"""The time-to-event part of the evaluation report: C-td and integrated Brier beside Harrell's C, calibration
at stated horizons (predicted vs Kaplan-Meier observed by risk group) and Kaplan-Meier curves by predicted risk
group, all as aggregates (curves are read on a coarse time grid, never at individual event times).

``curves`` is a frame of survival probabilities in the convention of :mod:`ehrseq.evaluate.survival`: index =
increasing times (days, like ``duration``), one column per prediction row in the order of the rows. A model
that gives only a risk score has no curves: then ranking can be judged but absolute calibration cannot, and
the section says so instead of inventing probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.errors import DataValidationError
from ehrseq.evaluate import survival as S
from ehrseq.evaluate.bootstrap import bootstrap_ci

KM_POINTS = 60  # time points at which the Kaplan-Meier curves are stored
NO_CURVES = ("this model gives only a risk score, no survival probabilities: ranking (Harrell's C) can be "
             "judged, absolute calibration (predicted vs observed survival) cannot")


def _ci(res: Any) -> dict[str, Any]:
    return {"estimate": res.estimate, "lo": res.lo, "hi": res.hi, "gap": None, "n_boot_used": res.n_boot_used,
            "undefined": res.undefined, "note": res.note, "ci_degenerate": res.ci_degenerate}


def risk_groups(risk: np.ndarray, n_groups: int) -> np.ndarray:
    """Equal-size groups 0..n_groups-1 of increasing predicted risk (ties broken by row order)."""
    rank = np.empty(len(risk), dtype=np.int64)
    rank[np.argsort(risk, kind="stable")] = np.arange(len(risk))
    return rank * n_groups // max(len(risk), 1)


def km_by_risk_group(durations: Any, events: Any, risk: Any, n_groups: int = 3,
                     n_points: int = KM_POINTS) -> dict[str, Any]:
    """Kaplan-Meier survival (with 95% limits) in ``n_groups`` equal-size groups of predicted risk, read at
    ``n_points`` evenly spaced times from 0 to the longest follow-up; group 1 is the lowest risk."""
    t = np.asarray(durations, dtype=float)
    e = np.asarray(events, dtype=float)
    r = np.asarray(risk, dtype=float)
    grid = np.linspace(0.0, float(t.max()) if len(t) else 0.0, n_points)
    groups = risk_groups(r, n_groups)
    out = []
    for g in range(n_groups):
        m = groups == g
        if not m.any():
            continue
        km = S.kaplan_meier(t[m], e[m])
        last = float(t[m].max())
        upto = grid <= last  # past its longest follow-up a group's curve is not known
        row = {"group": g + 1, "n": int(m.sum()), "n_events": int(e[m].sum()), "time": grid[upto].tolist()}
        for col in ("survival", "lower", "upper"):
            row[col] = S.km_at(km, grid[upto], column=col).tolist()
        out.append(row)
    return {"n_groups": n_groups, "groups": out}


def _curves_metric(fn: Any, curve_times: np.ndarray, **kw: Any) -> Any:
    """``fn(durations, events, surv, **kw)`` as a bootstrap metric of (y_true (N, 2), y_pred (N, T) curves)."""
    def metric(y_true: Any, y_pred: Any) -> Any:
        y = np.asarray(y_true, dtype=float)
        surv = pd.DataFrame(np.asarray(y_pred, dtype=float).T, index=curve_times)
        return S.as_metric_result(fn, y[:, 0], y[:, 1], surv, **kw)

    return metric


def _calibration(t: np.ndarray, e: np.ndarray, curves: pd.DataFrame, horizons: Sequence[float],
                 n_groups: int) -> list[dict[str, Any]]:
    out = []
    for h in horizons:
        entry: dict[str, Any] = {"horizon": float(h), "n_groups": n_groups, "groups": [], "note": None}
        if len(t) == 0 or h > float(t.max()):
            entry["note"] = f"no evaluated row is followed up to {h:g} days; calibration there cannot be judged"
        else:
            cal = S.calibration_at_horizon(t, e, curves, float(h), n_groups=n_groups)
            # calibration_at_horizon numbers groups from the highest predicted survival (lowest risk)
            cal = cal.assign(risk_group=cal["risk_group"] + 1)
            entry["groups"] = cal.to_dict(orient="records")
            entry["mean_abs_gap"] = float(np.mean(np.abs(cal["predicted"] - cal["observed"])))
        out.append(entry)
    return out


def survival_section(df: pd.DataFrame, curves: pd.DataFrame | None, horizons: Sequence[float] = (), *,
                     subject_col: str = "subject_id", n_groups: int = 3, n_boot: int = 200, alpha: float = 0.05,
                     seed: int = 0) -> dict[str, Any]:
    """C-td and integrated Brier (patient-bootstrap CIs), calibration at ``horizons`` and Kaplan-Meier by
    predicted-risk group for the survival rows ``df`` (duration, event, risk) and their ``curves``."""
    t = df["duration"].to_numpy(float)
    e = df["event"].to_numpy(float)
    out: dict[str, Any] = {"has_survival_curves": curves is not None, "metrics": {}, "calibration": [],
                           "horizons": [float(h) for h in horizons], "notes": [],
                           "km_by_risk_group": km_by_risk_group(t, e, df["risk"].to_numpy(float), n_groups)}
    if curves is None:
        out["notes"].append(NO_CURVES)
        return out
    if curves.shape[1] != len(df):
        raise DataValidationError(f"survival curves have {curves.shape[1]} columns, predictions {len(df)} rows",
                                  hint="pass one curve column per prediction row, in the same order")
    times = curves.index.to_numpy(float)
    y = np.column_stack([t, e])
    s = curves.to_numpy(float).T  # (N, T): rows follow the predictions, as the bootstrap resamples them
    groups = df[subject_col].to_numpy()
    kw = {"groups": groups, "n_boot": n_boot, "alpha": alpha, "seed": seed}
    out["metrics"]["concordance_td"] = _ci(bootstrap_ci(_curves_metric(S.concordance_td, times), y, s, **kw))
    grid = S.default_time_grid(t, n_points=50)
    ibs = _ci(bootstrap_ci(_curves_metric(S.integrated_brier_score, times, times=grid), y, s, **kw))
    out["metrics"]["integrated_brier"] = ibs
    out["ibs_time_range"] = [float(grid[0]), float(grid[-1])]
    out["calibration"] = _calibration(t, e, curves, horizons, n_groups)
    return out
